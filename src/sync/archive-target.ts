import { access, constants, readdir, rm, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ANNOTATION_SOURCE_INDEX, copy, type CopyEvent, type Root } from '../copy.js';
import { refusePseudoFilesystem } from '../util/can-make.js';
import { FerryError, isFerryError, missingDirectory, toFerryError } from '../errors.js';
import { ArchiveOutput, compressionForPath } from '../archive/output.js';
import { ArchiveSource } from '../archive/source.js';
import { ArchiveSink, SingleWriter, type ArchiveFormat, type EntryWriter } from '../archive/writer.js';
import type { MeasuredFile } from '../archive/output.js';
import { completeInterruptedSwitch, journalPath, removeSet, replaceSet } from '../archive/set-journal.js';
import { refuseOutputPattern } from '../archive/patterns.js';
import { existingVolumes, VolumeWriter, volumePath } from '../archive/volumes.js';
import { warn } from '../log.js';
import { archivePlan } from '../plan.js';
import { ARCHIVE_SUFFIX } from '../blob/compression.js';
import { syncDir, TEMP_PREFIX } from '../blob/publish.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, OciLayout, type LayoutEntry } from '../locations/layout.js';
import { acquireLock, lockTimeoutFromEnv } from '../locations/lock.js';
import { locatePathRef } from '../locations/transport.js';
import type { Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/manifest.js';
import { isManifestLike } from '../oci/mediatypes.js';
import { repositoryName, type Reference } from '../oci/reference.js';
import type { Sink, Source, TagName } from '../types.js';
import { dryRunSink } from './dry-run-sink.js';
import { SyncState } from './state.js';
import { entrySelection, type EntrySelection } from './selection.js';
import type { SyncJobReport, SyncOptions, Target } from './sync.js';

/** An archive file a sync writes: `docker` is the dual OCI + docker-load format that save writes. */
export interface ArchiveDestination {
  path: string;
  format: ArchiveFormat;
  /** Written as a volume set (NAME.001.tar, …) of files smaller than this, instead of one file. */
  volumeSize?: number;
}

/**
 * A sync destination that names an archive: `oci-archive:FILE`, `docker-archive:FILE`, or a path
 * ending in .tar, .tar.gz/.tgz or .tar.zst. Undefined for anything else.
 */
export async function archiveDestination(text: string): Promise<ArchiveDestination | undefined> {
  for (const [prefix, format] of [['oci-archive:', 'oci'], ['docker-archive:', 'docker']] as const) {
    if (!text.startsWith(prefix)) continue;
    // Split as the transports split it: the path is what is on disk, or whose directory is.
    const { path, ref } = await locatePathRef(text.slice(prefix.length), `${prefix}FILE`);
    if (ref !== undefined) {
      throw new FerryError('USAGE', `sync destination "${text}": an archive is named by its path alone`, {
        hint: 'every image keeps its source name (REGISTRY/REPOSITORY:TAG) in the archive',
      });
    }
    refuseOutputPattern(path, `sync destination "${text}"`, (plain) => `ferry sync SOURCE ${prefix}${plain} --volume-size SIZE`);
    return { path, format };
  }
  if (!ARCHIVE_SUFFIX.test(text)) return undefined;
  refuseOutputPattern(text, `sync destination "${text}"`, (plain) => `ferry sync SOURCE ${plain} --volume-size SIZE`);
  return { path: text, format: 'docker' };
}

/** Whether a destination as written names an archive (what archiveDestination accepts), without looking at the disk. */
export function namesArchive(text: string): boolean {
  return text.startsWith('oci-archive:') || text.startsWith('docker-archive:') || ARCHIVE_SUFFIX.test(text);
}

/** Annotations an entry carries besides its names (the source index of a narrowed copy). */
function carried(a: Record<string, string> | undefined): Record<string, string> | undefined {
  if (!a) return undefined;
  const rest = { ...a };
  delete rest[ANNOTATION_REF_NAME];
  delete rest[ANNOTATION_IMAGE_NAME];
  return Object.keys(rest).length ? rest : undefined;
}

/**
 * A sync into an archive file. The archive itself says what the last run wrote (its index.json
 * names and digests; the state file keeps a copy, trusted while the file is unchanged), so a run
 * where nothing changed upstream HEADs each tag and writes nothing. Otherwise changed images are
 * first copied into a staging layout beside the archive (`.NAME.ferry-sync/`), each on its own,
 * so one that fails leaves the others and the old version of itself; blobs the old archive holds
 * are not downloaded again. The archive is then written
 * anew (kept images from the old archive, changed ones from the staging layout; every blob
 * verified on the way) and renamed over the old one. A lock file beside it keeps two runs apart.
 * With a volume size the archive is a volume set beside `path` (NAME.001.tar, …), read back as one
 * archive and replaced as a whole through a journal (set-journal.ts).
 */
export async function archiveTarget(dest: ArchiveDestination, src: Reference, o: SyncOptions, sel: string): Promise<Target> {
  const { path, volumeSize } = dest;
  const file = volumeSize === undefined ? singleFile(path, o.signal) : volumeSet(path, volumeSize, o.signal);
  const repo = repositoryName(src);
  const nameFor = (tag: string): TagName => ({ tag, name: `${repo}:${tag}` });
  const dir = dirname(path);
  const stageDir = join(dir, `.${basename(path)}.ferry-sync`);
  let release: (() => Promise<void>) | undefined;
  // Checked in dry runs too (the run would refuse it before moving anything); the lock is not
  // taken there: a dry run must not hold up a real one.
  await access(dir, constants.W_OK).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw missingDirectory(path);
    throw new FerryError('IO', `cannot write ${path}: ${dir} is not writable (${e.code})`);
  });
  await refusePseudoFilesystem(dir, path);
  if (!o.dryRun) release = await acquireLock(`${stageDir}.lock`, { timeoutMs: lockTimeoutFromEnv(), signal: o.signal });
  try {
    await file.prepare(!o.dryRun);
  } catch (e) {
    await release?.();
    throw e;
  }
  // Opened when needed: a run that trusts the state file and finds nothing changed never reads it.
  let opening: Promise<ArchiveSource | undefined> | undefined;
  const openOld = () =>
    (opening ??= file.open().catch((e: unknown) => {
      if (isFerryError(e, 'NOT_FOUND')) return undefined;
      throw e;
    }));
  // The archive's tags of this repository and the source digest each was copied from, as the
  // last run recorded them, if the file is still the one it wrote or read (same inode, size,
  // mtime and ctime). Reading them from the archive means decompressing a compressed one whole.
  const state = await SyncState.open(`archive:${resolve(path)}#${repo}`);
  const stamp = await file.stamp();
  // Recorded under another --platform selection: the archive's own annotations decide.
  const trusted = o.state !== false && stamp !== undefined && state.stamp === stamp && (state.platforms ?? sel) === sel;
  let current: Map<string, Digest>;
  let present: Set<string>;
  let selections = new Map<string, EntrySelection>();
  if (trusted) {
    current = new Map(state.all());
    present = new Set(current.keys());
    o.registry?.debug?.(`${path}: unchanged since the last run (state ${state.stamp}); its index is not read`);
  } else {
    let old: ArchiveSource | undefined;
    try {
      old = await openOld();
    } catch (e) {
      await release?.();
      throw e;
    }
    ({ current, present, selections } = archiveTags(old, repo));
  }

  // Every image of the archive by digest, referrers included (--referrers asks which it holds):
  // from the state while it vouches for the file, else from the archive's index.
  let roots: Promise<Set<string>> | undefined;
  const archiveRoots = () =>
    (roots ??= (async () => {
      if (trusted && state.roots) return new Set(state.roots);
      return new Set((await openOld())?.images().map((i) => i.ref) ?? []);
    })());
  let written: string[] = [];
  // The blobs of this run's images, known once the archive is written: moved unless the old archive held them.
  const blobs: Array<{ digest: Digest; size: number; moved: boolean }> = [];

  let staging: Promise<OciLayout> | undefined;
  const stage = () =>
    (staging ??= (async () => {
      if ((await stat(stageDir).catch(() => undefined)) && !(await isLayout(stageDir))) {
        throw new FerryError('USAGE', `${stageDir} exists and is not ferry's staging layout for ${path}`, { hint: 'move it away: sync stages changed images there' });
      }
      // Made or removed only in part by a killed run: no index to trust, its blobs are only a cache.
      if (!(await isWholeLayout(stageDir))) await rm(stageDir, { recursive: true, force: true });
      const layout = await OciLayout.open(stageDir, { create: true });
      // Names left by an interrupted run are dropped (they may be stale); its blobs are reused.
      await layout.untag(() => true);
      return layout;
    })());
  // Blobs the copies into the staging layout found in the old archive: held before this run.
  const heldBefore = new Set<Digest>();
  const inArchive = async (d: Descriptor) => {
    const held = !isManifestLike(d.mediaType) && (await openOld())?.has(d) === true;
    if (held) heldBefore.add(d.digest);
    return held;
  };
  const sink: Sink = o.dryRun
    ? dryRunSink(path, inArchive)
    : {
        caps: { concurrent: true, indexes: true },
        // A blob the archive holds is not downloaded again: the rewrite takes it from there.
        has: async (d) => (await inArchive(d)) || (await stage()).has(d),
        put: async (d, body, po) => (await stage()).put(d, body, po),
        resumable: async (d, ro) => (await stage()).resumable(d, ro),
        tag: async (root, name) => (await stage()).tag(root, name),
        commit: async () => (await stage()).commit(),
        close: async () => {},
      };

  /** The old archive's images that stay when those named `replaced` are written anew or pruned. */
  const keptRoots = (old: ArchiveSource | undefined, replaced: Set<string>): Root[] => {
    const kept: Root[] = [];
    for (const img of old?.images() ?? []) {
      const names = img.names.filter((n) => !n.name || !replaced.has(n.name));
      if (img.names.length > 0 && names.length === 0) continue;
      kept.push({ ref: img.ref, names, annotations: carried(img.annotations) });
    }
    return kept;
  };

  /** Writes the archive anew without the pruned tags and with what was staged (`fresh`); true if that left nothing. */
  const rewrite = async (r: SyncJobReport, layout: OciLayout | undefined, fresh: LayoutEntry[]) => {
    const old = await openOld();
    const replaced = new Set([...fresh.flatMap((e) => (e.name ? [e.name] : [])), ...r.pruned.map((t) => nameFor(t).name!)]);
    const kept = keptRoots(old, replaced);
    const added: Root[] = fresh.map((e) => ({
      ref: e.descriptor.digest,
      names: e.tag ? [{ tag: e.tag, name: e.name }] : [],
      annotations: carried(e.descriptor.annotations),
    }));
    written = [...kept, ...added].map((x) => x.ref);
    if (kept.length + added.length === 0) {
      // Every image was pruned: an archive cannot be empty, so there is none.
      await file.remove();
      return true;
    }
    o.onEvent?.({ type: 'writing', source: repo, path, kept: kept.length, added: added.length, volumeSize });
    const archive = new ArchiveSink(await file.writer(), { format: dest.format, signal: o.signal });
    // Every blob of the new images once (one copy): written now, or already by a kept image.
    const theirs: Array<{ digest: Digest; size: number }> = [];
    const note = (e: CopyEvent) => {
      if (e.type === 'blob-done' || e.type === 'blob-skip') theirs.push(e);
    };
    try {
      // Kept images first, in the old archive's order: a compressed archive is read in one pass.
      if (kept.length) await copy(old!, archive, kept, { signal: o.signal });
      if (added.length) await copy(stagedSource(layout!, old), archive, added, { signal: o.signal, onEvent: note });
      await archive.close();
    } catch (e) {
      await archive.abort().catch(() => {});
      throw e;
    }
    for (const d of theirs) blobs.push({ digest: d.digest, size: d.size, moved: !heldBefore.has(d.digest) });
    return false;
  };

  return {
    sink,
    label: path,
    nameFor,
    batchCommits: !o.dryRun,
    currentDigest: async (tag) => current.get(tag),
    expected: (tag) => current.get(tag),
    remember: () => {},
    selection: (tag) => selections.get(tag),
    holds: async (d) =>
      (await archiveRoots()).has(d.digest) || (staging !== undefined && (await (await staging).entries()).some((e) => e.descriptor.digest === d.digest)),
    tags: async () => [...present],
    blobs: () => blobs,
    // Dropped by finish(), which writes the archive without them.
    prune: async () => [],
    // A volume set: the volumes the planned rewrite would be written as, measured by walking it
    // (the old set's kept images, then the new ones as the dry run copied them) through the writer.
    async planArchive(r, upstream) {
      if (volumeSize === undefined || r.copied.length + r.newReferrers.length + r.pruned.length === 0) return undefined;
      const old = await openOld();
      const replaced = new Set([...upstream.roots.flatMap((x) => (x.names ?? []).flatMap((n) => (n.name ? [n.name] : []))), ...r.pruned.map((t) => nameFor(t).name!)]);
      const kept = keptRoots(old, replaced);
      const measure: MeasuredFile[] = [];
      const compression = compressionForPath(path);
      const writer = await VolumeWriter.create(path, { compression, force: true, volumeSize, measure });
      const archive = new ArchiveSink(writer, { format: dest.format, signal: o.signal });
      try {
        if (kept.length) await copy(old!, archive, kept, { signal: o.signal, dryRun: true });
        if (upstream.roots.length) await copy(upstream.source, archive, upstream.roots, { ...upstream.options, dryRun: true });
        await archive.close();
      } catch (e) {
        await archive.abort().catch(() => {});
        throw e;
      }
      return measure.length ? archivePlan(measure, { compression, volumeSize }) : undefined;
    },
    async finish(r) {
      const layout = staging ? await staging : undefined;
      try {
        const fresh = layout ? await layout.entries() : [];
        r.rewritten = fresh.length > 0 || r.pruned.length > 0;
        if (r.rewritten) {
          const removed = await rewrite(r, layout, fresh);
          o.onEvent?.({ type: 'written', source: repo, path, removed, ...(volumeSize !== undefined && !removed ? { volumes: (await existingVolumes(path)).map((f) => basename(f)) } : {}) });
          for (const t of r.pruned) current.delete(t);
          for (const e of fresh) {
            if (e.tag && e.name === nameFor(e.tag).name) current.set(e.tag, (e.descriptor.annotations?.[ANNOTATION_SOURCE_INDEX] ?? e.descriptor.digest) as Digest);
          }
          for (const t of r.pruned) present.delete(t);
          for (const t of current.keys()) present.add(t);
        }
        if (volumeSize !== undefined) r.volumes = await existingVolumes(path);
        // Recorded only when every tag has its digest (an image known only from a docker
        // manifest.json has none until the archive is written anew): else the archive is read again.
        if (r.rewritten || !trusted) {
          const complete = [...present].every((t) => current.has(t));
          state.reset(current, complete ? await file.stamp() : undefined);
          state.platforms = sel;
          state.roots = r.rewritten ? written : [...(await archiveRoots())];
          await state.save();
        } else if (state.roots === undefined && roots) {
          // A state file older than the field: what this run read from the archive is kept.
          state.roots = [...(await roots)];
          await state.save();
        }
      } catch (e) {
        const err = toFerryError(e);
        // Nothing of this run reached the archive: say so rather than count the tags as copied.
        r.copied.length = 0;
        r.newReferrers.length = 0;
        r.pruned.length = 0;
        r.rewritten = false;
        // A volume set whose switch was cut short is completed by the next run (see set-journal.ts).
        if (volumeSize !== undefined && (await stat(journalPath(path)).catch(() => undefined))) {
          throw new FerryError(err.code, `the volumes of ${path} were being switched to the new set when this happened: ${err.message}`, {
            cause: e,
            hint: 'the next sync completes the switch before anything else; until then verify and load refuse the mixed files',
          });
        }
        throw new FerryError(err.code, `${path} was left as it was: ${err.message}`, { cause: e, hint: err.hint });
      }
    },
    async close() {
      await (await opening?.catch(() => undefined))?.close();
      const layout = await staging?.catch(() => undefined);
      await layout?.close();
      // Only a layout: whatever else has this name is not ours to delete.
      if (!o.dryRun && (await isLayout(stageDir))) await rm(stageDir, { recursive: true, force: true });
      await release?.();
    },
  };
}

