import { stat } from 'node:fs/promises';
import { ANNOTATION_SOURCE_INDEX, copy, type CopiedImage, type CopyEvent, type CopyOptions, type Root } from '../copy.js';
import { forEachLimited } from '../util/limit.js';
import { FerryError, isFerryError, toFerryError, unreachableHost, type ErrorCode } from '../errors.js';
import { collectGarbage } from '../gc.js';
import { OciLayout } from '../locations/layout.js';
import { locatePathRef, type RegistrySettings } from '../locations/location.js';
import { openRepository, registryClient } from '../locations/registry/pool.js';
import type { RegistryRepository } from '../locations/registry/repository.js';
import type { Digest } from '../oci/digest.js';
import { cosignSubject, REFERRERS_INDEX_TAG, type Descriptor } from '../oci/manifest.js';
import { MediaType } from '../oci/mediatypes.js';
import { parseReference, parseRepository, repositoryName, type Reference } from '../oci/reference.js';
import type { PlatformSelection } from '../oci/platform.js';
import { ANNOTATION_SYNC_PLATFORMS, entrySelection, sameSelection, selectionKey, type EntrySelection } from './selection.js';
import { defaultStoreDir } from '../store.js';
import type { Referrer, Sink, Source, TagName } from '../types.js';
import { PlanBuilder, type ArchivePlan, type Plan } from '../plan.js';
import { archiveDestination, archiveTarget, type ArchiveDestination } from './archive-target.js';
import { dryRunSink, refuseWrite } from './dry-run-sink.js';
import { semverMatcher } from './semver.js';
import { byNaturalOrder } from '../util/order.js';
import { checkVolumeSize } from '../archive/volumes.js';
import { SyncState } from './state.js';
import { BlobTally, type BlobCounts } from './tally.js';

/** One repository to mirror. */
export interface SyncJob {
  /** REGISTRY/REPOSITORY, e.g. docker.io/library/alpine. */
  source: string;
  /** The store (default), `oci:DIR`, `docker://REGISTRY[/PREFIX]`, or an archive file (FILE.tar[.gz|.zst], `oci-archive:FILE`, `docker-archive:FILE`). */
  destination?: string;
  include?: string[];
  exclude?: string[];
  semver?: string;
  /** Default: every platform (a mirror keeps indexes whole). */
  platforms?: PlatformSelection;
  prune?: boolean;
  referrers?: boolean;
  /** Archive destinations: keep the archive as a volume set of files smaller than this (bytes). */
  volumeSize?: number;
}

export interface SyncOptions {
  storeDir?: string;
  registry?: RegistrySettings;
  signal?: AbortSignal;
  dryRun?: boolean;
  jobs?: number;
  /**
   * Registry destinations: trust the state file (default) or, with false, HEAD every tag there as
   * if it were empty; either way it is rewritten with what this run found.
   */
  state?: boolean;
  onEvent?: (e: SyncEvent) => void;
}

export type SyncEvent =
  | { type: 'tags'; source: string; total: number; selected: number }
  | { type: 'unchanged' | 'copied'; source: string; tag: string; digest?: Digest }
  /** --prune removed `tag` (`name` at the destination: a mirror's repository is not the source's). */
  | { type: 'pruned'; source: string; tag: string; name: string }
  /** --prune could not remove a tag gone upstream (see NotPruned); it stays, and is tried again next run. */
  | ({ type: 'not-pruned'; source: string; name: string } & NotPruned)
  /** --prune leaves a tag gone upstream that sync did not write (a registry: reported the first time only), `because` says how it knows. */
  | { type: 'left'; source: string; tag: string; name: string; because: string }
  /** --referrers: a referrer of an unchanged tag that the destination lacked was copied. */
  | { type: 'referrer'; source: string; tag: string; digest: Digest }
  | { type: 'failed'; source: string; tag: string; message: string }
  /** An archive destination is being written anew: `kept` images from it, `added` from this run. */
  | { type: 'writing'; source: string; path: string; kept: number; added: number; volumeSize?: number }
  /** An archive destination was written anew (or removed: --prune dropped every image). */
  | { type: 'written'; source: string; path: string; removed: boolean; volumes?: string[] }
  | { type: 'copy'; source: string; tag: string; event: CopyEvent };

export interface SyncJobReport {
  source: string;
  destination: string;
  tags: number;
  copied: string[];
  unchanged: string[];
  /** --referrers: referrers of unchanged tags, attached after they were mirrored, copied now. */
  newReferrers: Array<{ tag: string; digest: Digest }>;
  pruned: string[];
  /** Tags gone upstream that --prune could not remove. */
  notPruned: NotPruned[];
  /** Tags gone upstream that --prune left because sync did not write them, listed the first time only. */
  left: string[];
  /** `hint`: what the failure's error suggested doing, when it did. */
  failed: Array<{ tag: string; code: ErrorCode; message: string; hint?: string }>;
  /** Archive destinations: whether this run wrote the archive anew (false: left untouched). */
  rewritten?: boolean;
  /** Archive destinations kept as a volume set (volumeSize): its volumes after the run. */
  volumes?: string[];
  /** With dryRun: what this job would move. */
  plan?: Plan;
}

