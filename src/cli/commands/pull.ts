import type { CommandModule } from 'yargs';
import { parsePlatformSelection } from '../../oci/platform.js';
import { defaultStoreDir } from '../../store.js';
import { humanSize, interrupt, out, printDigests, printReferrer, printResult, progressPrinter, registrySettings, status, type GlobalArgs } from '../context.js';
import { jobsOption } from '../numbers.js';

interface Args extends GlobalArgs {
  image: string;
  platform?: string;
  'all-tags'?: boolean;
  jobs?: number;
  referrers?: boolean;
}

export const pullCommand: CommandModule<GlobalArgs, Args> = {
  command: 'pull <image>',
  describe: 'Pull an image from a registry into the store (NAME[:TAG|@DIGEST])',
  builder: (y) =>
    y
      .example('$0 pull alpine:3.20', 'the host platform')
      .example('$0 pull --platform all ghcr.io/org/app:1', 'every platform')
      .positional('image', { type: 'string', demandOption: true })
      .option('platform', { type: 'string', describe: 'OS/ARCH[/VARIANT], a comma list, or "all" (default: this host\'s)' })
      .option('all-tags', { alias: 'a', type: 'boolean', describe: 'pull every tag of the repository' })
      .option('jobs', jobsOption())
      .option('referrers', { type: 'boolean', describe: 'also copy signatures, SBOMs and attestations that refer to the image' }),
  handler: async (args) => {
    const { pullImage } = await import('../../registry-ops.js');
    const before = await storedNames(args.store ?? defaultStoreDir());
    status(args, `Pulling ${args.image}`);
    const progress = progressPrinter(args);
    const report = await pullImage(args.image, {
      storeDir: args.store,
      platforms: args.platform ? parsePlatformSelection(args.platform) : undefined,
      allTags: args['all-tags'],
      registry: registrySettings(args),
      signal: interrupt.signal,
      onEvent: progress,
      jobs: args.jobs,
      referrers: args.referrers,
    }).finally(() => progress.done());
    if (args.json) return printResult(report);
    for (const i of report.images) {
      if (printReferrer(i)) continue;
      const name = i.names[0]?.name ?? `${report.reference}@${i.source ?? i.digest}`;
      printDigests(i);
      // As docker says it: up to date when the name already held this image, whatever blobs moved.
      const had = before.get(i.names[0]?.name ?? i.digest);
      out(had === i.digest ? `Status: Image is up to date for ${name}` : `Status: Downloaded newer image for ${name}`);
    }
    status(args, `${report.blobs.copied} blob(s) downloaded (${humanSize(report.blobs.bytesCopied)}), ${report.blobs.skipped} already present`);
  },
};

/** What each name in the store held before this pull, and every digest it held (under itself). */
async function storedNames(dir: string): Promise<Map<string, string>> {
  const { OciLayout } = await import('../../locations/layout.js');
  const store = await OciLayout.open(dir).catch(() => undefined);
  const out = new Map<string, string>();
  if (!store) return out;
  try {
    for (const e of await store.entries()) {
      if (e.name) out.set(e.name, e.descriptor.digest);
      out.set(e.descriptor.digest, e.descriptor.digest);
    }
  } finally {
    await store.close();
  }
  return out;
}
