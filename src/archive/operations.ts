import { dirname } from 'node:path';
import { tmpdir } from 'node:os';
import type { Writable } from 'node:stream';
import { copy, type CopiedImage, type CopyEvent, type CopyReport } from '../copy.js';
import { archivePlan, checkMedia, PlanBuilder, type Plan } from '../plan.js';
import { FerryError, toFerryError } from '../errors.js';
import { explainDiskFull, fileSizeCap } from '../util/space.js';
import { humanSize } from '../progress/format.js';
import { warn } from '../log.js';
import { OciLayout } from '../locations/layout.js';
import { openSource, type OpenedSource, type RegistrySettings } from '../locations/location.js';
import type { Digest } from '../oci/digest.js';
import type { PlatformSelection } from '../oci/platform.js';
import { defaultStoreDir, movedNames, newStoreName, type MovedName } from '../store.js';
import { buildGraph, type DeltaCheck } from './graph.js';
import { ingestArchive, type IngestEvent, type IngestReport } from './ingest.js';
import { ArchiveOutput, checkOutputDir, type ArchiveCompression, type MeasuredFile } from './output.js';
import { outputCompression } from '../blob/compression.js';
import { archiveFiles, refuseOutputPattern } from './patterns.js';
import { RecompressSource, type LayerCompressionTarget } from './recompress.js';
import { Reporter, type ArchiveProblem } from './report.js';
import { everyVolumeHint, NullTarget, orderInputs, readVolumeHeader, scanArchive, type ArchiveInput, type ScanState } from './scan.js';
import { ArchiveSource } from './source.js';
import { describeVolume, listNumbers, VolumeWriter, volumePath } from './volumes.js';
import { ArchiveSink, SingleWriter, type ArchiveFormat, type EntryWriter } from './writer.js';

export interface SaveOptions {
  /** Locations: store names, `oci:DIR[:TAG]`, `docker://…`, other archives. */
  images: string[];
  /** A file, or `-` for `stdout`. */
  output: string;
  /** `docker` (default): also loadable by docker load. `oci`: a pure OCI archive. */
  format?: ArchiveFormat;
  /** Whole-archive compression; default from the output's suffix (none for `-`). */
  compression?: ArchiveCompression;
  level?: number;
  /** Recompress layers (changes layer and manifest digests). */
  compressLayers?: LayerCompressionTarget;
  /** Cut the archive into volumes of at most this many bytes. */
  volumeSize?: number;
  force?: boolean;
  platforms?: PlatformSelection;
  storeDir?: string;
  registry?: RegistrySettings;
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
  /** Where `-` writes (default process.stdout). */
  stdout?: Writable;
  /** Blobs the receiving side already has (from an inventory): left out of the archive; configs and manifests always go in. */
  exclude?: ReadonlySet<Digest>;
  /** What the inventory behind `exclude` recorded (its sources and date): kept in the delta's index.json. */
  deltaBase?: string;
  /** Size of the medium the archive is for: a save that would not fit is refused before writing. */
  media?: number;
}

export interface SaveReport {
  /** The files written (one, or the volumes), or `-`. */
  files: string[];
  images: CopiedImage[];
  /** Layers and configs written (each once): a dry run's `blobs`. */
  blobs: { count: number; bytes: number };
  /** Manifests and indexes written: a dry run's `manifests`. */
  manifests: { count: number; bytes: number };
}

/**
 * `ferry save`: copies images from any locations into one archive (or a set of volumes) through
 * the copy engine, each blob streamed into the tar once. The archive appears only when complete.
 * With `media`, the save is planned first and refused if it would not fit.
 */
export async function saveImages(o: SaveOptions): Promise<SaveReport> {
  if (o.media !== undefined) checkMedia(await planSave(o));
  await checkFileSizeCap(o);
  const report: SaveReport = { files: [], images: [], blobs: { count: 0, bytes: 0 }, manifests: { count: 0, bytes: 0 } };
  await runSave(o, (i, r) => {
    for (const img of r.images) report.images.push({ ...img, ref: o.images[i]! });
  }, (files, contents) => Object.assign(report, { files }, contents));
  return report;
}

/**
 * A FAT32 stick holds no file of 4 GiB or more: such a save used to fail there after writing 4 GiB.
 * Refused before anything is written when the archive is over the cap (uncompressed: its size is
 * known from the manifests); a compressed archive is only known when written.
 */
