import { stat } from 'node:fs/promises';
import type { CommandModule } from 'yargs';
import { shellQuoted, volumePattern } from '../../archive/patterns.js';
import { FerryError } from '../../errors.js';
import { humanSize, interrupt, out, printReferrer, printResult, progressPrinter, registrySettings, status, type GlobalArgs } from '../context.js';
import { jobsOption } from '../numbers.js';
import { printPlan } from '../plan.js';

interface Args extends GlobalArgs {
  image?: string;
  /** Repeatable: every volume of a set. */
  from?: string | string[];
  destination?: string;
  'all-tags'?: boolean;
  jobs?: number;
  referrers?: boolean;
  'dry-run'?: boolean;
}

export const pushCommand: CommandModule<GlobalArgs, Args> = {
  command: 'push [image] [destination]',
  describe: 'Push a store image to its registry (or to DESTINATION)',
  builder: (y) =>
    y
      // Extra positionals reach the handler (strict() would refuse them before it): an unquoted
      // `--from set.*.tar` gives every volume after the first as one, and the handler names the way out.
      .strict(false)
      .strictOptions()
      .example('$0 push registry.internal:5000/team/api:2', 'to the registry in the name')
      .example('$0 push alpine:3.20 registry.internal:5000/mirror/alpine:3.20', 'under another name')
      .example('$0 push --from images.tar registry.internal:5000/mirror', 'every image of an archive, under a prefix')
      .example('$0 push --from images.tar registry.internal:5000/mirror --dry-run', 'what would be uploaded, and what the registry has')
      .example("$0 push --from '/mnt/usb/set.*.tar' registry.internal:5000/mirror", 'a volume set (save --volume-size): every volume, named by a pattern')
      .positional('image', { type: 'string', describe: 'store image, NAME[:TAG] (with --from: REGISTRY[/PREFIX] to push under)' })
      .positional('destination', { type: 'string', describe: 'push under this name instead, REGISTRY/NAME[:TAG]' })
      .option('from', { type: 'string', describe: "push every image of this archive (docker save, OCI, ferry save), read in place; a volume set: --from each volume, or one pattern ('NAME.*.tar')" })
      .option('all-tags', { alias: 'a', type: 'boolean', describe: 'push every tag of the repository that the store has' })
      .option('jobs', jobsOption())
      .option('referrers', { type: 'boolean', describe: 'also copy signatures, SBOMs and attestations that refer to the image (--from: always, those the archive holds)' })
      .option('dry-run', { type: 'boolean', describe: 'print what would be uploaded (images, blobs, bytes, what the registry has); upload nothing' }),
  handler: async (args) => {
    const extra = args._.slice(1).map(String);
    if (args.from !== undefined) {
      const from = [args.from].flat();
      await refuseWithFrom(args, from);
      refuseExtra(extra);
      return (await import('./push-archive.js')).pushFromArchive({ ...args, from, prefix: args.image });
    }
    refuseExtra(extra);
    if (!args.image) throw new FerryError('USAGE', 'name the store image to push, or --from FILE');
    const { planPush, pushImage } = await import('../../registry-ops.js');
    const options = {
      storeDir: args.store,
      destination: args.destination,
      allTags: args['all-tags'],
      registry: registrySettings(args),
      signal: interrupt.signal,
      jobs: args.jobs,
      referrers: args.referrers,
    };
    if (args['dry-run']) return printPlan(args, await planPush(args.image, options));
    const progress = progressPrinter(args);
    const report = await pushImage(args.image, { ...options, onEvent: progress }).finally(() => progress.done());
    if (args.json) return printResult(report);
    for (const i of report.images) {
      if (printReferrer(i)) continue;
      for (const n of i.names) out(`${n.tag}: digest: ${i.digest}`);
      if (i.names.length === 0) out(`pushed ${report.reference}@${i.digest}`);
    }
    status(args, `${report.blobs.copied} blob(s) uploaded (${humanSize(report.blobs.bytesCopied)}), ${report.blobs.skipped} already there, ${report.blobs.mounted} mounted`);
  },
};

/** Positionals after IMAGE DESTINATION, refused as strict() would have. */
function refuseExtra(extra: string[]): void {
  if (extra.length) throw new FerryError('USAGE', `Unknown argument${extra.length > 1 ? 's' : ''}: ${extra.join(', ')}`);
}

/** Options of a store push that an archive push cannot honour: refused, not ignored. */
async function refuseWithFrom(args: Args, from: string[]): Promise<void> {
  const file = from[0]!;
  if (from.some((f) => f === '')) throw new FerryError('USAGE', '--from needs an archive file');
  // `--from set.*.tar PREFIX` unquoted: the shell gave the second volume as the prefix (and any
  // further ones as a destination and extra positionals).
  if (args.image !== undefined && (await stat(args.image).catch(() => undefined))?.isFile()) {
    throw new FerryError('USAGE', `push --from takes one REGISTRY[/PREFIX] after it, but ${args.image} is a file`, {
      hint: `give each volume of a set with its own --from, or quote a pattern so that ferry expands it: --from ${shellQuoted(volumePattern(file))}`,
    });
  }
  if (args['all-tags']) {
    throw new FerryError('USAGE', `push --from ${file} cannot take -a/--all-tags: it pushes every image of the archive, each under its own tag`, {
      hint: `drop -a; to push some tags only, load the archive (ferry load ${file}) and push them by name`,
    });
  }
  if (args.destination !== undefined) {
    throw new FerryError('USAGE', `push --from ${file} takes one REGISTRY[/PREFIX] to push under, not a destination as well ("${args.destination}")`, {
      hint: `each image keeps its own repository path and tag under the prefix; to push one image under another name: ferry copy oci-archive:${file}:NAME docker://REGISTRY/NAME:TAG`,
    });
  }
}