export interface SyncReport {
  jobs: SyncJobReport[];
  /**
   * For the whole run, each blob once per destination (a registry repository, a layout, an
   * archive): moved if the run moved it there, else already present. With dryRun, the plan's.
   */
  blobs: BlobCounts;
  /** With dryRun: every job's plan in one (blobs counted once per destination). */
  plan?: Plan;
}

/** A tag gone upstream that stays: its manifest also carries `sharedWith`, and the registry deletes only by digest. */
export interface NotPruned {
  tag: string;
  digest: Digest;
  sharedWith: string;
  reason: string;
}

/** Where a job's images go, and what is already there. */
export interface Target {
  sink: Sink;
  label: string;
  nameFor(tag: string): TagName;
  /** The source digest the destination holds for a tag (a narrowed copy records its index). */
  currentDigest(tag: string): Promise<Digest | undefined>;
  /**
   * The source digest the destination is believed to hold, known without a request (a state file,
   * an index already read). Only a hint for the source's HEAD; `currentDigest` decides.
   */
  expected?(tag: string): Digest | undefined;
  /** The destination now holds (a copy of) source digest `digest` at `tag`. */
  remember(tag: string, digest: Digest): void;
  /**
   * The sink is a layout whose commit writes index.json: the job's tags are copied a few at once
   * and their names committed in batches (see CommitBatch). A registry commits each tag as its own
   * manifest PUT, whose failure is that tag's: copied one by one.
   */
  batchCommits?: boolean;
  /**
   * Whether the destination holds manifest `d` as an image of its own (a referrer copied
   * earlier). Default: `sink.has`. Must write nothing.
   */
  holds?(d: Descriptor): Promise<boolean>;
  /** How the destination's image at `tag` was copied, where it can say (layouts, archives). */
  selection?(tag: string): EntrySelection | undefined;
  tags(): Promise<string[]>;
  /**
   * A destination written as a whole says itself which blobs this job brought, once written
   * (after finish): each blob of its images, moved unless the destination held it before. Without
   * it, the copies' events say.
   */
  blobs?(): Array<{ digest: Digest; size: number; moved: boolean }>;
  /**
   * Of the tags gone upstream, those sync may remove (`mine`) and those it leaves because it did
   * not write them, reported the first time they are seen (`left`), and why they are taken for
   * not sync's (`because`, default: not written by ferry sync). Without it, all are `mine`.
   */
  claim?(gone: string[]): { mine: string[]; left: string[]; because?: string };
  /** Removes the tags; returns those it could not remove without removing others. */
  prune(tags: string[]): Promise<NotPruned[]>;
  /**
   * Dry runs of a destination written as a whole in volumes: the files the planned rewrite would
   * be (after the copies and the prune were planned), undefined if it would not be written.
   * `upstream`: the images the dry run copied, and how.
   */
  planArchive?(r: SyncJobReport, upstream: { source: Source; roots: Root[]; options: CopyOptions }): Promise<ArchivePlan | undefined>;
  /** After the copies and the prune (not in dry runs): a destination written as a whole is written now. */
  finish?(r: SyncJobReport): Promise<void>;
  close(): Promise<void>;
}

async function layoutTarget(dir: string, src: Reference, dryRun: boolean | undefined, noState: boolean): Promise<Target> {
  const repo = repositoryName(src);
  const nameFor = (tag: string): TagName => ({ tag, name: `${repo}:${tag}` });
  let layout: OciLayout;
  // A dry run refuses what the real run's open would, before planning anything.
  if (dryRun) await OciLayout.checkCreate(dir);
  try {
    layout = await OciLayout.open(dir, { create: !dryRun });
  } catch (e) {
    // A dry run creates nothing: a layout that does not exist yet is planned as empty.
    if (dryRun && isFerryError(e, 'NOT_FOUND')) return emptyTarget(dir, nameFor);
    throw e;
  }
  const mine = async () => (await layout.entries()).filter((e) => e.name?.startsWith(`${repo}:`));
  // Read once, before any copy of this job: one parse of index.json for all the tags. A damaged
  // index.json fails the job here: the layout is closed (its writer marker removed) before that.
  const entries = await mine().catch(async (e: unknown) => {
    await layout.close().catch(() => {});
    throw e;
  });
  const current = new Map(entries.map((e) => [e.name!, (e.descriptor.annotations?.[ANNOTATION_SOURCE_INDEX] as Digest | undefined) ?? e.descriptor.digest]));
  const selections = new Map(entries.map((e) => [e.name!, entrySelection(e.descriptor.annotations)]));
  // Read when first asked, after this job's copies: sink.has would also touch the blob's mtime.
  let roots: Promise<Set<string>> | undefined;
  return {
    sink: layout,
    label: dir,
    nameFor,
    batchCommits: true,
    currentDigest: async (tag) => current.get(`${repo}:${tag}`),
    expected: (tag) => current.get(`${repo}:${tag}`),
    remember: () => {},
    holds: async (d) => (await (roots ??= layout.entries().then((es) => new Set(es.map((e) => e.descriptor.digest))))).has(d.digest),
    selection: (tag) => selections.get(`${repo}:${tag}`),
    async tags() {
      return (await mine()).map((e) => e.name!.slice(repo.length + 1));
    },
    // Images sync wrote carry the selection they were copied with; a name given by hand (ferry
    // tag, pull, load) does not, and --prune leaves it.
    claim(gone) {
      if (noState) return { mine: gone, left: [] };
      const ours = (t: string) => selections.get(`${repo}:${t}`)?.recorded !== undefined;
      // An older ferry synced images without the mark: they look like names given by hand.
      const because = `it has no ${ANNOTATION_SYNC_PLATFORMS} annotation (named by hand, or synced by an older ferry)`;
      return { mine: gone.filter(ours), left: gone.filter((t) => !ours(t)), because };
    },
    async prune(tags) {
      const names = new Set(tags.map((t) => `${repo}:${t}`));
      await layout.untag((e) => e.name !== undefined && names.has(e.name));
      await collectGarbage(layout);
      return [];
    },
    close: () => layout.close(),
  };
}