async function checkFileSizeCap(o: SaveOptions): Promise<void> {
  // Volumes are checked against the cap where a set is opened (VolumeWriter.create), for sync too.
  if (o.output === '-' || o.volumeSize !== undefined || outputCompression(o.output, o.compression) !== 'none') return;
  const cap = await fileSizeCap(o.output);
  if (!cap) return;
  const bytes = (await planSave(o)).archive?.bytes ?? 0;
  if (bytes > cap.bytes) {
    throw new FerryError('TOO_LARGE', `${o.output} would be ${humanSize(bytes)} (${bytes} bytes), but ${cap.mount} is ${cap.fs} and holds at most ${cap.bytes} bytes in one file; nothing was written`, {
      hint: `cut it into volumes with --volume-size 4G (each at most ${cap.bytes} bytes), or write to another filesystem (exFAT, ext4)`,
    });
  }
}

/**
 * `ferry save --dry-run`: the same save, walked through the same archive writer, with outputs
 * that only count. Reads manifests, never blobs; writes nothing. Volume count and sizes are those
 * a real save produces (sizes as tar bytes before compression).
 */
export async function planSave(o: SaveOptions): Promise<Plan> {
  if (o.compressLayers) {
    throw new FerryError('USAGE', '--dry-run cannot plan --compress-layers: the new layer sizes are known only after recompressing them');
  }
  const measure: MeasuredFile[] = [];
  const plan = new PlanBuilder();
  const destination = o.output === '-' ? '-' : o.output;
  await runSave({ ...o, measure }, (i, r) => plan.add(destination, o.images[i]!, r));
  const compression = outputCompression(o.output, o.compression);
  return plan.build('save', archivePlan(measure, { compression, volumeSize: o.volumeSize, media: o.media }));
}

/**
 * Two different images under one name would give index.json the one and manifest.json both, an
 * archive that its own verify refuses. The same image twice is harmless and stored once.
 */
function refuseNameClash(named: Map<string, { digest: string; image: string }>, img: CopyReport['images'][number], image: string): void {
  for (const n of img.names) {
    const name = n.name ?? n.tag;
    const before = named.get(name);
    if (before && before.digest !== img.digest) {
      throw new FerryError('USAGE', `two different images would both be named ${name} in the archive: ${before.digest} (from ${before.image}) and ${img.digest} (from ${image})`, {
        hint: 'save them into separate archives, or give one of them another name first (ferry tag)',
      });
    }
    named.set(name, { digest: img.digest, image });
  }
}

async function runSave(
  o: SaveOptions & { measure?: MeasuredFile[] },
  onCopied: (image: number, r: CopyReport) => void,
  onFiles?: (files: string[], contents: ReturnType<ArchiveSink['contents']>) => void,
): Promise<void> {
  if (o.images.length === 0) throw new FerryError('USAGE', 'name at least one image to save');
  if (o.output !== '-') refuseOutputPattern(o.output, `-o ${o.output}`, (plain) => `-o ${plain} --volume-size SIZE`);
  const compression = outputCompression(o.output, o.compression);
  if (o.level !== undefined && compression === 'none') {
    throw new FerryError('USAGE', `--level ${o.level} sets a compression level, but ${o.output === '-' ? 'the output' : o.output} is not compressed`, {
      hint: 'name the file .tar.gz or .tar.zst, or pass --compress gzip|zstd',
    });
  }
  if (o.compressLayers && !o.measure) {
    warn(`--compress-layers ${o.compressLayers}: layers are recompressed, so layer digests, manifest digests and image digests CHANGE (diff_ids do not); signatures and digest references will not match the saved images`);
  }
  const ctx = { storeDir: o.storeDir ?? defaultStoreDir(), signal: o.signal, registry: o.registry };
  const opened: OpenedSource[] = [];
  let sink: ArchiveSink | undefined;
  try {
    for (const image of o.images) {
      const src = await openSource(image, ctx);
      opened.push(src);
      if (o.compressLayers) {
        src.source = new RecompressSource(src.source, {
          compression: o.compressLayers,
          tempDir: o.output === '-' ? tmpdir() : dirname(o.output),
          platforms: o.platforms,
          signal: o.signal,
        });
      }
    }
    const out = { compression, level: o.level, force: o.force, measure: o.measure };
    let writer: EntryWriter;
    if (o.volumeSize !== undefined) {
      writer = await VolumeWriter.create(o.output, { ...out, volumeSize: o.volumeSize });
    } else if (o.output === '-') {
      writer = new SingleWriter(o.measure ? ArchiveOutput.measuring('-', out) : ArchiveOutput.toStream(o.stdout ?? process.stdout, out));
    } else {
      writer = new SingleWriter(await ArchiveOutput.toFile(o.output, out));
    }
    // A dry run fails where the real run could not create its first file (volumes share its directory).
    if (o.measure && o.output !== '-') await checkOutputDir(o.volumeSize !== undefined ? volumePath(o.output, 1) : o.output);
    sink = new ArchiveSink(writer, { format: o.format ?? 'docker', signal: o.signal, deltaBase: o.exclude ? o.deltaBase ?? 'an inventory' : undefined });
    const named = new Map<string, { digest: string; image: string }>();
    for (const [i, src] of opened.entries()) {
      const r = await copy(src.source, sink, [{ ref: src.ref, names: src.name ? [src.name] : [] }], {
        platforms: o.platforms,
        signal: o.signal,
        onEvent: o.onEvent,
        exclude: o.exclude,
        dryRun: o.measure !== undefined,
      });
      for (const img of r.images) refuseNameClash(named, img, o.images[i]!);
      onCopied(i, r);
    }
    o.signal?.throwIfAborted();
    await sink.close();
    onFiles?.(o.output === '-' ? ['-'] : sink.files, sink.contents());
  } catch (e) {
    await sink?.abort().catch(() => {});
    // A full disk the copy did not already explain (closing a volume, the index at the end).
    throw e instanceof FerryError ? e : await explainDiskFull(e);
  } finally {
    for (const s of opened) await s.source.close().catch(() => {});
  }
}

