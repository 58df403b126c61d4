import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { warn } from '../../log.js';
import { shortDigest } from '../../oci/digest.js';
import { parsePlatformSelection } from '../../oci/platform.js';
import type { SyncEvent, SyncJobReport } from '../../sync/sync.js';
import { humanSize, interrupt, out, printJson, progressPrinter, registrySettings, status, type GlobalArgs, type ProgressPrinter } from '../context.js';
import { jobsOption } from '../numbers.js';
import { printPlan } from '../plan.js';

interface Args extends GlobalArgs {
  source?: string;
  destination?: string;
  config?: string;
  include?: string | string[];
  exclude?: string | string[];
  semver?: string;
  platform?: string;
  prune?: boolean;
  referrers?: boolean;
  'dry-run'?: boolean;
  jobs?: number;
  state?: boolean;
  'volume-size'?: string;
}

/** A repeatable option: one value, several, or none. */
const list = (v: string | string[] | undefined): string[] | undefined => (v === undefined ? undefined : ([] as string[]).concat(v));

export const syncCommand: CommandModule<GlobalArgs, Args> = {
  command: 'sync [source] [destination]',
  describe: 'Mirror registry repositories into the store, an OCI layout, an archive or another registry, incrementally',
  builder: (y) =>
    y
      .example("$0 sync docker.io/library/alpine --semver '>=3.18'", 'into the store')
      .example('$0 sync ghcr.io/org/app /backup/app.tar.zst --prune', 'into an archive, rewritten only when a tag changed')
      .example('$0 sync ghcr.io/org/app /mnt/fat32/app.tar --volume-size 4G', 'into a volume set: app.001.tar, app.002.tar, …')
      .example('$0 sync --config sync.yaml --dry-run', 'plan only')
      .positional('source', { type: 'string', describe: 'REGISTRY/REPOSITORY (or use --config)' })
      .positional('destination', { type: 'string', describe: 'oci:DIR, docker://REGISTRY[/PREFIX], or an archive FILE.tar[.gz|.zst] (default: the store)' })
      .option('config', { alias: 'c', type: 'string', describe: 'YAML or JSON file listing repositories' })
      .option('include', { type: 'string', describe: 'only tags matching this regex (repeatable)' })
      .option('exclude', { type: 'string', describe: 'skip tags matching this regex (repeatable)' })
      .option('semver', { type: 'string', describe: "only version tags in this range, e.g. '>=1.2 <2'" })
      .option('platform', { type: 'string', describe: 'OS/ARCH[/VARIANT], a comma list, or "all" (default: all)' })
      .option('prune', { type: 'boolean', describe: 'remove tags that disappeared upstream' })
      .option('referrers', { type: 'boolean', describe: 'also carry signatures, SBOMs and attestations' })
      .option('volume-size', { type: 'string', describe: 'archive destinations: keep the archive as volumes smaller than this size (4G suits FAT32): NAME.001.tar, NAME.002.tar, …' })
      .option('dry-run', { type: 'boolean', describe: 'print what would move; change nothing' })
      .option('state', { type: 'boolean', default: true, describe: 'registry and archive destinations: trust what the last run recorded (--no-state: HEAD every tag there, read the archive)' })
      .option('jobs', jobsOption('blob transfers at once (default 4); tag checks run 4 x this')),
  handler: async (args) => {
    const { sync } = await import('../../sync/sync.js');
    if (!args.config && !args.source) throw new FerryError('USAGE', 'ferry sync needs a SOURCE repository or --config FILE');
    if (args.config && args.source) throw new FerryError('USAGE', 'give either a SOURCE or --config, not both');
    if (args.config && args['volume-size'] !== undefined) {
      throw new FerryError('USAGE', '--volume-size is not taken with --config: the file says which archive is kept in volumes', { hint: 'add "volume-size: 4G" to that repository (or the top of the file)' });
    }
    const volumeSize = args['volume-size'] !== undefined ? (await import('../../archive/volumes.js')).parseSize(args['volume-size']) : undefined;
    // The YAML parser is a quarter of a megabyte of code: loaded only for --config.
    const jobs = args.config
      ? await (await import('../../sync/config.js')).loadSyncConfig(args.config)
      : [{
          source: args.source!,
          destination: args.destination,
          include: list(args.include),
          exclude: list(args.exclude),
          semver: args.semver,
          platforms: args.platform ? parsePlatformSelection(args.platform) : undefined,
          prune: args.prune,
          referrers: args.referrers,
          volumeSize,
        }];
    if (args.config) for (const j of jobs) {
      j.prune ||= args.prune;
      j.referrers ||= args.referrers;
    }
    const progress = tagProgress(args);
    const report = await sync(jobs, {
      storeDir: args.store,
      registry: registrySettings(args),
      signal: interrupt.signal,
      dryRun: args['dry-run'],
      jobs: args.jobs,
      state: args.state,
      onEvent: (e) => {
        if (e.type === 'copy') return progress(e);
        if (e.type === 'copied' || e.type === 'failed') progress.ended(failedName(e));
        else progress.done();
        if (e.type === 'copied') status(args, `${e.source}:${e.tag}: synced (${e.digest})`);
        else if (e.type === 'failed') status(args, `${failedName(e)}: FAILED: ${e.message}`);
        // Named as at the destination: a mirror's repository is not the source's.
        else if (e.type === 'pruned') status(args, `${e.name}: ${args['dry-run'] ? 'would be ' : ''}pruned`);
        // A warning, even with -q or --json: the mirror keeps a tag upstream no longer has.
        else if (e.type === 'not-pruned') warn(`${e.name}: not pruned (shares sha256:${shortDigest(e.digest)}… with ${e.sharedWith}; ${e.reason})`);
        else if (e.type === 'referrer') status(args, `${e.source}:${e.tag}: new referrer ${e.digest} copied`);
        else if (e.type === 'left') status(args, `${e.name}: not upstream, but ${e.because}: left in place (--prune --no-state prunes it)`);
        else if (e.type === 'tags') {
          status(args, `${e.source}: ${e.selected} of ${e.total} tags selected`);
          // Even with -q: a nightly job whose filter matches nothing is most often a mistyped filter.
          if (e.selected === 0 && e.total > 0) warn(`${e.source}: the filters select none of its ${e.total} tag(s); nothing is synced`);
        }
        else if (e.type === 'writing') status(args, `${e.source}: writing ${e.path} anew${e.volumeSize !== undefined ? ` as volumes under ${humanSize(e.volumeSize)}` : ''} (${e.kept} image(s) kept from it, ${e.added} new)`);
        else if (e.type === 'written') status(args, e.removed ? `${e.source}: removed ${e.path} (every image in it was pruned)` : `${e.source}: wrote ${e.path}${e.volumes ? ` as ${e.volumes.length} volume(s): ${e.volumes.join(', ')}` : ''}`);
      },
    }).finally(() => progress.done());
    if (args['dry-run'] && report.plan) {
      if (!args.json) for (const j of report.jobs) out(`${j.source} -> ${j.destination}: ${j.tags} tags, ${j.copied.length} would copy, ${j.unchanged.length} unchanged${lateReferrers(j, ' would copy')}, ${j.pruned.length} would be pruned, ${j.failed.length} failed${plannedVolumes(j)}`);
      printPlan(args, report.plan, { jobs: report.jobs });
    } else if (args.json) printJson(report);
    else {
      for (const j of report.jobs) {
        const stayed = j.notPruned.length ? `, ${j.notPruned.length} prune(s) not possible` : '';
        out(`${j.source} -> ${j.destination}: ${j.tags} tags, ${j.copied.length} copied, ${j.unchanged.length} unchanged${lateReferrers(j, '')}, ${j.pruned.length} pruned${stayed}, ${j.failed.length} failed`);
      }
      out(`moved ${report.blobs.copied} blob(s), ${humanSize(report.blobs.bytesCopied)}; ${report.blobs.skipped} already present`);
    }
    const failures = report.jobs.flatMap((j) => j.failed.map((f) => ({ ...f, source: j.source })));
    if (failures.length) {
      // A repository that failed as a whole (no tag list) is reported as such, not as an image "*".
      const repos = failures.filter((f) => f.tag === '*').length;
      const counts = [repos && `${repos} ${repos === 1 ? 'repository' : 'repositories'}`, repos < failures.length && `${failures.length - repos} image(s)`].filter(Boolean);
      const shown = failures.slice(0, 3).map((f) => `${failedName(f)}: ${f.message}`);
      if (failures.length > 3) shown.push(`${failures.length - 3} more above`);
      // The first failure's own hint; a usage mistake without one would otherwise point at --help.
      const hint = failures[0]!.hint ?? (failures[0]!.code === 'USAGE' ? 'each FAILED line above says what was refused; the same command then syncs what is missing' : undefined);
      throw new FerryError(failures[0]!.code, `sync: ${counts.join(' and ')} failed: ${shown.join('; ')}`, hint ? { hint } : {});
    }
  },
};