/** A destination that does not exist yet, for dry runs: has nothing, accepts nothing. */
function emptyTarget(label: string, nameFor: (tag: string) => TagName): Target {
  return {
    sink: dryRunSink(label),
    label,
    nameFor,
    currentDigest: async () => undefined,
    remember: () => {},
    tags: async () => [],
    prune: refuseWrite(label),
    close: async () => {},
  };
}

/** docker://REGISTRY[/PREFIX] split into the registry and the prefix ('' without one). */
function registryDestination(text: string): { domain: string; prefix: string } {
  const rest = text.slice('docker://'.length).replace(/\/+$/, '');
  const slash = rest.indexOf('/');
  return slash < 0 ? { domain: rest, prefix: '' } : { domain: rest.slice(0, slash), prefix: rest.slice(slash + 1) };
}

async function registryTarget(text: string, src: Reference, o: SyncOptions, sel: string): Promise<Target> {
  const { domain, prefix } = registryDestination(text);
  const path = prefix ? `${prefix}/${src.path}` : src.path;
  const ref = parseReference(`${domain}/${path}`);
  const repo: RegistryRepository = openRepository(ref, o.registry);
  const label = `docker://${domain}/${path}`;
  const state = await SyncState.open(label);
  // What sync wrote here, before a reselection forgets the digests: --prune removes only these.
  const wrote = new Set(state.all().keys());
  // Digests recorded under another --platform selection say nothing about this one: every tag is
  // copied again (its blobs are there already); a state file older than the field is trusted.
  const reselected = state.platforms !== undefined && state.platforms !== sel;
  if (reselected) state.reset(new Map(), undefined);
  if (!o.dryRun) state.platforms = sel;
  const tags = () => repo.listTags({ signal: o.signal }).catch((e: unknown) => {
    if (toFerryError(e).code === 'NOT_FOUND') return [];
    throw e;
  });
  // Listed once, and only when the state vouches for some tag: a tag deleted at the destination
  // must be copied again even though the state remembers it. Asked for now, beside the source's
  // tag list: left until the first tag check, it waited behind that check's HEADs.
  let listed: Promise<Set<string>> | undefined = o.state !== false && state.size > 0 ? tags().then((ts) => new Set(ts)) : undefined;
  listed?.catch(() => {});
  return {
    sink: repo,
    label,
    nameFor: (tag) => ({ tag, name: `${domain}/${path}:${tag}` }),
    async currentDigest(tag) {
      if (reselected) return undefined;
      const known = o.state === false ? undefined : state.get(tag);
      if (known === undefined) return repo.headDigest(tag, { signal: o.signal });
      listed ??= tags().then((ts) => new Set(ts));
      if ((await listed).has(tag)) return known;
      state.delete(tag);
      return undefined;
    },
    expected: (tag) => (o.state === false ? undefined : state.get(tag)),
    remember: (tag, digest) => state.set(tag, digest),
    tags,
    claim(all) {
      const ours = (t: string) => wrote.has(t) || state.get(t) !== undefined;
      // A registry without the Referrers API lists a manifest's referrers under the tag
      // `sha256-<hex>`, which pushing a referrer there (--referrers) writes: not a mirrored tag.
      const gone = all.filter((t) => ours(t) || !REFERRERS_INDEX_TAG.test(t));
      if (o.state === false) return { mine: gone, left: [] };
      const mine = gone.filter(ours);
      return { mine, left: state.noteLeft(gone.filter((t) => !ours(t))) };
    },
    async prune(tags) {
      const notPruned: NotPruned[] = [];
      // The digest of every tag that stays, and one tag on it: asked for only once a registry
      // refuses to delete a tag alone.
      let kept: Promise<Map<Digest, string>> | undefined;
      const keptDigests = () =>
        (kept ??= (async () => {
          const m = new Map<Digest, string>();
          for (const t of (await repo.listTags({ signal: o.signal })).filter((x) => !tags.includes(x))) {
            const d = await repo.headDigest(t, { signal: o.signal });
            if (d && !m.has(d)) m.set(d, t);
          }
          return m;
        })());
      for (const t of tags) {
        const refusal = await repo.deleteTag(t);
        const d = refusal === undefined ? undefined : await repo.headDigest(t, { signal: o.signal });
        // Deleting a manifest removes every tag on it: only when no kept tag shares it.
        const other = d && (await keptDigests()).get(d);
        if (d && other !== undefined) {
          notPruned.push({ tag: t, digest: d, sharedWith: other, reason: `this registry deletes only by digest: a DELETE of the tag got ${refusal}` });
          continue;
        }
        if (d) await repo.deleteManifest(d);
        state.delete(t);
      }
      return notPruned;
    },
    close: async () => {
      if (!o.dryRun) await state.save();
    },
  };
}