export interface LoadOptions {
  /** One archive, `-` for stdin, or all the volumes of a set (any order). */
  inputs: string[];
  storeDir?: string;
  /** NAME[:TAG] for the archive's only image. */
  tag?: string;
  signal?: AbortSignal;
  onEvent?: (e: IngestEvent) => void;
  /** Told of each name the load gave that was another image's until now. */
  onMoved?: (m: MovedName) => void;
}

/** `ferry load`: an archive of any supported format into the store, in one pass. */
export async function loadArchive(o: LoadOptions): Promise<IngestReport> {
  const tag = o.tag ? newStoreName(o.tag, '--tag') : undefined;
  if (o.tag && !tag) throw new FerryError('USAGE', `--tag ${o.tag}: give NAME[:TAG], not a digest`);
  // Several archives (not the volumes of one set) load one after another, each whole or not at all.
  const inputs = await expandPatterns(o.inputs);
  const grouped = inputs.length > 1 && !inputs.includes('-') ? await archiveGroups(inputs) : undefined;
  if (grouped) await refusePartialSets(grouped);
  const groups = grouped?.groups ?? [inputs];
  if (tag && groups.length > 1) throw new FerryError('USAGE', `--tag names one image, but ${groups.length} archives were given`, { hint: 'load them without --tag, then name the images with ferry tag' });
  const store = await OciLayout.open(o.storeDir ?? defaultStoreDir(), { create: true });
  const report: IngestReport = { images: [], blobs: { stored: 0, skipped: 0, bytesStored: 0 } };
  const before = o.onMoved ? await store.entries() : [];
  let group = 0;
  try {
    for (; group < groups.length; group++) {
      const r = await ingestArchive({ inputs: groups[group]!, sink: store, tag, signal: o.signal, onEvent: o.onEvent });
      report.images.push(...r.images);
      report.blobs.stored += r.blobs.stored;
      report.blobs.skipped += r.blobs.skipped;
      report.blobs.bytesStored += r.blobs.bytesStored;
    }
    if (o.onMoved) for (const m of movedNames(before, await store.entries(), report.images)) o.onMoved(m);
    return report;
  } catch (e) {
    if (group > 0) {
      const done = groups.slice(0, group).map((g) => g[0]).join(', ');
      const err = toFerryError(e);
      throw new FerryError(err.code, `${err.message} (${done} ${group === 1 ? 'was' : 'were'} loaded before it; nothing of ${groups[group]![0]} was)`, { hint: err.hint, cause: e });
    }
    // A refused load leaves no store behind where there was none.
    await store.discardIfCreatedEmpty();
    throw e;
  } finally {
    await store.close();
  }
}

/** A quoted pattern (`-i 'set.*.tar'`) is the volumes it names, as for copy, inspect and inventory. */
async function expandPatterns(paths: string[]): Promise<string[]> {
  return (await Promise.all(paths.map((p) => (p === '-' ? [p] : archiveFiles(p))))).flat();
}