/** `; would be written as N volume(s)`, for a volume set the dry run planned to write anew. */
function plannedVolumes(j: SyncJobReport): string {
  const a = j.plan?.archive;
  return a?.volumeSize !== undefined ? `; would be written as ${a.files.length} volume(s) under ${humanSize(a.volumeSize)}` : '';
}

const failedName = (f: { source: string; tag: string }) => (f.tag === '*' ? f.source : `${f.source}:${f.tag}`);

/** `, N new referrer(s)` of unchanged tags, when there are any. */
function lateReferrers(j: SyncJobReport, verb: string): string {
  return j.newReferrers.length ? `, ${j.newReferrers.length} new referrer(s)${verb}` : '';
}

/**
 * Progress of a sync: a line naming each tag as its copy starts, then the usual per-blob printer,
 * shared by the tags copied at once (--jobs) and finished when none is left in flight. A printer
 * per tag, replaced whenever the next event came from another tag, repeated the tag's line many
 * times over. --json prints only the report (one document), so no events.
 */
function tagProgress(args: Args): ((e: Extract<SyncEvent, { type: 'copy' }>) => void) & { ended: (key: string) => void; done: () => void } {
  let printer: ProgressPrinter | undefined;
  const copying = new Set<string>();
  const done = () => {
    printer?.done();
    printer = undefined;
  };
  const onCopy = (e: Extract<SyncEvent, { type: 'copy' }>) => {
    if (args.json || args.quiet) return;
    const key = `${e.source}:${e.tag}`;
    if (!copying.has(key)) {
      copying.add(key);
      status(args, `${key}: copying`);
    }
    (printer ??= progressPrinter(args))(e.event);
  };
  const ended = (key: string) => {
    copying.delete(key);
    if (copying.size === 0) done();
  };
  return Object.assign(onCopy, { ended, done });
}