type Destination =
  | { kind: 'layout'; dir: string }
  | { kind: 'registry'; text: string }
  | { kind: 'archive'; archive: ArchiveDestination };

async function parseDestination(job: SyncJob, o: SyncOptions): Promise<Destination> {
  const parsed = await destinationOf(job.destination, o);
  if (job.volumeSize === undefined) return parsed;
  if (parsed.kind !== 'archive') {
    const named = job.destination ? `"${job.destination}" is not an archive` : 'the store is not an archive';
    throw new FerryError('USAGE', `--volume-size writes an archive as volumes, but the sync destination ${named}`, {
      hint: 'name an archive file (FILE.tar, FILE.tar.gz, FILE.tar.zst) as the destination, or drop --volume-size',
    });
  }
  checkVolumeSize(job.volumeSize);
  return { kind: 'archive', archive: { ...parsed.archive, volumeSize: job.volumeSize } };
}

async function destinationOf(dest: string | undefined, o: SyncOptions): Promise<Destination> {
  if (!dest) return { kind: 'layout', dir: o.storeDir ?? defaultStoreDir() };
  if (dest.startsWith('oci:')) {
    // Images keep their source names there: a tag on the layout would be dropped, so it is refused.
    const { path, ref } = await locatePathRef(dest.slice(4), 'oci:DIR');
    if (ref) {
      throw new FerryError('USAGE', `sync destination "${dest}" names a tag (${ref}); a layout destination is oci:DIR`, {
        hint: 'every image keeps its source name (REGISTRY/REPOSITORY:TAG) in the layout',
      });
    }
    return { kind: 'layout', dir: path };
  }
  if (dest.startsWith('docker://')) return { kind: 'registry', text: dest };
  const archive = await archiveDestination(dest);
  if (archive && (await stat(archive.path).catch(() => undefined))?.isDirectory()) {
    throw new FerryError('USAGE', `sync destination ${archive.path} is a directory, not an archive file`, {
      hint: `an archive is one file; to mirror into a directory as an OCI layout, write oci:${archive.path}`,
    });
  }
  if (archive) return { kind: 'archive', archive };
  throw new FerryError('USAGE', `sync destination "${dest}" must be the store (omit it), oci:DIR, docker://REGISTRY[/PREFIX] or an archive file`, {
    hint: 'an archive is a path ending in .tar, .tar.gz or .tar.zst, or oci-archive:FILE / docker-archive:FILE',
  });
}

function openTarget(dest: Destination, src: Reference, o: SyncOptions, sel: string): Promise<Target> {
  if (dest.kind === 'layout') return layoutTarget(dest.dir, src, o.dryRun, o.state === false);
  if (dest.kind === 'registry') return registryTarget(dest.text, src, o, sel);
  return archiveTarget(dest.archive, src, o, sel);
}


export type FilterField = 'include' | 'exclude' | 'semver';

/** A bad pattern or range worded as the flag it came from; a config file names its place instead. */
const asFlag = (field: FilterField, problem: string, whole?: string) =>
  new FerryError('USAGE', field === 'semver' ? `--semver ${JSON.stringify(whole)}: ${problem}` : `invalid --${field} ${problem}`, field === 'semver' ? { hint: SEMVER_HINT } : {});

const SEMVER_HINT = 'a range is comparators such as ">=1.2 <2", "^1.4", "~1.4.2", "1.x", joined by "||"; tags that are not versions (latest) never match';