/** Files given together, as groups: each volume set as one (in the order first seen), every other file on its own. */
interface Grouped {
  groups: string[][];
  /** The groups that are volume sets, and each volume file's number. */
  sets: string[][];
  volumeOf: Map<string, number>;
}

async function archiveGroups(paths: string[]): Promise<Grouped> {
  const groups: string[][] = [];
  const sets = new Map<string, string[]>();
  const volumeOf = new Map<string, number>();
  for (const p of paths) {
    const v = paths.length > 1 && p !== '-' ? await readVolumeHeader(p).catch(() => undefined) : undefined;
    if (v) {
      volumeOf.set(p, v.volume);
      const list = sets.get(v.set);
      if (list) list.push(p);
      else {
        const l = [p];
        sets.set(v.set, l);
        groups.push(l);
      }
    } else groups.push([p]);
  }
  return { groups, sets: [...sets.values()], volumeOf };
}

/**
 * For load: every set whole before anything is loaded. A set missing a volume that another set's
 * file has (vs2.005.tar among vs.*.tar) names that file: "volume 5 is missing" alone misled.
 */
async function refusePartialSets({ sets, volumeOf }: Grouped): Promise<void> {
  for (const set of sets) {
    const has = new Set(set.map((p) => volumeOf.get(p)));
    const stray = set.length > 1 ? sets.filter((s) => s !== set).flat().find((p) => !has.has(volumeOf.get(p))) : undefined;
    if (stray) {
      throw new FerryError('INVALID_INPUT', `${stray} belongs to another volume set than ${set[0]}, which lacks its own volume ${volumeOf.get(stray)}`, { hint: everyVolumeHint(set[0]!) });
    }
    await orderInputs(set);
  }
}

export interface ArchiveVerifyReport {
  /** What was verified: a file, or the volumes of a set. */
  target: string;
  files: string[];
  problems: ArchiveProblem[];
  notes: string[];
  images: number;
  blobs: number;
  bytes: number;
  /** Volumes of the set were not given: the problems may be only that. */
  incomplete?: boolean;
  /** A delta archive (save --exclude-from): the blobs its images need that it leaves out, and what it was made against. */
  delta?: { leftOut: number; base: string };
}

/**
 * `ferry verify FILE…` for archives: every blob's size and digest, diff_ids of layers, the graph's
 * completeness, index.json against manifest.json, and for volumes each one against its own list.
 * Every problem is reported. Several files: the volumes of one set, or independent archives.
 */
export async function verifyArchives(paths: string[], o: { signal?: AbortSignal; storeDir?: string } = {}): Promise<ArchiveVerifyReport[]> {
  const { groups } = await archiveGroups(await expandPatterns(paths));
  // A delta's left-out blobs are looked for in the store, when there is one.
  const store = o.storeDir ? await OciLayout.open(o.storeDir).catch(() => undefined) : undefined;
  const verifyDelta: DeltaCheck = store ? { store: { has: (d) => store.has(d), where: store.dir } } : {};
  try {
    const out: ArchiveVerifyReport[] = [];
    const others = await otherSets(groups);
    for (const g of groups) {
      const report = await verifyOne(g, verifyDelta, o.signal);
      // Only where it explains why a set lacks volumes.
      const note = others.get(g);
      if (note && report.incomplete) report.notes.unshift(note);
      out.push(report);
    }
    return out;
  } finally {
    await store?.close();
  }
}

/**
 * Volumes of several sets given together: each set is checked on its own, and a stray volume would
 * read as a set missing its other volumes. The sets after the first say whose they are not.
 */
async function otherSets(groups: string[][]): Promise<Map<string[], string>> {
  const notes = new Map<string[], string>();
  // One group has no other; standard input must not be read before its scan.
  if (groups.length < 2) return notes;
  let first: string | undefined;
  for (const g of groups) {
    if (g.length === 0 || g[0] === '-' || !(await readVolumeHeader(g[0]!).catch(() => undefined))) continue;
    if (!first) first = g[0];
    else notes.set(g, `${g.join(', ')} ${g.length === 1 ? 'is a volume' : 'are volumes'} of another set than ${first}: each set is checked on its own`);
  }
  return notes;
}

