import { createReadStream, createWriteStream } from 'node:fs';
import { open, rename, stat, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { PassThrough, Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { peek, sniff, type Compression } from '../blob/compression.js';
import { readCapped, verifying } from '../blob/verify.js';
import { tempPathFor, withPath } from '../blob/publish.js';
import { ZstdDecompress } from '../blob/zstd-frames.js';
import { OciLayout } from '../locations/layout.js';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { MAX_JSON_BYTES, parseJson, type Descriptor } from '../oci/manifest.js';
import type { Sink } from '../types.js';
import { EarlySync } from '../blob/early-sync.js';
import { BackgroundPuts } from './background.js';
import { streamed } from '../util/memory.js';
import { Reporter } from './report.js';
import { EntryTap, type TapResult } from './tap.js';
import { cleanPath, readTar } from './tar.js';
import { describeVolume, listNumbers, parsePartName, siblingVolume, VOLUME_HEADER, VOLUME_TRAILER, type PartInfo, type VolumeEntry, type VolumeHeader, type VolumeTrailer } from './volumes.js';
import { zlib } from '../util/builtins.js';
import { mkdirs } from '../util/mkdirs.js';

/** Files this small are kept in memory (configs, legacy json, tiny layers); so are JSON files up to 4 MiB. */
const SMALL = 64 * 1024;
/** Total bytes kept in memory; past it, everything goes to the target at once. */
const KEEP_BUDGET = 256 * 1024 * 1024;
const METADATA = new Set(['index.json', 'manifest.json', 'repositories', 'oci-layout']);
const OCTET = 'application/octet-stream';

/** One regular file of the archive, hashed on the way in. */
export interface ScannedFile extends TapResult {
  path: string;
  /** Kept in memory (not yet written to the target). */
  bytes?: Buffer;
  /** Written to the target during the scan. */
  stored: boolean;
  /** Where it was read, for messages. */
  where: string;
}

export interface ScanState {
  /** Regular files by archive path. */
  files: Map<string, ScannedFile>;
  /** Symlinks and hardlinks by archive path: the raw target. */
  links: Map<string, { type: 'symlink' | 'hardlink'; linkname: string }>;
  /** Content by digest: `blobs/` entries (verified against their names) and hashed files. */
  byDigest: Map<Digest, ScannedFile>;
  /** Blobs whose content does not match their name: each reported once, here, and in byDigest never. */
  corrupt: Set<Digest>;
  /** Blobs a volume's list names that the volume lacks, and split blobs missing a part: reported by the scan. */
  lost: Set<Digest>;
  /** index.json, manifest.json, … that a volume's list says are corrupt or missing: reported by the scan. */
  damagedMeta: Set<string>;
  /** index.json, manifest.json, repositories, oci-layout. */
  meta: Map<string, Buffer>;
  /** Paths of the archive's inputs, for messages. */
  where: string;
  /** The last volume given is not the set's last: the archive was not read whole. */
  laterVolumesMissing?: boolean;
}

/**
 * Where scanned bytes go. `put` stores bytes of a known digest; `putComputed` stores bytes whose
 * digest is learnt as they pass (legacy `layer.tar`, `<id>.json`); `read` gives stored bytes back.
 */
export interface IngestTarget {
  has(d: { digest: Digest; size: number; mediaType?: string }): Promise<boolean>;
  put(d: Descriptor, body: Readable, signal?: AbortSignal): Promise<void>;
  putComputed(body: Readable, tap: EntryTap, signal?: AbortSignal): Promise<void>;
  read?(d: Descriptor): Promise<Buffer | undefined>;
  /**
   * Stores bytes held in memory in the background (BackgroundPuts), hashed again on the way when
   * `check`; `done` is called once stored. `settle` waits for all and throws the first failure.
   */
  putBytes(d: Descriptor, bytes: Buffer, o: PutBytesOptions): Promise<void>;
  settle(): Promise<void>;
  /** Manifests must wait for what they reference to be stored (a registry refuses them otherwise). */
  readonly ordered: boolean;
  /** Digests this ingest published (that were not there before). */
  readonly created: Set<Digest>;
}

export interface PutBytesOptions {
  signal?: AbortSignal;
  check?: boolean;
  done?: () => void;
}

const drain = () => new Writable({ highWaterMark: 1 << 20, write: (_c, _e, cb) => cb() });

/** Verification only: bytes are hashed and dropped. */
export class NullTarget implements IngestTarget {
  readonly created = new Set<Digest>();
  readonly ordered = false;
  async has(): Promise<boolean> {
    return false;
  }
  async putBytes(_d: Descriptor, _bytes: Buffer, o: PutBytesOptions): Promise<void> {
    o.done?.();
  }
  async settle(): Promise<void> {}
  async put(_d: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    await pipeline(body, drain(), { signal });
  }
  async putComputed(body: Readable, _tap: EntryTap, signal?: AbortSignal): Promise<void> {
    await pipeline(body, drain(), { signal });
  }
}

/** An OCI layout (the store): blobs are published atomically into it; hashed files are renamed into place. */
export class LayoutTarget implements IngestTarget {
  readonly created = new Set<Digest>();
  // Nothing is named before the commit writes index.json: blobs may land in any order.
  readonly ordered = false;
  private readonly background = new BackgroundPuts();
  private readonly dirs = new Map<string, Promise<void>>();
  constructor(readonly layout: OciLayout) {}

  async has(d: { digest: Digest; size: number; mediaType?: string }): Promise<boolean> {
    return this.background.has(d.digest) || this.layout.has({ mediaType: OCTET, ...d });
  }

  /** Bytes the caller's tap verifies; the scan reads on while the file is made durable and named. */
  async put(d: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    const dest = this.layout.blobPath(d.digest);
    await this.publishLater(await this.write(body, dest, dest, signal), d);
  }

  putBytes(d: Descriptor, bytes: Buffer, o: PutBytesOptions): Promise<void> {
    return this.background.add(d.digest, bytes.length, async () => {
      const dest = this.layout.blobPath(d.digest);
      await this.publish(await this.write(bytesOf(d, bytes, o), dest, dest, o.signal), d);
      o.done?.();
    });
  }

  settle(): Promise<void> {
    return this.background.settle();
  }

  async putComputed(body: Readable, tap: EntryTap, signal?: AbortSignal): Promise<void> {
    const dir = join(this.layout.dir, 'blobs', 'sha256');
    // The blob's name is not known until it is hashed: a failure names the directory it was going to.
    const tmp = await this.write(body, join(dir, 'incoming'), dir, signal);
    await this.publishLater(tmp, tap.result());
  }

  /** A temp file beside `dest` holding `body`, not yet durable (publish makes it so). */
  private async write(body: Readable, dest: string, where: string, signal?: AbortSignal): Promise<string> {
    const dir = dirname(dest);
    if (!this.dirs.has(dir)) this.dirs.set(dir, mkdirs(dir));
    await this.dirs.get(dir);
    const tmp = tempPathFor(dest);
    try {
      const file = createWriteStream(tmp, { flags: 'wx', mode: 0o644, highWaterMark: 1 << 20 });
      await pipeline(body, new EarlySync(file).counter(), file, { signal });
      return tmp;
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw withPath(e, where);
    }
  }

  /**
   * In the background: waiting for each file's fsync before reading the next entry left a load of
   * many layers idle a fifth of the time. A blob being stored already (twice in the archive) or
   * already in the layout is not stored again.
   */
  private async publishLater(tmp: string, d: { digest: Digest; size: number }): Promise<void> {
    try {
      if (this.background.has(d.digest)) await unlink(tmp);
      else await this.background.add(d.digest, 0, () => this.publish(tmp, d));
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
  }

  /** fsync, then the rename that names it: never a name on bytes that are not on disk. */
  private async publish(tmp: string, d: { digest: Digest; size: number }): Promise<void> {
    const dest = this.layout.blobPath(d.digest);
    try {
      const fh = await open(tmp, 'r');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (await this.layout.has({ mediaType: OCTET, ...d })) await unlink(tmp);
      else {
        await rename(tmp, dest);
        this.created.add(d.digest);
      }
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw withPath(e, dest);
    }
  }

  async read(d: Descriptor): Promise<Buffer | undefined> {
    const path = this.layout.blobPath(d.digest);
    const st = await stat(path).catch(() => undefined);
    if (!st || st.size !== d.size || d.size > MAX_JSON_BYTES) return undefined;
    return readCapped(verifying(createReadStream(path), d), d.size, `blob ${d.digest}`);
  }
}

/** Any other Sink (a registry): hashed files are spooled to a temp file, then sent verified. */
export class SinkTarget implements IngestTarget {
  readonly created = new Set<Digest>();
  readonly ordered = true;
  private readonly seen = new Set<Digest>();
  // As many uploads at once as the copy engine's default.
  private readonly background = new BackgroundPuts({ count: 4, bytes: 16 << 20 });
  constructor(readonly sink: Sink) {}

  async has(d: { digest: Digest; size: number; mediaType?: string }): Promise<boolean> {
    return this.seen.has(d.digest) || this.sink.has({ mediaType: OCTET, ...d });
  }

  async put(d: Descriptor, body: Readable, signal?: AbortSignal): Promise<void> {
    await this.sink.put(d, body, { signal });
    this.seen.add(d.digest);
    this.created.add(d.digest);
  }

  putBytes(d: Descriptor, bytes: Buffer, o: PutBytesOptions): Promise<void> {
    this.seen.add(d.digest);
    return this.background.add(d.digest, bytes.length, () => this.put(d, bytesOf(d, bytes, o), o.signal).then(o.done));
  }

  settle(): Promise<void> {
    return this.background.settle();
  }

  async putComputed(body: Readable, tap: EntryTap, signal?: AbortSignal): Promise<void> {
    const tmp = tempPathFor(join(tmpdir(), 'ferry-spool'));
    try {
      await pipeline(body, createWriteStream(tmp, { flags: 'wx', mode: 0o600 }), { signal });
      const r = tap.result();
      if (await this.has(r)) return;
      const d: Descriptor = { mediaType: OCTET, digest: r.digest, size: r.size };
      await this.put(d, verifying(createReadStream(tmp), d), signal);
    } finally {
      await unlink(tmp).catch(() => {});
    }
  }

  async read(d: Descriptor): Promise<Buffer | undefined> {
    const s = this.sink as unknown as { fetch?: (d: Descriptor) => Promise<Readable> };
    if (typeof s.fetch !== 'function' || d.size > MAX_JSON_BYTES) return undefined;
    return readCapped(verifying(await s.fetch(d), d), d.size, `blob ${d.digest}`).catch(() => undefined);
  }
}

function bytesOf(d: Descriptor, bytes: Buffer, o: PutBytesOptions): Readable {
  const body = Readable.from([bytes]);
  return o.check ? verifying(body, d) : body;
}

export function targetFor(sink: Sink): IngestTarget {
  return sink instanceof OciLayout ? new LayoutTarget(sink) : new SinkTarget(sink);
}

// --- inputs ---

/** An archive file (or `-` for stdin), decompressed by magic bytes. */
export interface ArchiveInput {
  path: string;
  /** How it is named in messages. */
  where: string;
  volume?: VolumeHeader;
}

function decodeError(e: unknown, c: Compression, where: string): unknown {
  if (e instanceof FerryError) return new FerryError(e.code, `${where}: ${e.message}`, { cause: e, hint: e.hint });
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'Z_BUF_ERROR') return new FerryError('INTEGRITY', `${where}: truncated ${c} data (unexpected end of file)`, { cause: e, hint: 'the file was cut short: copy it again' });
  if (typeof err?.code === 'string' && err.code.startsWith('Z_')) return new FerryError('INTEGRITY', `${where}: corrupt ${c} data (${err.message})`, { cause: e });
  return e;
}

/**
 * archiveBytes for a pass that mostly skips what it reads (indexing an archive, looking for its
 * names): no verifying stream sees those bytes, so they are reported here for the GC pacing
 * (memory.ts), or every decompressed buffer would wait for V8's own collection (+30 MiB).
 */
export async function* skimmedArchiveBytes(path: string, where: string, signal?: AbortSignal): AsyncGenerator<Buffer> {
  for await (const chunk of archiveBytes(path, where, signal)) {
    streamed(chunk.length);
    yield chunk;
  }
}

/** The decompressed bytes of an archive file or stdin. */
export async function* archiveBytes(path: string, where: string, signal?: AbortSignal, onRead?: (bytes: number) => void): AsyncGenerator<Buffer> {
  // 256 KiB reads: 1 MiB chunks outlived two minor GCs on their way into the store and waited for
  // majors (~30 per GiB loaded, 2 now; a 1 GiB load: user CPU 1.91 -> 1.45 s, RSS 86 -> 78 MiB).
  const raw: Readable = path === '-' ? process.stdin : createReadStream(path, { highWaterMark: 256 << 10, signal });
  const opened = await peek(raw, 6).catch((e: unknown) => {
    throw (e as NodeJS.ErrnoException).code === 'ENOENT' ? new FerryError('NOT_FOUND', `${path}: no such file`) : e;
  });
  const c = sniff(opened.head);
  if (c === 'bzip2' || c === 'xz') throw new FerryError('UNSUPPORTED', `${where}: ${c} compression is not supported (ferry reads plain, gzip and zstd archives)`);
  if (c === 'none') {
    for await (const chunk of opened.stream) {
      onRead?.((chunk as Buffer).byteLength);
      yield chunk as Buffer;
    }
    return;
  }
  const dec = c === 'gzip' ? zlib().createGunzip({ chunkSize: 1 << 17 }) : new ZstdDecompress();
  opened.stream.on('error', (e) => dec.destroy(e));
  if (onRead) opened.stream.on('data', (chunk: Buffer) => onRead(chunk.byteLength));
  opened.stream.pipe(dec);
  try {
    for await (const chunk of dec) yield chunk as Buffer;
  } catch (e) {
    throw decodeError(e, c, where);
  } finally {
    opened.stream.destroy();
  }
}

/** The bytes on disk of every input; undefined for standard input. */
async function inputSize(inputs: ArchiveInput[]): Promise<number | undefined> {
  if (inputs.some((i) => i.path === '-')) return undefined;
  let n = 0;
  for (const i of inputs) n += (await stat(i.path).catch(() => undefined))?.size ?? 0;
  return n;
}

/** Reads the first entry of a file, if it is a volume header. */
export async function readVolumeHeader(path: string): Promise<VolumeHeader | undefined> {
  const where = path;
  const it = readTar(archiveBytes(path, where), { where });
  try {
    const first = await it.next();
    if (first.done || cleanPath(first.value.name) !== VOLUME_HEADER || first.value.size > 4096) return undefined;
    const doc = parseJson(await readCapped(first.value.body(), 4096, where), `${where}: ${VOLUME_HEADER}`) as VolumeHeader;
    if (doc?.ferryVolume !== 1 || typeof doc.set !== 'string' || !Number.isInteger(doc.volume) || doc.volume < 1) {
      throw new FerryError('INVALID_INPUT', `${where}: invalid ${VOLUME_HEADER}`);
    }
    return doc;
  } finally {
    await it.return(undefined);
  }
}

/** An archive is a file: a directory given instead (often an OCI layout) gets told so, not EISDIR. */
export async function refuseDirectory(path: string): Promise<void> {
  if ((await stat(path).catch(() => undefined))?.isDirectory()) {
    throw new FerryError('USAGE', `${path} is a directory, not an archive`, {
      hint: `name a .tar, .tar.gz or .tar.zst file (or - for standard input); an OCI layout directory is read as oci:${path}[:TAG], e.g. with ferry copy`,
    });
  }
}

/** The hint for a set given in part, naming the files to give when their names follow the pattern. */
export function everyVolumeHint(path: string): string {
  // As the user named it, directory included: the hint is a command line to run again.
  const [a, b] = [siblingVolume(path, 1), siblingVolume(path, 2)];
  return `give every volume of the set${a && b ? `: -i ${a} -i ${b} … (any order)` : ' on the command line'}`;
}

/**
 * Orders the files of an archive. One file: itself. Several: they must be the volumes of one set
 * (any order); missing or repeated volumes are named, with `hint` (given a volume's path) saying
 * how to give them all to the command at hand. `-` (stdin) cannot be combined.
 */
export async function orderInputs(paths: string[], hint: (path: string) => string = everyVolumeHint): Promise<ArchiveInput[]> {
  if (paths.length === 0) throw new FerryError('USAGE', 'name an archive: -i FILE (or -i - for standard input)');
  for (const p of paths) if (p !== '-') await refuseDirectory(p);
  if (paths.length > 1 && paths.includes('-')) throw new FerryError('USAGE', 'standard input (-) cannot be combined with other files');
  if (paths.length === 1 && paths[0] === '-') return [{ path: '-', where: 'standard input' }];
  const vols: ArchiveInput[] = [];
  for (const p of paths) {
    const volume = await readVolumeHeader(p);
    if (!volume && paths.length === 1) return [{ path: p, where: p }];
    if (!volume) throw new FerryError('USAGE', `${p} is not a volume of a ferry archive set; give one archive, or all the volumes of one set`);
    vols.push({ path: p, where: p, volume });
  }
  const set = vols[0]!.volume!.set;
  const other = vols.find((v) => v.volume!.set !== set);
  if (other) throw new FerryError('INVALID_INPUT', `${other.path} belongs to another volume set than ${vols[0]!.path}`);
  vols.sort((a, b) => a.volume!.volume - b.volume!.volume);
  const max = vols.at(-1)!.volume!.volume;
  const missing: number[] = [];
  for (let n = 1; n <= max; n++) {
    const hits = vols.filter((v) => v.volume!.volume === n);
    if (hits.length > 1) throw new FerryError('USAGE', `volume ${n} given twice: ${hits.map((h) => h.path).join(', ')}`);
    if (hits.length === 0) missing.push(n);
  }
  if (missing.length) {
    const which = missing.length === 1 ? `volume ${missing[0]} of the set is` : `volumes ${listNumbers(missing)} of the set are`;
    throw new FerryError('INTEGRITY', `${which} missing (given: ${listNumbers(vols.map((v) => v.volume!.volume))})`, {
      hint: hint(vols[0]!.path),
    });
  }
  return vols.map((v) => ({ ...v, where: describeVolume(v.volume!.volume, max, v.path) }));
}

// --- the scan ---

/** What a scan reports as it goes: each blob (in the vocabulary of copies) and the archive bytes read. */
export type ScanEvent =
  | { type: 'blob-start' | 'blob-done' | 'blob-skip'; digest: Digest; size: number }
  | { type: 'blob-progress'; digest: Digest; bytes: number; size: number }
  /** Archive bytes read so far (compressed, as on disk), of `size` when known (not for stdin). */
  | { type: 'read'; bytes: number; size?: number };

export interface ScanOptions {
  target: IngestTarget;
  reporter: Reporter;
  signal?: AbortSignal;
  onEvent?: (e: ScanEvent) => void;
  /** Volumes read on their own (verify, when others are missing): parts are checked, not joined. */
  separateVolumes?: boolean;
  /** Called as each input starts, with the state so far (verify counts what was read before a failure). */
  onInput?: (index: number, state: ScanState) => void;
}

interface PendingBlob {
  info: PartInfo;
  next: number;
  feed: PassThrough;
  done: Promise<void>;
  failure?: unknown;
}

/** A volume's entry as read, against its list; `reported`: its corruption is already a problem. */
type SeenEntry = VolumeEntry & { reported?: boolean };

/** What a set's split blobs went through, so that each fault is reported once. */
interface SplitFaults {
  /** Blobs with a part a volume's list found corrupt or missing: the joined blob says nothing more. */
  parts: Set<Digest>;
  /** Blobs given up for a missing part: their later parts are only checked against their volume's list. */
  abandoned: Set<Digest>;
  /** Joined blobs whose content did not match: reported at the end, unless a part of them was. */
  mismatched: Array<{ blob: Digest; error: FerryError }>;
}

/**
 * Reads the archive once. Every `blobs/<alg>/<hex>` entry streams into the target through a check
 * against its name; every other file is hashed into the target under its computed digest (and
 * small ones are kept in memory); layers' decompressed digests are computed on the way. Volume
 * sets are read in order, parts of split blobs joined, and each volume checked against its list.
 */
export async function scanArchive(inputs: ArchiveInput[], o: ScanOptions): Promise<ScanState> {
  const state: ScanState = {
    files: new Map(),
    links: new Map(),
    byDigest: new Map(),
    corrupt: new Set(),
    lost: new Set(),
    damagedMeta: new Set(),
    meta: new Map(),
    where: inputs.length === 1 ? inputs[0]!.where : `${inputs[0]!.path} … (${inputs.length} volumes)`,
  };
  let kept = 0;
  let pending: PendingBlob | undefined;
  const faults: SplitFaults = { parts: new Set(), abandoned: new Set(), mismatched: [] };
  let lastTrailer: VolumeTrailer | undefined;
  const { reporter, target, signal } = o;
  const emit = o.onEvent ?? (() => {});
  const size = await inputSize(inputs);
  let read = 0;
  const onRead = o.onEvent ? (n: number) => emit({ type: 'read', bytes: (read += n), size }) : undefined;

  try {
    for (const [index, input] of inputs.entries()) {
      o.onInput?.(index, state);
      const seen: SeenEntry[] = [];
      let trailer: VolumeTrailer | undefined;
      const where = input.where;
      for await (const e of readTar(archiveBytes(input.path, where, signal, onRead), { where, signal })) {
        signal?.throwIfAborted();
        if (e.type === 'dir' || e.type === 'other') continue;
        const path = cleanPath(e.name);
        if (!path) {
          reporter.problem('invalid', 'INVALID_INPUT', `${where}: entry path escapes archive: ${JSON.stringify(e.name)}`, { path: e.name });
          continue;
        }
        if (e.type === 'symlink' || e.type === 'hardlink') {
          state.links.set(path, { type: e.type, linkname: e.linkname });
          continue;
        }
        if (trailer) reporter.problem('volume', 'INVALID_INPUT', `${where}: entries after ${VOLUME_TRAILER}`);
        if (!input.volume && path === VOLUME_HEADER) {
          // Only standard input gets here: files are recognised as volumes before the scan.
          const head = parseJson(await readCapped(e.body(), 4096, `${where}: ${path}`), `${where}: ${path}`) as Partial<VolumeHeader>;
          throw new FerryError('USAGE', `${where} is volume ${Number(head.volume) || '?'} of a ferry volume set; a set is read from its files, not from a stream`, {
            hint: 'give every volume of the set as a file: -i NAME.001.tar -i NAME.002.tar … (any order)',
          });
        }
        if (input.volume && (path === VOLUME_HEADER || path === VOLUME_TRAILER)) {
          const bytes = await readCapped(e.body(), 1 << 24, `${where}: ${path}`);
          if (path === VOLUME_TRAILER) trailer = parseJson(bytes, `${where}: ${VOLUME_TRAILER}`) as VolumeTrailer;
          continue;
        }
        if (METADATA.has(path)) {
          const body = e.body();
          try {
            const bytes = await readCapped(body, MAX_JSON_BYTES, `${where}: ${path}`);
            state.meta.set(path, bytes);
            seen.push({ name: path, size: bytes.length, digest: digestOf(bytes) });
          } catch (err) {
            body.destroy();
            reporter.error(err, 'invalid', { path });
          }
          continue;
        }

        const part = input.volume ? parsePartName(path) : undefined;
        if (part && o.separateVolumes) {
          await skipPart(e.body(), { path, seen, signal });
          continue;
        }
        if (part) {
          pending = await scanPart(part, e.body(), pending, { where, path, target, reporter, signal, seen, emit, state, faults });
          if (pending?.failure) break;
          continue;
        }

        const blob = /^blobs\/([^/]+)\/([^/]+)$/.exec(path);
        let expected: { digest: Digest; size: number } | undefined;
        if (blob) {
          try {
            expected = { digest: parseDigest(`${blob[1]}:${blob[2]}`, `${where}: entry ${path}`), size: e.size };
          } catch (err) {
            reporter.error(err, 'invalid', { path });
          }
        }
        const label = expected ? `blob ${expected.digest} (${where})` : `${path} (${where})`;
        const keepable = e.size <= MAX_JSON_BYTES && kept + e.size <= KEEP_BUDGET;
        const shown = expected && !keepable ? expected : undefined;
        const onProgress = shown ? (bytes: number) => emit({ type: 'blob-progress', ...shown, bytes }) : undefined;
        const tap = new EntryTap({ expected, where: label, diff: true, mode: reporter.mode, size: e.size, onProgress });
        const body = e.body();
        body.on('error', (err) => tap.destroy(err));
        const tapped = body.pipe(tap);
        let file: ScannedFile;
        if (keepable) {
          const bytes = await readCapped(tapped, e.size, label);
          const r = tap.result();
          const keep = e.size <= SMALL || bytes[0] === 0x7b || bytes[0] === 0x5b;
          file = { ...r, path, stored: false, where };
          if (keep) {
            file.bytes = bytes;
            kept += bytes.length;
          } else if (!r.mismatch && !(await target.has(r))) {
            const done = expected ? () => emit({ type: 'blob-done', ...expected! }) : undefined;
            await target.putBytes({ mediaType: OCTET, digest: r.digest, size: r.size }, bytes, { signal, done });
            file.stored = true;
          } else if (expected && !r.mismatch) emit({ type: 'blob-skip', ...expected });
        } else if (expected && (await target.has(expected))) {
          emit({ type: 'blob-skip', ...expected });
          await pipeline(tapped, drain(), { signal });
          file = { ...tap.result(), path, stored: true, where };
        } else if (expected) {
          emit({ type: 'blob-start', ...expected });
          await target.put({ mediaType: OCTET, ...expected }, tapped, signal);
          file = { ...tap.result(), path, stored: true, where };
          emit({ type: 'blob-done', ...expected });
        } else {
          await target.putComputed(tapped, tap, signal);
          file = { ...tap.result(), path, stored: true, where };
        }
        let reported = false;
        if (file.mismatch) {
          const kind = file.mismatch.code === 'SIZE_MISMATCH' ? 'size' : 'digest';
          // In a volume, said as its list would say it, and not again by the check against the list.
          if (input.volume && expected) {
            reporter.problem(kind, file.mismatch.code, `${where}: ${corruptEntry(`blob ${expected.digest}`, file, expected)}`, { digest: expected.digest, path, volume: input.volume.volume });
            reported = true;
          } else reporter.problem(kind, file.mismatch.code, file.mismatch.message, { digest: expected?.digest, path });
          if (expected) state.corrupt.add(expected.digest);
        }
        seen.push({ name: path, size: file.size, digest: file.digest, ...(reported ? { reported } : {}) });
        state.files.set(path, file);
        const known = expected ?? { digest: file.digest };
        if (!file.mismatch && !state.byDigest.has(known.digest)) state.byDigest.set(known.digest, file);
      }
      if (pending?.failure) throw pending.failure;
      if (input.volume) {
        checkVolume(input, trailer, seen, { reporter, state, faults });
        lastTrailer = trailer ?? lastTrailer;
      }
    }
    await target.settle();
  } finally {
    // Failed or not, nothing is still being written once the scan returns.
    await target.settle().catch(() => {});
    // Never leave a half-joined blob's temp file behind.
    if (pending) {
      pending.feed.destroy(new FerryError('INTEGRITY', `blob ${pending.info.blob} is incomplete`));
      await pending.done.catch(() => {});
    }
    for (const m of faults.mismatched) if (!faults.parts.has(m.blob)) reporter.problem('digest', m.error.code, m.error.message, { digest: m.blob });
  }
  const lastInput = inputs.at(-1)!;
  if (lastInput.volume && lastTrailer && lastTrailer.volumes === undefined && !o.separateVolumes) {
    state.laterVolumesMissing = true;
    reporter.problem('volume', 'INTEGRITY', `volume ${lastInput.volume.volume + 1} and later of the set are missing: ${basename(lastInput.path)} is not the last volume`, {
      hint: everyVolumeHint(lastInput.path),
    });
  }
  // A blob cut off by the missing volumes says nothing more.
  if (pending && !o.separateVolumes && !state.laterVolumesMissing) {
    giveUp(pending.info.blob, pending.next, pending.info.count, state.where, { reporter, state, faults });
  }
  return state;
}

/** Where a part's or a volume's faults are recorded, so that each is reported once. */
interface FaultContext {
  reporter: Reporter;
  state: ScanState;
  faults: SplitFaults;
}

/** Feeds one part of a split blob into the blob's verifying stream, opened at part 1. */
async function scanPart(
  info: PartInfo,
  body: Readable,
  pending: PendingBlob | undefined,
  c: FaultContext & { where: string; path: string; target: IngestTarget; signal?: AbortSignal; seen: SeenEntry[]; emit: (e: ScanEvent) => void },
): Promise<PendingBlob | undefined> {
  const wanted = pending?.info.blob === info.blob ? pending.next : 1;
  if (c.faults.abandoned.has(info.blob) || info.index !== wanted) {
    if (!c.faults.abandoned.has(info.blob)) {
      if (info.index < wanted) c.reporter.problem('volume', 'INTEGRITY', `${c.where}: part ${info.index} of blob ${info.blob} is out of order`, { digest: info.blob });
      else {
        // Parts before this one are missing: this blob cannot be joined, nor one left waiting for its next part; said once.
        if (pending && pending.info.blob !== info.blob) pending = await abandon(pending, c);
        if (pending) pending = await abandon(pending, c);
        else giveUp(info.blob, wanted, info.count, c.where, c);
      }
    }
    await skipPart(body, c);
    return pending;
  }
  if (info.index === 1) {
    if (pending) await abandon(pending, c);
    pending = await startBlob(info, c);
  }
  const p = pending!;
  const partTap = new EntryTap({ where: c.path });
  const into = new Writable({
    highWaterMark: 1 << 20,
    write: (chunk: Buffer, _e, cb) => {
      if (p.feed.write(chunk)) cb();
      else p.feed.once('drain', () => cb());
    },
  });
  try {
    await pipeline(body, partTap, into, { signal: c.signal });
  } catch (e) {
    p.failure ??= e;
    p.feed.destroy(e as Error);
    return p;
  }
  c.seen.push({ name: c.path, size: partTap.result().size, digest: partTap.result().digest });
  p.next++;
  if (info.index < info.count) return p;
  p.feed.end();
  await p.done.catch(() => {});
  return p.failure ? p : undefined;
}

/** Opens the verifying stream of a split blob at its first part. */
async function startBlob(info: PartInfo, c: FaultContext & { where: string; target: IngestTarget; signal?: AbortSignal; emit: (e: ScanEvent) => void }): Promise<PendingBlob> {
  const feed = new PassThrough({ highWaterMark: 1 << 20 });
  const blob = { digest: info.blob, size: info.blobSize };
  const has = await c.target.has(blob);
  const tap = new EntryTap({
    expected: blob,
    where: `blob ${info.blob} (split into ${info.count} parts across volumes, from ${c.where} on)`,
    diff: true,
    mode: c.reporter.mode,
    onProgress: has ? undefined : (bytes) => c.emit({ type: 'blob-progress', ...blob, bytes }),
  });
  feed.on('error', (e) => tap.destroy(e));
  c.emit({ type: has ? 'blob-skip' : 'blob-start', ...blob });
  const tapped = feed.pipe(tap);
  // Its consumer reports the error (p.done). Without a listener of its own, a feed destroyed
  // before the consumer had attached (a set missing its last volume) made pipe() re-emit the
  // error with nobody listening: an uncaught exception, a stack trace, and a store left locked.
  tap.on('error', () => {});
  const p: PendingBlob = { info, next: 1, feed, done: Promise.resolve() };
  p.done = (has ? pipeline(tapped, drain(), { signal: c.signal }) : c.target.put({ mediaType: OCTET, digest: info.blob, size: info.blobSize }, tapped, c.signal)).then(() => {
    const r = tap.result();
    const [alg, hex] = info.blob.split(':');
    // Listed like a blob entry, so that manifest.json finds it (and sees it is corrupt); by digest only when whole.
    const file: ScannedFile = { ...r, path: `blobs/${alg}/${hex}`, stored: true, where: c.where };
    c.state.files.set(file.path, file);
    if (r.mismatch) {
      // Said at the end of the scan, unless a volume's list finds the part that is wrong.
      c.faults.mismatched.push({ blob: info.blob, error: r.mismatch });
      c.state.corrupt.add(info.blob);
    } else if (!c.state.byDigest.has(info.blob)) c.state.byDigest.set(info.blob, file);
    if (!has) c.emit({ type: 'blob-done', ...blob });
  });
  p.done.catch((e: unknown) => (p.failure ??= e));
  return p;
}

/** A split blob that cannot be joined for a missing part: said once (unless a volume's list named the part), then given up. */
function giveUp(blob: Digest, part: number, count: number, where: string, c: FaultContext): void {
  if (!c.faults.parts.has(blob)) c.reporter.problem('volume', 'INTEGRITY', `${where}: blob ${blob} is incomplete: part ${part} of ${count} is missing`, { digest: blob });
  c.faults.abandoned.add(blob);
  c.state.lost.add(blob);
}

/** Gives up the blob being joined: its next part never came. */
async function abandon(p: PendingBlob, c: FaultContext & { where: string }): Promise<undefined> {
  giveUp(p.info.blob, p.next, p.info.count, c.where, c);
  p.feed.destroy(new FerryError('INTEGRITY', `blob ${p.info.blob} is incomplete`));
  await p.done.catch(() => {});
  return undefined;
}

/** Reads a part without joining it: only checked against its volume's list. */
async function skipPart(body: Readable, c: { path: string; seen: SeenEntry[]; signal?: AbortSignal }): Promise<void> {
  const t = new EntryTap({ where: c.path });
  await pipeline(body, t, drain(), { signal: c.signal });
  c.seen.push({ name: c.path, size: t.result().size, digest: t.result().digest });
}

/** `blob sha256:… corrupt (content hashes to …; expected …)`, as a volume's check says it. */
function corruptEntry(what: string, have: { digest: Digest; size: number }, want: { digest: Digest; size: number }): string {
  return `${what} corrupt (content hashes to ${have.digest}, ${have.size} bytes; expected ${want.digest}, ${want.size} bytes)`;
}

/**
 * Compares what a volume held with the list its trailer gives. What the scan already reported (a
 * blob entry that does not match its name) is not reported again; what it finds is recorded for
 * the joined blobs and the graph, which then say nothing more about it.
 */
function checkVolume(input: ArchiveInput, trailer: VolumeTrailer | undefined, seen: SeenEntry[], c: FaultContext): void {
  const { reporter } = c;
  const where = input.where;
  const volume = input.volume!.volume;
  if (!trailer) {
    reporter.problem('volume', 'INTEGRITY', `${where}: no ${VOLUME_TRAILER} (the volume is truncated)`, { volume });
    return;
  }
  if (trailer.set !== input.volume!.set || trailer.volume !== volume || !Array.isArray(trailer.entries)) {
    reporter.problem('volume', 'INVALID_INPUT', `${where}: ${VOLUME_TRAILER} does not match the volume's header`, { volume });
    return;
  }
  const got = new Map(seen.map((s) => [s.name, s]));
  for (const want of trailer.entries) {
    const have = got.get(want.name);
    if (have?.reported || (have && have.digest === want.digest && have.size === want.size)) continue;
    const blob = want.part?.blob ?? (/^blobs\//.test(want.name) ? want.digest : undefined);
    const what = want.part ? `part ${want.part.index} of blob ${want.part.blob}` : blob ? `blob ${blob}` : want.name;
    if (want.part) c.faults.parts.add(want.part.blob);
    else if (blob && !have) c.state.lost.add(blob);
    else if (METADATA.has(want.name)) c.state.damagedMeta.add(want.name);
    const extra = { digest: blob ?? want.digest, path: want.name, volume };
    if (!have) reporter.problem('volume', 'INTEGRITY', `${where}: ${what} is missing`, extra);
    else reporter.problem('digest', 'INTEGRITY', `${where}: ${corruptEntry(what, have, want)}`, extra);
  }
}

/** Reads the bytes of a scanned file, from memory or back from the target. */
export async function fileBytes(f: ScannedFile, target: IngestTarget): Promise<Buffer | undefined> {
  if (f.bytes) return f.bytes;
  if (f.size > MAX_JSON_BYTES) return undefined;
  return target.read?.({ mediaType: OCTET, digest: f.digest, size: f.size });
}