export function tagFilter(job: Pick<SyncJob, FilterField>, bad: (field: FilterField, problem: string, whole?: string) => FerryError = asFlag): (tag: string) => boolean {
  const compile = (patterns: string[] | undefined, field: FilterField) => (patterns ?? []).map((p) => {
    try {
      return new RegExp(p);
    } catch (e) {
      throw bad(field, `pattern ${JSON.stringify(p)}: ${(e as Error).message}`);
    }
  });
  const include = compile(job.include, 'include');
  const exclude = compile(job.exclude, 'exclude');
  let semver: ((t: string) => boolean) | undefined;
  try {
    semver = job.semver ? semverMatcher(job.semver) : undefined;
  } catch (e) {
    throw bad('semver', (e as Error).message, job.semver);
  }
  return (tag) =>
    (include.length === 0 || include.some((r) => r.test(tag))) && !exclude.some((r) => r.test(tag)) && (!semver || semver(tag));
}

/**
 * Mirrors repositories. Per tag, one HEAD tells whether the destination already holds what the
 * tag points at; only new or changed tags are copied, each on its own so one failure does not
 * stop the rest. Tags that disappeared upstream are removed with `prune`.
 */
export async function sync(jobs: SyncJob[], o: SyncOptions = {}): Promise<SyncReport> {
  // A bad pattern, range or destination is the command's mistake, not one image's failure: refused
  // before any request.
  const filters = new Map(jobs.map((job) => [job, tagFilter(job)]));
  const destinations = new Map<SyncJob, Destination>();
  for (const job of jobs) destinations.set(job, await parseDestination(job, o));
  const sources = new Map(jobs.map((job) => [job, parseRepository(job.source, 'sync source')]));
  const report: SyncReport = { jobs: [], blobs: { copied: 0, bytesCopied: 0, skipped: 0, bytesSkipped: 0 } };
  const plan = new PlanBuilder();
  const tally = new BlobTally();
  const archivePlans: ArchivePlan[] = [];
  const hosts = new HostBreaker();
  for (const job of jobs) {
    o.signal?.throwIfAborted();
    const src = sources.get(job)!;
    const repo = openRepository(src, o.registry);
    const dest = destinations.get(job)!;
    const r: SyncJobReport = {
      source: repositoryName(src),
      destination: dest.kind === 'layout' ? dest.dir : dest.kind === 'archive' ? dest.archive.path : dest.text,
      tags: 0,
      copied: [],
      unchanged: [],
      newReferrers: [],
      pruned: [],
      notPruned: [],
      left: [],
      failed: [],
    };
    report.jobs.push(r);
    let opened: Target | undefined;
    let unreachable = false;
    const down = hosts.down([repo.client.apiHost, ...(dest.kind === 'registry' ? [registryHost(dest.text, o)] : [])]);
    if (down) {
      recordFailure(r, '*', down, o);
      continue;
    }
    try {
      // Opened inside the job: a destination that cannot be read (a damaged archive) fails this job only.
      const sel = selectionKey(job.platforms);
      // Both lists at once: a registry destination's tag list is a second round trip, not a second wait.
      const listing = repo.listTags({ signal: o.signal });
      listing.catch(() => undefined); // awaited below, once the destination opened
      const target = (opened = await openTarget(dest, src, o, sel));
      r.destination = target.label;
      const upstream = await listing;
      const selected = upstream.filter(filters.get(job)!);
      r.tags = selected.length;
      o.onEvent?.({ type: 'tags', source: r.source, total: upstream.length, selected: selected.length });
      const todo: Array<{ tag: string; digest: Digest }> = [];
      const same: Array<{ tag: string; digest: Digest }> = [];
      // Tag checks are HEADs, tiny for both sides: four per blob transfer (--jobs) at once. Over a
      // 40 ms round trip a no-op sync of 200 tags took 2.9 s with 4 at once, 1.3 s with 16.
      await forEachLimited(selected, (o.jobs ?? 4) * 4, async (tag) => {
        // Both sides at once: a registry destination costs a second HEAD per tag, not a second wait.
        const [digest, current] = await Promise.all([
          repo.headDigest(tag, { signal: o.signal, expected: target.expected?.(tag) }),
          target.currentDigest(tag),
        ]);
        if (!digest) return; // deleted between the list and the HEAD
        if (current === digest && sameSelection(target.selection?.(tag), sel)) {
          target.remember(tag, digest);
          r.unchanged.push(tag);
          same.push({ tag, digest });
          o.onEvent?.({ type: 'unchanged', source: r.source, tag, digest });
        } else todo.push({ tag, digest });
      });
      todo.sort((a, b) => byNaturalOrder(a.tag, b.tag));
      // Checked many at once, so recorded as the answers came: reported in version order too.
      r.unchanged.sort(byNaturalOrder);
      const copyOpts = {
        platforms: job.platforms ?? 'all',
        // A mirror narrowed to some platforms keeps single-platform tags as they are.
        anyPlatformOfSingle: true,
        referrers: job.referrers,
        signal: o.signal,
        concurrency: o.jobs,
        nameReferrerTag: (t: string) => target.nameFor(t),
      };
      const counted = (tag: string) => (event: CopyEvent) => {
        if (!target.blobs) tally.event(target.label, event);
        o.onEvent?.({ type: 'copy', source: r.source, tag, event });
      };
      const late = () => (job.referrers ? lateReferrers(repo, target, r, { same, todo, upstream }, o) : Promise.resolve([]));
      const referrerRoots = (refs: Referrer[]): Root[] => refs.map((x) => ({ ref: x.descriptor.digest, names: x.tag ? [target.nameFor(x.tag)] : [] }));
      let planned: Root[] = [];
      if (o.dryRun) {
        const extra = await late();
        for (const { tag, referrers } of extra) {
          for (const x of referrers) r.newReferrers.push({ tag, digest: x.descriptor.digest });
        }
        const roots = [
          ...todo.map((t) => ({ ref: t.digest, names: [target.nameFor(t.tag)], annotations: { [ANNOTATION_SYNC_PLATFORMS]: sel } })),
          ...extra.flatMap((x) => referrerRoots(x.referrers)),
        ];
        planned = roots;
        const c = await copy(repo, target.sink, roots, { ...copyOpts, dryRun: true });
        // A referrer has no tag: named by its digest.
        const source = (i: CopiedImage) => (i.names[0] ? `${r.source}:${i.names[0].tag}` : `${r.source}@${i.digest}`);
        const jobPlan = new PlanBuilder();
        jobPlan.add(target.label, source, c);
        plan.add(target.label, source, c);
        r.plan = jobPlan.build('sync');
        r.copied.push(...todo.map((t) => t.tag));
      } else {
        const breaker = new Breaker();
        const batch = target.batchCommits ? new CommitBatch(target.sink) : undefined;
        const copied = r.copied.length;
        const failed = r.failed.length;
        try {
          await forEachLimited(todo, batch ? Math.min(o.jobs ?? 4, TAGS_AT_ONCE) : 1, async (t) => {
            const down = breaker.tripped();
            if (down) {
              recordFailure(r, t.tag, down, o);
              return;
            }
            const view = batch?.view();
            try {
              await copy(repo, view?.sink ?? target.sink, [{ ref: t.digest, names: [target.nameFor(t.tag)], annotations: { [ANNOTATION_SYNC_PLATFORMS]: sel } }], {
                ...copyOpts,
                onEvent: counted(t.tag),
              });
              breaker.passed();
              target.remember(t.tag, t.digest);
              r.copied.push(t.tag);
              o.onEvent?.({ type: 'copied', source: r.source, tag: t.tag, digest: t.digest });
              await batch?.due();
            } catch (e) {
              breaker.failed(e);
              recordFailure(r, t.tag, e, o);
            } finally {
              view?.release();
            }
          });
        } finally {
          // Interrupted or not: the tags copied so far are named (their blobs are on disk).
          await batch?.flush();
        }
        // Tags finish in any order when several run at once: the report lists them in tag order.
        r.copied.splice(copied, Infinity, ...r.copied.slice(copied).sort(byNaturalOrder));
        r.failed.splice(failed, Infinity, ...r.failed.slice(failed).sort((a, b) => byNaturalOrder(a.tag, b.tag)));
        // A registry that is down would fail the referrers and the prune too, each after its own
        // retries: left to the next run, which the failed tags make necessary anyway.
        const tripped = breaker.tripped();
        if (tripped) hosts.markDown(tripped);
        unreachable = tripped !== undefined;
        // After the copies: a referrer that came with one of them is not copied twice.
        for (const { tag, referrers } of unreachable ? [] : await late()) {
          try {
            await copy(repo, target.sink, referrerRoots(referrers), {
              ...copyOpts,
              platforms: 'all',
              onEvent: counted(tag),
            });
            for (const x of referrers) {
              r.newReferrers.push({ tag, digest: x.descriptor.digest });
              o.onEvent?.({ type: 'referrer', source: r.source, tag, digest: x.descriptor.digest });
            }
          } catch (e) {
            recordFailure(r, tag, e, o, 'referrers: ');
          }
        }
      }
      if (job.prune && !unreachable) {
        const present = new Set(upstream);
        // Only tags this job's filters select are its to prune (and cosign's tags of its images): a
        // tag outside --include/--semver (another job's, or mirrored before the filter narrowed) stays.
        const selects = (t: string) => filters.get(job)!(t) || REFERRERS_INDEX_TAG.test(t) || cosignSubject(t) !== undefined;
        const gone = (await target.tags()).filter((t) => !present.has(t) && selects(t));
        const { mine, left, because = 'not written by ferry sync' } = target.claim?.(gone) ?? { mine: gone, left: [] };
        const nameAt = (tag: string) => target.nameFor(tag).name ?? `${r.destination}:${tag}`;
        r.left.push(...left);
        for (const tag of left) o.onEvent?.({ type: 'left', source: r.source, tag, name: nameAt(tag), because });
        const stayed = mine.length && !o.dryRun ? await target.prune(mine) : [];
        r.notPruned.push(...stayed);
        for (const n of stayed) o.onEvent?.({ type: 'not-pruned', source: r.source, name: nameAt(n.tag), ...n });
        r.pruned.push(...mine.filter((t) => !stayed.some((n) => n.tag === t)));
        for (const tag of r.pruned) o.onEvent?.({ type: 'pruned', source: r.source, tag, name: nameAt(tag) });
      }
      if (o.dryRun && r.plan && target.planArchive) {
        const archive = await target.planArchive(r, { source: repo, roots: planned, options: copyOpts });
        if (archive) {
          r.plan.archive = archive;
          archivePlans.push(archive);
        }
      }
      if (!o.dryRun) {
        await target.finish?.(r);
        for (const b of target.blobs?.() ?? []) tally.note(target.label, b.digest, b.size, b.moved);
      }
      if (!unreachable) hosts.passed();
    } catch (e) {
      hosts.failed(e);
      recordFailure(r, '*', e, o);
    } finally {
      await opened?.close();
    }
  }
  if (o.dryRun) {
    // One archive planned in volumes: its files are the plan's; several are each in their job's plan.
    report.plan = plan.build('sync', archivePlans.length === 1 ? archivePlans[0] : undefined);
    const { blobs, skipped } = report.plan;
    report.blobs = { copied: blobs.count, bytesCopied: blobs.bytes, skipped: skipped.count, bytesSkipped: skipped.bytes };
  } else report.blobs = tally.totals();
  return report;
}

