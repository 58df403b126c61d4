import { createWriteStream, type WriteStream } from 'node:fs';
import { access, constants, link, lstat, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { once } from 'node:events';
import { Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, missingDirectory, toFerryError } from '../errors.js';
import { checkLevel, compressedBound, compressionForPath, ParallelCompress, type OutputCompression } from '../blob/compression.js';
import { isSpecialFile, outputTarget, syncDir } from '../blob/publish.js';
import { openTempOutput, ResumingFile } from '../blob/resume-file.js';
import { EarlySync } from '../blob/early-sync.js';
import { streamed } from '../util/memory.js';
import { refusePseudoFilesystem } from '../util/can-make.js';
import { entryHeader, entryPadding, END_OF_ARCHIVE } from './tar.js';

export type ArchiveCompression = OutputCompression;
export { compressionForPath };

export interface OutputOptions {
  compression: ArchiveCompression;
  level?: number;
  /** Replace an existing file (catalogue E6: refused otherwise). */
  force?: boolean;
  /** The command has no --force (copy): the refusal says what to do instead. */
  noForceFlag?: boolean;
  /** A dry run: write nothing, only count; each finished file is added here with its size. */
  measure?: MeasuredFile[];
}

export interface EntryOptions {
  signal?: AbortSignal;
  /** The body is gzip or zstd data already: a compressed archive stores it as it is. */
  compressed?: boolean;
}

export interface MeasuredFile {
  path: string;
  /** Tar bytes before compression (the compressed size is known only by compressing). */
  bytes: number;
  /** With compression: the most the file can take once compressed (compressedBound). */
  maxBytes?: number;
}

/** Refuses to overwrite `path` unless forced (E6). */
export async function refuseExisting(path: string, force: boolean | undefined, noForceFlag = false): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st?.isDirectory()) {
    throw new FerryError('USAGE', `${path} is a directory; the output is one file`, { hint: `name the file, e.g. ${join(path, 'images.tar')}` });
  }
  if (force) return;
  if (st) {
    throw new FerryError('USAGE', `${path} already exists; refusing to overwrite it`, {
      hint: noForceFlag ? 'choose another name, or delete the file first' : 'pass --force to replace it, or choose another name',
    });
  }
}

/**
 * For dry runs: refuses an output file whose temp file the real run could not create beside it (a
 * missing directory, a file in the way, no write permission), with the real run's error.
 */
export async function checkOutputDir(dest: string): Promise<void> {
  const dir = dirname(dest);
  const errno = (code: string) => toFerryError(Object.assign(new Error(code), { code, path: dest }));
  const st = await stat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw missingDirectory(dest);
    throw errno(e.code ?? 'EIO');
  });
  if (!st.isDirectory()) throw errno('ENOTDIR');
  await access(dir, constants.W_OK).catch(() => {
    throw errno('EACCES');
  });
  await refusePseudoFilesystem(dir, dest);
}

function outputError(e: unknown, where: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'EPIPE' || err?.code === 'ERR_STREAM_DESTROYED' || err?.code === 'ERR_STREAM_PREMATURE_CLOSE') {
    if (where === '-') return new FerryError('IO', 'standard output was closed before the archive was complete (EPIPE)', { cause: e, hint: 'the reading program exited early' });
    if (err.code === 'EPIPE') return new FerryError('IO', `${where}: the pipe was closed before the archive was complete (EPIPE)`, { cause: e, hint: 'the program reading it exited early' });
  }
  if (err && typeof err === 'object' && typeof err.code === 'string' && err.path === undefined && where !== '-') err.path = where;
  return e;
}

/**
 * Puts `temp` at `dest` unless a file appeared there meanwhile: never clobber what someone else
 * wrote. link() fails if the name exists; FAT and exFAT (USB sticks) have no hard links (EPERM),
 * so there the name is checked, then renamed onto: a race only with a writer of the same name in
 * the same instant. Every finished save to a FAT stick failed at this last step and was deleted.
 */
async function publishNoClobber(temp: string, dest: string): Promise<void> {
  try {
    await link(temp, dest);
  } catch (e) {
    if (!NO_HARD_LINKS.has((e as NodeJS.ErrnoException).code ?? '')) throw e;
    if (await lstat(dest).then(() => true, () => false)) throw Object.assign(new Error(`${dest} exists`), { code: 'EEXIST', path: dest });
    await rename(temp, dest);
    return;
  }
  await unlink(temp);
}

