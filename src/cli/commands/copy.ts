import type { CommandModule } from 'yargs';
import { copyImage } from '../../operations.js';
import { parsePlatformSelection } from '../../oci/platform.js';
import { humanSize, interrupt, out, printDigests, printReferrer, printResult, progressPrinter, registrySettings, status, type GlobalArgs } from '../context.js';
import { jobsOption } from '../numbers.js';

interface Args extends GlobalArgs {
  source: string;
  destination: string;
  platform?: string;
  all?: boolean;
  jobs?: number;
  referrers?: boolean;
}

export const copyCommand: CommandModule<GlobalArgs, Args> = {
  command: 'copy <source> <destination>',
  describe: 'Copy an image between any two locations (store name, oci:, docker://, oci-archive:, docker-archive:), verifying every blob',
  builder: (y) =>
    y
      .example('$0 copy oci:./usb/images:web-1.4 web:1.4', 'OCI layout -> store')
      .example('$0 copy docker://ghcr.io/org/app:1 oci:/mnt/usb/layout:app-1', 'registry -> OCI layout')
      .positional('source', { type: 'string', demandOption: true })
      .positional('destination', { type: 'string', demandOption: true })
      .option('platform', { type: 'string', describe: 'OS/ARCH[/VARIANT], a comma list, or "all" (default: all)' })
      .option('all', { type: 'boolean', describe: 'same as --platform all' })
      .option('jobs', jobsOption())
      .option('referrers', { type: 'boolean', describe: 'also copy signatures, SBOMs and attestations that refer to the image' }),
  handler: async (args) => {
    const platforms = args.all ? 'all' : args.platform ? parsePlatformSelection(args.platform) : 'all';
    const progress = progressPrinter(args);
    const report = await copyImage({
      source: args.source,
      destination: args.destination,
      storeDir: args.store,
      platforms,
      signal: interrupt.signal,
      onEvent: progress,
      registry: registrySettings(args),
      jobs: args.jobs,
      referrers: args.referrers,
    }).finally(() => progress.done());
    if (args.json) return printResult(report);
    for (const i of report.images) {
      if (printReferrer(i)) continue;
      out(`Copied ${args.source} -> ${args.destination}`);
      printDigests(i);
    }
    const mounted = report.blobs.mounted ? `, ${report.blobs.mounted} mounted from another repository` : '';
    // A status line like pull's and push's: stderr, and -q drops it (--json has the counts).
    status(args, `${report.blobs.copied} blob(s) copied (${humanSize(report.blobs.bytesCopied)}), ${report.blobs.skipped} already present (${humanSize(report.blobs.bytesSkipped)})${mounted}`);
  },
};