/**
 * --referrers, for tags whose digest did not change: referrers attached upstream since they were
 * mirrored (a signature, an SBOM) that the destination lacks, per tag. One request per unchanged
 * digest (the Referrers API; without it, the `sha256-<hex>` fallback tag). Referrers that are
 * selected tags themselves (cosign's `.sig`) or come with an image copied in this run are left to
 * those copies.
 */
async function lateReferrers(
  repo: RegistryRepository,
  target: Target,
  r: SyncJobReport,
  tags: { same: Array<{ tag: string; digest: Digest }>; todo: Array<{ tag: string; digest: Digest }>; upstream: string[] },
  o: SyncOptions,
): Promise<Array<{ tag: string; referrers: Referrer[] }>> {
  const seen = new Set<string>(tags.todo.map((t) => t.digest));
  const synced = new Set([...tags.same, ...tags.todo].map((t) => t.tag));
  // Cosign's tags this run syncs anyway are not resolved again as referrers.
  const unsynced = tags.upstream.filter((t) => !synced.has(t));
  const holds = (d: Descriptor) => (target.holds ? target.holds(d) : target.sink.has(d));
  const out: Array<{ tag: string; referrers: Referrer[] }> = [];
  await forEachLimited(tags.same, (o.jobs ?? 4) * 4, async ({ tag, digest }) => {
    if (seen.has(digest)) return;
    seen.add(digest);
    try {
      // Only the digest is asked about; the media type just says it is a manifest.
      const found = await repo.referrers({ mediaType: MediaType.OciManifest, digest, size: 0 }, { signal: o.signal, tags: unsynced });
      const missing: Referrer[] = [];
      for (const x of found) {
        if (seen.has(x.descriptor.digest) || (x.tag !== undefined && synced.has(x.tag))) continue;
        seen.add(x.descriptor.digest);
        if (!(await holds(x.descriptor))) missing.push(x);
      }
      if (missing.length) out.push({ tag, referrers: missing });
    } catch (e) {
      recordFailure(r, tag, e, o, 'referrers: ');
    }
  });
  return out.sort((a, b) => byNaturalOrder(a.tag, b.tag));
}