/** What link() says on a filesystem without hard links (FAT, exFAT; ENOTSUP/ENOSYS elsewhere). */
const NO_HARD_LINKS = new Set(['EPERM', 'ENOTSUP', 'EOPNOTSUPP', 'ENOSYS']);

/**
 * Where archive bytes go: a file (written as a temp file beside it, fsynced, then renamed into
 * place only when complete) or a stream such as stdout; optionally compressed on the way.
 */
export class ArchiveOutput {
  /** Uncompressed tar bytes written so far. */
  bytes = 0;
  private failure?: unknown;
  private readonly head: Writable;
  private readonly compressor?: ParallelCompress;
  /** A dry run: the compression the real file would get, and how many entries it would store. */
  private measuredCompression: ArchiveCompression = 'none';
  private storedEntries = 0;
  /** Inside a body the compressor stores as it is: one short-lived copy per chunk, not a codec's buffers, so not counted for GC pacing. */
  private storing = false;
  private readonly flowing: Promise<void>;

  private constructor(
    private readonly sink: Writable,
    private readonly dest: string,
    private readonly temp: string | undefined,
    private readonly o: OutputOptions,
  ) {
    // A file of ours: its pages go to disk while the archive is written (EarlySync), and it is
    // done only once closed, that is after its final fsync. A stream we were handed: once flushed.
    const stages: Writable[] = [];
    if (o.compression !== 'none') {
      this.compressor = new ParallelCompress(o.compression, { level: o.level });
      stages.push(this.compressor);
    }
    if (temp) stages.push(new EarlySync(sink as WriteStream).counter());
    if (stages.length === 0) {
      this.head = sink;
      this.flowing = new Promise<void>((resolve, reject) => {
        sink.once('finish', resolve);
        // on(): a pipe whose reader left fails each pending write; a second unheard 'error' crashed.
        sink.on('error', reject);
      });
    } else {
      this.head = stages[0]!;
      this.flowing = pipeline([...(stages as Transform[]), sink]);
    }
    this.flowing.catch((e: unknown) => (this.failure ??= outputError(e, dest)));
  }

  static async toFile(dest: string, o: OutputOptions): Promise<ArchiveOutput> {
    if (o.compression !== 'none') checkLevel(o.compression, o.level);
    if (!o.measure && (await isSpecialFile(dest))) {
      const device = createWriteStream(dest, { flags: 'w', highWaterMark: 1 << 20 });
      await once(device, 'open').catch((e: unknown) => Promise.reject(outputError(e, dest)));
      return new ArchiveOutput(device, dest, undefined, o);
    }
    if (!o.measure) dest = await outputTarget(dest);
    await refuseExisting(dest, o.force, o.noForceFlag);
    if (o.measure) return ArchiveOutput.measuring(dest, o);
    // A run killed (power, SIGKILL) while writing this file left it half written: continued.
    const { temp, file } = await openTempOutput(dest).catch((e: unknown) => Promise.reject(outputError(e, dest)));
    return new ArchiveOutput(file, dest, temp, o);
  }

  /** Counts what would be written to `dest`; entry bodies may be left out (only their sizes count). */
  static measuring(dest: string, o: OutputOptions): ArchiveOutput {
    const discard = new Writable({ write: (_c, _e, cb) => cb() });
    const measuring = new ArchiveOutput(discard, dest, undefined, { ...o, compression: 'none', measure: o.measure ?? [] });
    measuring.measuredCompression = o.compression;
    return measuring;
  }

  static toStream(stream: Writable, o: OutputOptions): ArchiveOutput {
    return new ArchiveOutput(stream, '-', undefined, o);
  }

  get where(): string {
    return this.dest;
  }

  /** The temp file a finished but unpublished file waits in (see finish's `defer`). */
  get pending(): string | undefined {
    return this.temp;
  }