/**
 * A layout, or one whose creation or removal was cut short: nothing in it but what ferry's layouts
 * hold (blobs/, index.json and its lock, oci-layout, temp files and writer markers).
 */
async function isLayout(dir: string): Promise<boolean> {
  if ((await stat(join(dir, 'oci-layout')).catch(() => undefined))?.isFile()) return true;
  const names = await readdir(dir).catch(() => undefined);
  return names !== undefined && names.every((n) => LAYOUT_NAMES.has(n) || n.startsWith(TEMP_PREFIX) || n.startsWith('.ferry-writer-'));
}

const LAYOUT_NAMES = new Set(['blobs', 'index.json', 'index.json.lock', 'oci-layout']);

async function isWholeLayout(dir: string): Promise<boolean> {
  const isFile = async (name: string) => (await stat(join(dir, name)).catch(() => undefined))?.isFile() === true;
  return (await isFile('oci-layout')) && (await isFile('index.json'));
}

/** How the destination is kept on disk: one archive file, or a set of volumes. */
interface ArchiveFiles {
  /** Checks (and, when `writing`, completes an interrupted switch of a set) before anything is read. */
  prepare(writing: boolean): Promise<void>;
  /** The archive as it is now; NOT_FOUND when there is none. */
  open(): Promise<ArchiveSource>;
  /** Its identity: changes whenever any of its files is rewritten, replaced or edited. */
  stamp(): Promise<string | undefined>;
  /** Where the new archive is written: put in place only when complete. */
  writer(): Promise<EntryWriter>;
  remove(): Promise<void>;
}