/** Tags a sync into a layout or an archive copies at once (at most --jobs; each moves up to --jobs blobs). */
const TAGS_AT_ONCE = 4;

/** A layout's index.json is rewritten at most this often while a job's tags are copied. */
const COMMIT_INTERVAL_MS = 2000;

/**
 * Names a job's images in index.json in batches, not once per tag: each copy's commit() is
 * deferred and the names queued so far are written at most every COMMIT_INTERVAL_MS and at the end
 * (a sync of 100 small tags rewrote index.json, with two fsyncs, 100 times). Crash safety holds:
 * copy() queues a name only once every blob and manifest it reaches is published (fsynced and
 * renamed), so a written index.json never names a missing blob; a crash loses at most the names of
 * the last interval, which the next run copies again from the blobs already there.
 */
class CommitBatch {
  private last = Date.now();
  private writing: Promise<void> = Promise.resolve();
  /** Blobs a copy found missing and is bringing: another tag's copy waits for it, not downloads it too. */
  private readonly claims = new Map<Digest, Promise<void>>();

  constructor(private readonly target: Sink) {}

  /**
   * One tag's view of the sink. A claim is taken when has() says missing and let go when that put
   * ends; copy() puts a blob right after asking about it and asks nothing else meanwhile, so a
   * claim holder never waits on another claim. `release` lets go of what a failed copy left.
   */
  view(): { sink: Sink; release(): void } {
    const t = this.target;
    const mine = new Map<Digest, () => void>();
    const letGo = (d: Digest) => {
      const done = mine.get(d);
      if (!done) return;
      mine.delete(d);
      this.claims.delete(d);
      done();
    };
    const has = async (d: Descriptor): Promise<boolean> => {
      for (let c = this.claims.get(d.digest); c && !mine.has(d.digest); c = this.claims.get(d.digest)) await c;
      if (await t.has(d)) return true;
      if (this.claims.has(d.digest) && !mine.has(d.digest)) return has(d);
      if (!mine.has(d.digest)) {
        let done!: () => void;
        this.claims.set(d.digest, new Promise<void>((r) => (done = r)));
        mine.set(d.digest, done);
      }
      return false;
    };
    const sink: Sink = {
      caps: t.caps,
      has,
      put: async (d, body, po) => {
        try {
          await t.put(d, body, po);
        } finally {
          letGo(d.digest);
        }
      },
      ...(t.resumable ? { resumable: (d: Descriptor, ro?: { signal?: AbortSignal }) => t.resumable!(d, ro) } : {}),
      tag: (root, name) => t.tag(root, name),
      commit: async () => {},
      close: async () => {},
    };
    return { sink, release: () => [...mine.keys()].forEach(letGo) };
  }