  async write(chunk: Buffer): Promise<void> {
    if (this.o.measure) {
      this.bytes += chunk.length;
      return;
    }
    if (this.failure) throw this.failure;
    this.bytes += chunk.length;
    // Blob bytes were counted by the verifying stream they came through; counting them again made
    // minor GCs twice as frequent, and a 1 MiB read chunk then outlived two of them and waited
    // for a major (60 per GiB saved, 1 now: a 1 GiB save 1.9 -> 1.6 s, user CPU 1.9 -> 1.0 s).
    // A compressor makes new buffers of its own, which this count stands for (peak RSS of a
    // .tar.zst save 96 -> 104 MiB without it).
    if (this.compressor && !this.storing) streamed(chunk.length);
    if (!this.head.write(chunk)) {
      try {
        await Promise.race([once(this.head, 'drain'), this.flowing.then(() => undefined)]);
      } catch (e) {
        throw outputError(e, this.dest);
      }
      if (this.failure) throw this.failure;
    }
  }

  /** One tar entry: header, exactly `size` bytes of body, padding. */
  async entry(name: string, size: number, body: AsyncIterable<Buffer>, o: EntryOptions = {}): Promise<void> {
    const { signal } = o;
    await this.write(entryHeader(name, size));
    if (this.o.measure) {
      if (o.compressed) this.storedEntries++;
      for await (const chunk of body) void chunk; // manifests are read by the sink on their way
      this.bytes += size;
      return this.write(entryPadding(size));
    }
    if (o.compressed && this.compressor) {
      this.compressor.storeAsIs(this.bytes, size);
      this.storing = true;
    }
    let n = 0;
    try {
      for await (const chunk of body) {
        signal?.throwIfAborted();
        n += (chunk as Buffer).length;
        if (n > size) throw new FerryError('INTERNAL', `archive entry ${name}: more than the declared ${size} bytes`);
        await this.write(chunk as Buffer);
      }
    } finally {
      this.storing = false;
    }
    if (n !== size) throw new FerryError('INTERNAL', `archive entry ${name}: ${n} bytes instead of ${size}`);
    await this.write(entryPadding(size));
  }

  async bytesEntry(name: string, data: Buffer): Promise<void> {
    await this.write(Buffer.concat([entryHeader(name, data.length), data, entryPadding(data.length)]));
  }

  async dirEntry(name: string): Promise<void> {
    await this.write(entryHeader(name.endsWith('/') ? name : `${name}/`, 0, { type: 'dir' }));
  }

  /**
   * Ends the tar and flushes it; a file is fsynced and moved into place, unless `defer` is set
   * (volumes are published together by publish()).
   */
  async finish(o: { defer?: boolean } = {}): Promise<void> {
    await this.write(END_OF_ARCHIVE);
    this.head.end();
    try {
      await this.flowing;
    } catch (e) {
      await this.abort();
      throw outputError(e, this.dest);
    }
    if (this.failure) {
      await this.abort();
      throw this.failure;
    }
    if (this.o.measure) {
      const c = this.measuredCompression;
      this.o.measure.push({ path: this.dest, bytes: this.bytes, ...(c === 'none' ? {} : { maxBytes: compressedBound(this.bytes, c, this.storedEntries) }) });
    }
    if (this.sink instanceof ResumingFile) this.sink.report(this.dest);
    if (!this.temp || o.defer) return;
    await this.publish();
  }

  /** Moves a finished temp file into place (never over an existing file unless forced). */
  async publish(): Promise<void> {
    if (!this.temp) return;
    try {
      if (this.o.force) await rename(this.temp, this.dest);
      else await publishNoClobber(this.temp, this.dest);
      await syncDir(dirname(this.dest));
    } catch (e) {
      await unlink(this.temp).catch(() => {});
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') await refuseExisting(this.dest, false, this.o.noForceFlag);
      throw outputError(e, this.dest);
    }
  }

  /** Drops everything written: the temp file is removed, the destination untouched. */
  async abort(): Promise<void> {
    if (this.head !== this.sink) this.head.destroy();
    // A stream we were handed (stdout) is left open: the process decides what happens to it.
    if (!this.temp) {
      if (this.dest !== '-') this.sink.destroy();
      return;
    }
    this.sink.destroy();
    await this.flowing.catch(() => {});
    await unlink(this.temp).catch(() => {});
  }
}
