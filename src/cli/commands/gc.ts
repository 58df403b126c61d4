import type { CommandModule } from 'yargs';
import { collectGarbage, emptyGcReport, type GcReport } from '../../gc.js';
import { warn } from '../../log.js';
import { OciLayout } from '../../locations/layout.js';
import { defaultStoreDir, openStoreToChange } from '../../store.js';
import { humanSize, out, printJson, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  layout?: string;
  'dry-run'?: boolean;
  partials?: boolean;
}

export const gcCommand: CommandModule<GlobalArgs, Args> = {
  command: 'gc [layout]',
  describe: 'Delete blobs that no image references (and temp files of dead runs)',
  builder: (y) =>
    y
      .example('$0 gc --dry-run', 'list what would be deleted')
      .positional('layout', { type: 'string', describe: 'an OCI layout directory (default: the store)' })
      .example('$0 gc --partials', 'also delete the partial downloads kept for a rerun to resume')
      .option('dry-run', { type: 'boolean', describe: 'only list what would be deleted' })
      .option('partials', { type: 'boolean', describe: 'also delete partial downloads of interrupted runs now (kept 24 h for resuming otherwise)' }),
  handler: async (args) => {
    // Never a new layout: on a directory that is not one yet, an empty index would make every blob
    // already there garbage.
    // A dry run writes nothing, so it works on a read-only layout too.
    const dryRun = args['dry-run'] === true;
    const layout = args.layout
      ? await OciLayout.open(args.layout, dryRun ? {} : { create: true, existing: true, indexMayBeMissing: true })
      : await openStoreToChange(args.store, { readOnly: dryRun, indexMayBeMissing: true });
    if (!layout) {
      warn(`the store ${args.store ?? defaultStoreDir()} does not exist: nothing to collect`);
      return report(args, emptyGcReport());
    }
    try {
      report(args, await collectGarbage(layout, { dryRun: args['dry-run'], partials: args.partials }));
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
  if (r.partialsKept) {
    out(`Kept ${r.partialsKept} partial download(s) (${humanSize(r.partialKeptBytes)}) of interrupted runs for a rerun to resume, ` +
      `until ${utcMinute(r.partialsKeptUntil!)}; \`ferry gc --partials\` deletes them now`);
  }
}

function utcMinute(iso: string): string {
  return `${iso.slice(0, 16).replace('T', ' ')} UTC`;
}