  /** Writes the queued names if the last write is COMMIT_INTERVAL_MS old. */
  async due(): Promise<void> {
    if (Date.now() - this.last >= COMMIT_INTERVAL_MS) await this.flush();
  }

  /** Writes the queued names, one write at a time (the layout's commit takes what is queued). */
  flush(): Promise<void> {
    this.last = Date.now();
    const next = this.writing.then(() => this.target.commit());
    this.writing = next.catch(() => {});
    return next;
  }
}

/**
 * Tags failing in a row because a registry does not answer at all (refused, reset, DNS, timeout)
 * against the same host: after UNREACHABLE_STREAK of them, the job's remaining tags are not tried.
 * Each such failure already took a full retry cycle (~5 s), so a job of 500 tags against a dead
 * registry would take ~40 minutes to say what the first few said. Three: one failure can be a
 * blip and two a registry restarting between two tags' retries, but three in a row (~15 s of
 * silence through every retry) is a registry that is down; it costs two more cycles, not minutes.
 * An HTTP error (a 500 for one image) is an answer: it is that image's failure and breaks a streak.
 */
const UNREACHABLE_STREAK = 3;

class Breaker {
  private host: string | undefined;
  private streak = 0;
  private open: FerryError | undefined;

  passed(): void {
    this.host = undefined;
    this.streak = 0;
  }

  failed(e: unknown): void {
    const host = unreachableHost(e);
    this.streak = host === undefined ? 0 : host === this.host ? this.streak + 1 : 1;
    this.host = host;
    if (host !== undefined && this.streak >= UNREACHABLE_STREAK) {
      this.open = new FerryError('NETWORK', `not tried: ${host} unreachable after ${UNREACHABLE_STREAK} consecutive failures`, {
        hint: 'check that the registry is up and reachable; the same command again syncs what is missing',
        unreachable: host,
      });
    }
  }

  /** The failure every remaining tag of the job gets, once the streak is long enough. */
  tripped(): FerryError | undefined {
    return this.open;
  }
}

/**
 * Across a run's jobs: a host that tripped a job's Breaker, or failed UNREACHABLE_STREAK jobs in a
 * row without an answer (each after its retries: a tag list, a destination), is not asked again
 * in this run; every later job that reads or writes it fails at once with the same message. A
 * config of 500 repositories on one dead registry would otherwise wait out 500 retry cycles.
 */
class HostBreaker {
  private jobs = new Breaker();
  private readonly open = new Map<string, FerryError>();

  markDown(e: FerryError): void {
    if (e.unreachable !== undefined && !this.open.has(e.unreachable)) this.open.set(e.unreachable, e);
  }

  passed(): void {
    this.jobs.passed();
  }

  failed(e: unknown): void {
    this.jobs.failed(e);
    const tripped = this.jobs.tripped();
    if (tripped) {
      this.markDown(tripped);
      this.jobs = new Breaker();
    }
  }

  /** The failure a job gets when one of the hosts it needs is down. */
  down(need: string[]): FerryError | undefined {
    for (const h of need) {
      const e = this.open.get(h);
      if (e) return e;
    }
    return undefined;
  }
}

/** The API host of a registry destination, as failures name it. */
function registryHost(text: string, o: SyncOptions): string {
  return registryClient(registryDestination(text).domain, o.registry).apiHost;
}

/** One image (or, as `*`, a whole repository) failed: noted, and the job goes on. An interrupt does not. */
function recordFailure(r: SyncJobReport, tag: string, e: unknown, o: SyncOptions, prefix = ''): void {
  if (o.signal?.aborted) throw e;
  const err = toFerryError(e);
  r.failed.push({ tag, code: err.code, message: prefix + err.message, ...(err.hint ? { hint: err.hint } : {}) });
  o.onEvent?.({ type: 'failed', source: r.source, tag, message: prefix + err.message });
}
