import type { CommandModule } from 'yargs';
import { collectGarbage, type GcReport } from '../../gc.js';
import { warn } from '../../log.js';
import { OciLayout } from '../../locations/layout.js';
import { defaultStoreDir, openStoreToChange } from '../../store.js';
import { humanSize, out, printJson, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  layout?: string;
  'dry-run'?: boolean;
}

export const gcCommand: CommandModule<GlobalArgs, Args> = {
  command: 'gc [layout]',
  describe: 'Delete blobs that no image references (and temp files of dead runs)',
  builder: (y) =>
    y
      .example('$0 gc --dry-run', 'list what would be deleted')
      .positional('layout', { type: 'string', describe: 'an OCI layout directory (default: the store)' })
      .option('dry-run', { type: 'boolean', describe: 'only list what would be deleted' }),
  handler: async (args) => {
    // Never a new layout: on a directory that is not one yet, an empty index would make every blob
    // already there garbage.
    // A dry run writes nothing, so it works on a read-only layout too.
    const dryRun = args['dry-run'] === true;
    const layout = args.layout
      ? await OciLayout.open(args.layout, dryRun ? {} : { create: true, existing: true })
      : await openStoreToChange(args.store, { readOnly: dryRun });
    if (!layout) {
      warn(`the store ${args.store ?? defaultStoreDir()} does not exist: nothing to collect`);
      return report(args, { removed: [], bytes: 0, kept: 0, spared: 0, temps: 0, partials: 0, partialBytes: 0 });
    }
    try {
      report(args, await collectGarbage(layout, { dryRun: args['dry-run'] }));
    } finally {
      await layout.close();
    }
  },
};

function report(args: Args, r: GcReport): void {
  if (args.json) return printJson(r);
  const verb = args['dry-run'] ? 'Would delete' : 'Deleted';
  for (const b of r.removed) out(`${verb}: ${b.digest} (${humanSize(b.size)})`);
  out(`${verb} ${r.removed.length} blob(s), ${humanSize(r.bytes)}; kept ${r.kept}` +
    (r.spared ? `; spared ${r.spared} written by a running ferry` : '') +
    (r.temps ? `; removed ${r.temps} stale temp file(s)` : '') +
    (r.partials ? `; ${args['dry-run'] ? 'would remove' : 'removed'} ${r.partials} abandoned partial download(s), ${humanSize(r.partialBytes)}` : ''));
}