function singleFile(path: string, signal: AbortSignal | undefined): ArchiveFiles {
  return {
    prepare: async () => {},
    open: () => ArchiveSource.open(path, { signal }),
    stamp: () => stampOf(path),
    writer: async () => new SingleWriter(await ArchiveOutput.toFile(path, { compression: compressionForPath(path), force: true })),
    async remove() {
      await unlink(path).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
      await syncDir(dirname(path));
    },
  };
}

/**
 * `path` names a volume set: NAME.001.tar, NAME.002.tar, … beside it (compressed ones each on
 * their own, as save writes them). A new set is put in place through a journal (set-journal.ts).
 */
function volumeSet(path: string, volumeSize: number, signal: AbortSignal | undefined): ArchiveFiles {
  return {
    async prepare(writing) {
      if ((await stat(path).catch(() => undefined))?.isFile()) {
        throw new FerryError('USAGE', `${path} is one archive file, but --volume-size keeps the destination as volumes (${basename(volumePath(path, 1))}, …) beside it`, {
          hint: 'drop --volume-size to keep updating that file, or move it away to start a volume set',
        });
      }
      if (writing && (await completeInterruptedSwitch(path))) warn(`completed the switch of ${path}'s volumes to the set an interrupted run had written`);
      else if (!writing && (await stat(journalPath(path)).catch(() => undefined))) {
        warn(`${path}: an interrupted run left its volumes half switched to a new set; a dry run reads them as they are, and the next sync completes the switch`);
      }
    },
    async open() {
      const files = await existingVolumes(path);
      if (files.length === 0) throw new FerryError('NOT_FOUND', `${path}: no volumes`);
      return ArchiveSource.openSet(files, { signal }).catch((e: unknown) => {
        const err = toFerryError(e);
        if (err.code === 'IO' || err.code === 'ABORTED' || err.code === 'INTERNAL') throw e;
        throw new FerryError(err.code, `${path}: ${files.map((f) => basename(f)).join(', ')} are not one complete volume set: ${err.message}`, {
          cause: e,
          hint: `check them with ferry verify; move them away to have sync write the set anew`,
        });
      });
    },
    async stamp() {
      const files = await existingVolumes(path);
      if (files.length === 0) return undefined;
      const each = await Promise.all(files.map(async (f) => `${basename(f)}=${await stampOf(f)}`));
      return each.join(' ');
    },
    writer: () => VolumeWriter.create(path, { compression: compressionForPath(path), force: true, volumeSize, publish: (set, files) => replaceSet(path, set, files) }),
    remove: () => removeSet(path),
  };
}

