import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { collectGarbage } from '../../gc.js';
import { imageWithoutStore, openStoreToChange } from '../../store.js';
import type { LayoutEntry } from '../../locations/layout.js';
import { humanSize, out, printJson, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  images: string[];
  prune: boolean;
  force?: boolean;
}

export const rmiCommand: CommandModule<GlobalArgs, Args> = {
  command: 'rmi <images..>',
  describe: 'Remove images from the store (untag, then delete blobs nothing else uses)',
  builder: (y) =>
    y
      .example('$0 rmi example.com/team/api:1', 'untag and delete unused blobs')
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'names or digests' })
      .option('prune', { type: 'boolean', default: true, describe: 'delete blobs left unreferenced (--no-prune keeps them for `ferry gc`)' })
      .option('force', { alias: 'f', type: 'boolean', describe: 'remove an image named by digest even when it has several names (all of them go)' }),
  handler: async (args) => {
    const remote = args.images.find((i) => i.startsWith('docker://'));
    if (remote) throw new FerryError('USAGE', `ferry rmi removes store images; ${remote} is in a registry`, { hint: `ferry rm ${remote} deletes it there` });
    const store = await openStoreToChange(args.store);
    if (!store) throw imageWithoutStore(args.images[0]!, args.store);
    try {
      // Each argument resolved once, and every one checked before anything is untagged. As docker
      // does: an id (digest or short id) that several names share removes them all only when asked to.
      const targets = [];
      for (const image of args.images) targets.push({ image, ...(await store.resolveEntry(image, { store: true })) });
      const entries = await store.entries();
      for (const t of targets) {
        const names = t.byName || args.force ? [] : entries.filter(t.match).map((e) => e.name ?? e.tag).filter((n) => n !== undefined);
        if (names.length > 1) {
          throw new FerryError('USAGE', `${t.image} has ${names.length} names: ${names.join(', ')}`, { hint: 'remove the names one at a time, or pass --force to remove them all' });
        }
      }
      const untagged: string[] = [];
      const gone: LayoutEntry[] = [];
      for (const { image, match } of targets) {
        const removed = await store.untag(match);
        // Two arguments for one image (alpine and docker.io/library/alpine): the second finds it gone.
        if (removed.length === 0 && !gone.some(match)) throw new FerryError('NOT_FOUND', `image "${image}" not found in ${store.dir}`);
        gone.push(...removed);
        for (const r of removed) untagged.push(r.name ?? r.tag ?? r.descriptor.digest);
      }
      let gc;
      try {
        gc = args.prune ? await collectGarbage(store) : undefined;
      } catch (e) {
        // The names are gone either way; what the refusal protects is other images' blobs.
        if (!(e instanceof FerryError)) throw e;
        // With --json, stdout holds only the error line: it says what was untagged.
        if (!args.json) for (const u of untagged) out(`Untagged: ${u}`);
        const done = args.json ? `untagged ${untagged.join(', ')}, but ` : '';
        throw new FerryError(e.code, `${done}no blob was deleted: ${e.message}`, { hint: e.hint });
      }
      if (args.json) return printJson({ untagged, deleted: gc?.removed ?? [] });
      for (const u of untagged) out(`Untagged: ${u}`);
      for (const r of gc?.removed ?? []) out(`Deleted: ${r.digest}`);
      if (gc && gc.bytes) out(`Freed ${humanSize(gc.bytes)}`);
    } finally {
      await store.close();
    }
  },
};
