import type { CommandModule } from 'yargs';
import { ANNOTATION_SYNC_PLATFORMS } from '../../sync/selection.js';
import { FerryError } from '../../errors.js';
import { plainDescriptor } from '../../oci/manifest.js';
import { isDigest } from '../../oci/digest.js';
import { parseReference } from '../../oci/reference.js';
import type { OciLayout } from '../../locations/layout.js';
import type { TagName } from '../../types.js';
import { imageWithoutStore, openStoreToChange, storeTagName } from '../../store.js';
import { interrupt, out, printJson, registrySettings, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  source: string;
  target: string;
}

export const tagCommand: CommandModule<GlobalArgs, Args> = {
  command: 'tag <source> <target>',
  describe: 'Give a store image another name (or a registry image another tag, moving no blob)',
  builder: (y) =>
    y
      .example('$0 tag alpine:3.20 registry.internal:5000/mirror/alpine:3.20', 'another name')
      .example('$0 tag docker://reg:5000/app:1.4 docker://reg:5000/app:stable', 'a remote retag')
      .positional('source', { type: 'string', demandOption: true, describe: 'existing image (name, digest or short id; or docker://NAME:TAG)' })
      .positional('target', { type: 'string', demandOption: true, describe: 'new name, NAME[:TAG] (docker://NAME:TAG on the same registry)' }),
  handler: async (args) => {
    const remote = [args.source, args.target].map((t) => t.startsWith('docker://'));
    if (remote[0] || remote[1]) return retagRemote(args, remote[0]! && remote[1]!);
    for (const t of [args.source, args.target]) {
      if (/^(oci|oci-archive|docker-archive):/.test(t)) {
        throw new FerryError('USAGE', `ferry tag names store images and registry images; ${t} is neither`, { hint: `ferry copy SOURCE ${t.split(':')[0]}:… writes a copy under another name` });
      }
    }
    const store = await openStoreToChange(args.store);
    if (!store) throw imageWithoutStore(args.source, args.store);
    try {
      const name = targetName(args.target);
      const d = await store.resolve(args.source, { store: true });
      // What the image is travels with the new name; that sync wrote the old name does not.
      const { [ANNOTATION_SYNC_PLATFORMS]: _synced, ...annotations } = d.annotations ?? {};
      const before = (await store.entries()).find((e) => e.name === name.name)?.descriptor.digest;
      await store.tag({ ...plainDescriptor(d), ...(Object.keys(annotations).length ? { annotations } : {}) }, name);
      await store.commit();
      const previous = before !== undefined && before !== d.digest ? before : undefined;
      if (args.json) return printJson({ digest: d.digest, name: name.name ?? name.tag, ...(previous ? { previous } : {}) });
      // What was done is the result (stdout, kept by -q), as rmi's `Untagged:` lines are.
      out(`Tagged ${d.digest} as ${name.name}`);
      if (previous) out(`${name.name} named ${previous} until now${await unnamedNote(store, previous)}`);
    } finally {
      await store.close();
    }
  },
};

/**
 * The store name a tag target gives: NAME[:TAG], never a digest. `sha256:<hex>` would read as
 * repository "sha256", and a name under it could never be named again (that text is the digest).
 */
function targetName(target: string): TagName {
  if (isDigest(target) || parseReference(target).digest) {
    const what = isDigest(target) ? 'is a digest' : 'holds a digest (a tag cannot choose one)';
    throw new FerryError('USAGE', `"${target}" ${what}; a tag target must be NAME[:TAG]`, { hint: 'ferry tag IMAGE NAME:TAG' });
  }
  return storeTagName(target)!;
}

/** When the image a name was moved away from has no name left: what happens to it. */
async function unnamedNote(store: OciLayout, digest: string): Promise<string> {
  if ((await store.entries()).some((e) => e.descriptor.digest === digest)) return '';
  return ' (it has no other name now: the next ferry gc or rmi deletes it)';
}

/** `ferry tag docker://REG/a:1 docker://REG/a:2`: the manifest is put under the new tag; no blob moves. */
async function retagRemote(args: Args, both: boolean): Promise<void> {
  if (!both) {
    throw new FerryError('USAGE', `ferry tag works within one place: ${args.source} and ${args.target} are not both in a registry`, {
      hint: args.source.startsWith('docker://') ? 'ferry pull, then ferry tag; or ferry copy SOURCE TARGET' : 'ferry tag, then ferry push; or ferry copy SOURCE TARGET',
    });
  }
  const [from, to] = [args.source, args.target].map((t) => parseReference(t.slice('docker://'.length)));
  if (from!.domain !== to!.domain) {
    throw new FerryError('USAGE', `${args.source} and ${args.target} are in different registries: that is a copy, not a tag`, { hint: `ferry copy ${args.source} ${args.target}` });
  }
  if (!to!.tag || to!.digest) throw new FerryError('USAGE', `"${args.target}" must name a tag: docker://NAME:TAG`);
  const { copyImage } = await import('../../operations.js');
  // Every platform and the index as they are: a retag must not narrow the image.
  const report = await copyImage({ source: args.source, destination: args.target, storeDir: args.store, platforms: 'all', registry: registrySettings(args), signal: interrupt.signal });
  const digest = report.images[0]!.digest;
  if (args.json) return printJson({ digest, name: args.target });
  out(`Tagged ${digest} as ${args.target}`);
}