/** An archive file's identity: a rewrite, a copy put in its place or an edit all change it. */
async function stampOf(path: string): Promise<string | undefined> {
  const st = await stat(path, { bigint: true }).catch(() => undefined);
  return st?.isFile() ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : undefined;
}

/**
 * This repository's tags in an archive, and the source digest each was copied from (an entry only
 * in a docker manifest.json has no digest to compare: it is copied again, once).
 */
function archiveTags(old: ArchiveSource | undefined, repo: string): { current: Map<string, Digest>; present: Set<string>; selections: Map<string, EntrySelection> } {
  const present = new Set<string>();
  const current = new Map<string, Digest>();
  const selections = new Map<string, EntrySelection>();
  for (const img of old?.images() ?? []) {
    for (const n of img.names) {
      if (!n.name?.startsWith(`${repo}:`)) continue;
      present.add(n.tag);
      if (img.from === 'index.json') {
        current.set(n.tag, (img.annotations?.[ANNOTATION_SOURCE_INDEX] ?? img.ref) as Digest);
        selections.set(n.tag, entrySelection(img.annotations));
      }
    }
  }
  return { current, present, selections };
}

/** The staging layout's images, with blobs it left to the old archive read from there. */
function stagedSource(layout: OciLayout, old: ArchiveSource | undefined): Source {
  return {
    resolve: (ref) => layout.resolve(ref),
    fetch: async (d, fo) => (old?.has(d) && !(await layout.has(d)) ? old.fetch(d, fo) : layout.fetch(d, fo)),
    close: async () => {},
  };
}