async function verifyOne(paths: string[], verifyDelta: DeltaCheck, signal?: AbortSignal): Promise<ArchiveVerifyReport> {
  const reporter = new Reporter('record');
  const report: ArchiveVerifyReport = { target: paths.length === 1 ? paths[0]! : `${paths.length} volumes (${paths[0]} …)`, files: paths, problems: reporter.problems, notes: reporter.notes, images: 0, blobs: 0, bytes: 0 };
  const count = (state: ScanState) => {
    for (const f of state.files.values()) {
      report.blobs++;
      report.bytes += f.size;
    }
  };
  let inputs: ArchiveInput[];
  try {
    inputs = await orderInputs(paths);
  } catch (e) {
    const err = toFerryError(e);
    // One file whose first entry cannot be read (corrupt gzip, not a tar): a problem of that file.
    const unreadable = paths.length === 1 && err.code !== 'USAGE' ? await readVolumeHeader(paths[0]!).then(() => undefined, (e2: unknown) => e2) : undefined;
    if (unreadable) {
      stoppedHere(unreadable, reporter);
      return report;
    }
    if (err.code !== 'INTEGRITY') throw e;
    // A missing volume: say which, then check each present volume against its own list.
    reporter.problem('volume', 'INTEGRITY', err.message);
    report.incomplete = true;
    inputs = [];
    for (const p of paths) {
      const v = await readVolumeHeader(p);
      inputs.push({ path: p, where: v ? describeVolume(v.volume, undefined, p) : p, volume: v });
    }
    inputs.sort((a, b) => (a.volume?.volume ?? 0) - (b.volume?.volume ?? 0));
    await checkEachVolume(inputs, reporter, count, signal);
    return report;
  }
  const target = new NullTarget();
  let reached = 0;
  let partial: ScanState | undefined;
  try {
    const state = await scanArchive(inputs, { target, reporter, signal, onInput: (i, st) => {
      reached = i;
      partial = st;
    } });
    partial = undefined;
    count(state);
    if (state.laterVolumesMissing) {
      // The images are described in the last volume: nothing more to check without it.
      report.incomplete = true;
      return report;
    }
    const graph = await buildGraph(state, target, reporter, { verifyDelta });
    report.images = graph.roots.length;
    if (graph.delta) report.delta = graph.delta;
  } catch (e) {
    stoppedHere(e, reporter);
    if (partial) count(partial);
    // A damaged volume ends the reading of the set (blobs run on across volumes), not the check
    // of the volumes after it: each is still checked against its own list.
    const rest = inputs.slice(reached + 1);
    if (partial && rest.length) {
      const later = listNumbers(rest.map((i) => i.volume?.volume ?? 0));
      reporter.note(`reading the set stopped in ${inputs[reached]!.where}: ${rest.length === 1 ? `volume ${later} was` : `volumes ${later} were each`} checked against its own list only`);
      await checkEachVolume(rest, reporter, count, signal);
    }
  }
  return report;
}

/** Volumes read on their own, each against its own list; a damaged one does not stop the others. */
async function checkEachVolume(inputs: ArchiveInput[], reporter: Reporter, count: (s: ScanState) => void, signal?: AbortSignal): Promise<void> {
  for (const input of inputs) {
    try {
      count(await scanArchive([input], { target: new NullTarget(), reporter, signal, separateVolumes: true }));
    } catch (e) {
      stoppedHere(e, reporter);
    }
  }
}

/**
 * An archive that could not be read to its end: a problem of that archive, so verify goes on with
 * the other files. I/O errors, interrupts and bugs still end the run.
 */
function stoppedHere(e: unknown, reporter: Reporter): void {
  const err = toFerryError(e);
  if (err.code === 'INTERNAL' || err.code === 'ABORTED' || err.code === 'IO' || err.code === 'NOT_FOUND') throw e;
  reporter.problem(err.code === 'INTEGRITY' || err.code === 'DIGEST_MISMATCH' || err.code === 'SIZE_MISMATCH' ? 'digest' : 'invalid', err.code, `${err.message} (reading stopped here)`);
}

export interface OpenedArchive {
  source: ArchiveSource;
  images: Array<{ ref: string; names: import('../types.js').TagName[] }>;
}

/**
 * An archive as a Source plus the list of its images, for pushing straight from it (`push --from`):
 * a plain tar is read in place, blob by blob, by byte range; a volume set is every volume's path.
 */
export async function openArchive(path: string | string[], o: { signal?: AbortSignal } = {}): Promise<OpenedArchive> {
  const source = await ArchiveSource.openFiles([path].flat(), o);
  return { source, images: source.images() };
}
