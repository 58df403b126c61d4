import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { availableParallelism } from 'node:os';
import type * as Zlib from 'node:zlib';
import { FerryError } from '../errors.js';
import { ZstdDecompress, zstdFrameHeader, zstdRawBlockHeader } from './zstd-frames.js';
import { envNumber } from '../util/env.js';
import { zlib } from '../util/builtins.js';

export type Compression = 'gzip' | 'zstd' | 'bzip2' | 'xz' | 'none';

/** Detects compression from the first bytes; anything unrecognised is treated as plain. */
export function sniff(head: Uint8Array): Compression {
  const b = head;
  if (b.length >= 3 && b[0] === 0x1f && b[1] === 0x8b && b[2] === 0x08) return 'gzip';
  if (b.length >= 4 && b[0] === 0x28 && b[1] === 0xb5 && b[2] === 0x2f && b[3] === 0xfd) return 'zstd';
  if (b.length >= 3 && b[0] === 0x42 && b[1] === 0x5a && b[2] === 0x68) return 'bzip2';
  if (b.length >= 6 && b[0] === 0xfd && b[1] === 0x37 && b[2] === 0x7a && b[3] === 0x58 && b[4] === 0x5a && b[5] === 0x00) return 'xz';
  return 'none';
}

/**
 * Reads up to `n` bytes from the front of a stream without losing them: returns those bytes and a
 * stream that yields everything, head included.
 */
export async function peek(body: Readable, n: number): Promise<{ head: Buffer; stream: Readable }> {
  const parts: Buffer[] = [];
  let have = 0;
  const it = body[Symbol.asyncIterator]();
  let done = false;
  while (have < n) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    const chunk = r.value as Buffer;
    parts.push(chunk);
    have += chunk.byteLength;
  }
  const head = Buffer.concat(parts);
  async function* rest(): AsyncGenerator<Buffer> {
    if (head.byteLength) yield head;
    if (done) return;
    for (;;) {
      const r = await it.next();
      if (r.done) return;
      yield r.value as Buffer;
    }
  }
  return { head: head.subarray(0, n), stream: Readable.from(rest(), { objectMode: false }) };
}

export interface DecompressorOptions {
  /**
   * Bytes per output chunk of gzip (default 64 KiB). 1 MiB where the output is only hashed:
   * inflate + SHA-256 of 512 MiB takes 1.24 s instead of 1.70 with 128 KiB (fewer round trips to
   * the thread pool). Not where chunks wait in queues on their way to a file: the bigger they are,
   * the more of them outlive two minor GCs and need a major one.
   */
  chunk?: number;
}

export function decompressor(c: Compression, o: DecompressorOptions = {}): Transform {
  switch (c) {
    case 'gzip':
      return zlib().createGunzip({ chunkSize: o.chunk ?? 1 << 16 });
    case 'zstd':
      // node:zlib's own stream stops after the first frame; this one reads them all (catalogue B4).
      return new ZstdDecompress();
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    default:
      throw new FerryError('UNSUPPORTED', `${c} compression is not supported (ferry decodes gzip and zstd)`);
  }
}

/**
 * One gzip member or zstd frame, the same bytes however the input arrives. Output chunks of 1 MiB:
 * with node:zlib's default of 16 KiB, zstd runs about three times slower.
 */
export function compressor(c: 'gzip' | 'zstd', level?: number): Transform {
  const chunkSize = 1 << 20;
  if (c === 'gzip') return new EndOnce(zlib().createGzip({ chunkSize, ...(level === undefined ? {} : { level }) }));
  return new EndOnce(zlib().createZstdCompress({ chunkSize, ...(level === undefined ? {} : { params: { [zlib().constants.ZSTD_c_compressionLevel]: level } }) }));
}

/**
 * Gives a node:zlib compressor its input one chunk at a time and ends it only once it has taken
 * them all. node:zlib finishes on the last chunk when end() came before that chunk was compressed,
 * then finishes again with no input: zstd then writes a second, empty frame (9 bytes), so the
 * output depended on timing. Ended with nothing pending, the codec finishes exactly once.
 */
class EndOnce extends Transform {
  constructor(private readonly engine: Transform) {
    super({ readableHighWaterMark: 1 << 20 });
    engine.on('data', (d: Buffer) => this.push(d));
    engine.on('error', (e) => this.destroy(e));
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.engine.write(chunk, (e) => {
      if (!e) cb(); // an error reaches the 'error' listener
    });
  }

  override _flush(cb: TransformCallback): void {
    this.engine.once('end', () => cb());
    this.engine.end();
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.engine.destroy();
    cb(err);
  }
}

/** How much of the input goes into one independently compressed gzip member or zstd frame. */
export const PARALLEL_CHUNK = 2 << 20;

export interface ParallelOptions {
  level?: number;
  /** Input bytes per member/frame (default 2 MiB); fixed, so the output is deterministic. */
  chunk?: number;
  /** Chunks being compressed at once (default: cores + 1 for gzip, cores for zstd). */
  inFlight?: number;
}

/**
 * Compresses on the libuv pool, several chunks at a time (pigz-style): the input is cut into
 * fixed-size chunks, each becomes one gzip member or zstd frame, and they are emitted in order.
 * Concatenated members (RFC 1952 §2.2) and frames (RFC 8878 §3.1) are one valid stream for gzip,
 * zstd, Go's readers and ours. Memory: inFlight codec contexts, kept for the whole stream (a fresh
 * one per chunk left its buffers to the garbage collector: 60 MiB more peak RSS), and about
 * inFlight x (chunk + its output).
 */
export class ParallelCompress extends Transform {
  private readonly chunkBytes: number;
  private readonly slots: CodecSlot[];
  private buf: Buffer;
  private filled = 0;
  private dispatched = 0;
  private readonly queue: Array<Promise<Buffer[]>> = [];
  private readonly spare: Buffer[] = [];
  /** Input bytes taken so far. */
  private seen = 0;
  private readonly asIs: Array<{ start: number; end: number }> = [];
  private stored?: StoredFrame;

  constructor(private readonly c: 'gzip' | 'zstd', o: ParallelOptions = {}) {
    super({ highWaterMark: 1 << 20 });
    this.chunkBytes = o.chunk ?? PARALLEL_CHUNK;
    this.buf = Buffer.allocUnsafe(this.chunkBytes);
    checkLevel(c, o.level);
    // gzip is slow enough that a chunk more than cores keeps them busy while this thread works
    // (1 GiB: 18.5 s vs 20.2 s); zstd keeps up with one per core, and each of its contexts costs
    // ~4 MiB (peak RSS of a .tar.zst save 105 -> 98 MiB with one fewer, no slower).
    const n = o.inFlight ?? availableParallelism() + (c === 'gzip' ? 1 : 0);
    this.slots = Array.from({ length: n }, () => new CodecSlot(c, o.level));
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.collect(chunk).then(() => cb(), (e: unknown) => cb(e as Error));
  }

  override _flush(cb: TransformCallback): void {
    if (this.stored) return cb(new FerryError('INTERNAL', `compressor: input ended inside a stored range (${this.seen} bytes)`));
    // An empty input still becomes one (empty) member or frame: a valid compressed file.
    if (this.filled > 0 || this.seen === 0) this.dispatch();
    this.drainAll().then(
      () => {
        for (const s of this.slots) s.close();
        cb();
      },
      (e: unknown) => cb(e as Error),
    );
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    for (const s of this.slots) s.close();
    cb(err);
  }

  /**
   * Declares that input bytes [start, start + length) are compressed already (a gzip or zstd
   * layer): they go out stored, as one zstd frame of raw blocks or one gzip member of stored
   * blocks, instead of through the codec, which would spend the CPU and win nothing. Call it
   * before those bytes are written; ranges come in order.
   */
  storeAsIs(start: number, length: number): void {
    if (length > 0) this.asIs.push({ start, end: start + length });
  }

  private async collect(chunk: Buffer): Promise<void> {
    let at = 0;
    while (at < chunk.length) {
      const r = this.asIs[0];
      if (r && this.seen >= r.start) {
        if (!this.stored) {
          // Everything before the range goes out first, in order.
          if (this.filled > 0) this.dispatch();
          await this.drainAll();
          this.stored = new StoredFrame(this.c, r.end - r.start);
        }
        const n = Math.min(r.end - this.seen, chunk.length - at);
        this.push(this.stored.take(chunk.subarray(at, at + n)));
        at += n;
        this.seen += n;
        if (this.seen === r.end) {
          const trailer = this.stored.finish();
          if (trailer) this.push(trailer);
          this.stored = undefined;
          this.asIs.shift();
        }
        continue;
      }
      const n = Math.min(this.chunkBytes - this.filled, chunk.length - at, r ? r.start - this.seen : Infinity);
      chunk.copy(this.buf, this.filled, at, at + n);
      this.filled += n;
      at += n;
      this.seen += n;
      if (this.filled === this.chunkBytes) {
        this.dispatch();
        while (this.queue.length >= this.slots.length) this.pushAll(await this.queue.shift()!);
      }
    }
  }

  private dispatch(): void {
    const buf = this.buf;
    const slot = this.slots[this.dispatched++ % this.slots.length]!;
    const p = slot.compress(this.filled === this.chunkBytes ? buf : buf.subarray(0, this.filled));
    // The chunk belongs to the codec until it completes; then it is filled again.
    p.then(() => this.spare.push(buf), () => {}); // a failure surfaces when awaited in order
    this.queue.push(p);
    this.buf = this.spare.pop() ?? Buffer.allocUnsafe(this.chunkBytes);
    this.filled = 0;
  }

  private pushAll(parts: Buffer[]): void {
    for (const b of parts) this.push(b);
  }

  private async drainAll(): Promise<void> {
    while (this.queue.length > 0) this.pushAll(await this.queue.shift()!);
  }
}

/** Largest block a stored frame or member carries: zstd's block limit, deflate's stored-block limit. */
const STORED_BLOCK = { zstd: 128 << 10, gzip: 0xffff };

/**
 * A range of input sent without compressing it, in a frame any decoder reads: zstd raw blocks
 * (RFC 8878 §3.1.1.2) under a 128 KiB window, so a decoder needs no more memory than for any
 * frame; or a gzip member of deflate stored blocks (RFC 1951 §3.2.4) with its CRC-32. Blocks fall
 * at fixed offsets from the range's start, so the output does not depend on how input arrives.
 */
class StoredFrame {
  private left: number;
  private blockLeft = 0;
  private crc = 0;
  private readonly max: number;

  constructor(private readonly c: 'gzip' | 'zstd', private readonly length: number) {
    this.left = length;
    this.max = STORED_BLOCK[c];
  }

  /**
   * `data` with the frame's header before it and block headers where blocks start, as one buffer.
   * A copy, but pushing the pieces one by one kept each input chunk alive across two minor GCs,
   * and ten major GCs per 180 MiB stored (0.15 s) cost more than copying it.
   */
  take(data: Buffer): Buffer {
    const out: Buffer[] = [];
    if (this.left === this.length && this.blockLeft === 0) out.push(this.header());
    let at = 0;
    while (at < data.length) {
      if (this.blockLeft === 0) {
        this.blockLeft = Math.min(this.max, this.left);
        out.push(this.blockHeader(this.blockLeft, this.blockLeft === this.left));
      }
      const n = Math.min(this.blockLeft, data.length - at);
      const piece = data.subarray(at, at + n);
      if (this.c === 'gzip') this.crc = zlib().crc32(piece, this.crc);
      out.push(piece);
      at += n;
      this.blockLeft -= n;
      this.left -= n;
    }
    return Buffer.concat(out);
  }

  /** The trailer (gzip: CRC-32 and size); zstd raw frames carry no checksum, as ours never do. */
  finish(): Buffer | undefined {
    if (this.c === 'zstd') return undefined;
    const t = Buffer.alloc(8);
    t.writeUInt32LE(this.crc >>> 0, 0);
    t.writeUInt32LE(this.length % 2 ** 32, 4);
    return t;
  }

  private header(): Buffer {
    // zstd: window 2^17 (Window_Descriptor exponent 17 - 10).
    if (this.c === 'zstd') return zstdFrameHeader((17 - 10) << 3);
    return Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
  }

  private blockHeader(size: number, last: boolean): Buffer {
    if (this.c === 'zstd') return zstdRawBlockHeader(size, last);
    const b = Buffer.alloc(5);
    b[0] = last ? 1 : 0; // BFINAL, BTYPE 00; byte-aligned since every block before was stored
    b.writeUInt16LE(size, 1);
    b.writeUInt16LE(~size & 0xffff, 3);
    return b;
  }
}

/** One long-lived codec stream that turns each input it is given into one member or frame. */
class CodecSlot {
  private readonly engine: Zlib.Gzip | Zlib.ZstdCompress;
  private readonly end: number;
  private parts: Buffer[] = [];
  private failure?: Error;
  private tail: Promise<unknown> = Promise.resolve();

  constructor(private readonly c: 'gzip' | 'zstd', level: number | undefined) {
    const chunkSize = 1 << 20;
    if (c === 'gzip') {
      this.engine = zlib().createGzip({ chunkSize, ...(level === undefined ? {} : { level }) });
      this.end = zlib().constants.Z_FINISH;
    } else {
      this.engine = zlib().createZstdCompress({ chunkSize, ...(level === undefined ? {} : { params: { [zlib().constants.ZSTD_c_compressionLevel]: level } }) });
      this.end = zlib().constants.ZSTD_e_end;
    }
    this.engine.on('data', (d: Buffer) => this.parts.push(d));
    this.engine.on('error', (e) => (this.failure ??= e));
  }

  compress(input: Buffer): Promise<Buffer[]> {
    const run = this.tail.then(() => this.one(input));
    this.tail = run.catch(() => {});
    return run;
  }

  private async one(input: Buffer): Promise<Buffer[]> {
    const e = this.engine;
    if (this.failure) throw this.failure;
    e.write(input);
    await new Promise<void>((resolve) => e.flush(this.end, () => resolve()));
    // Output pushed while the flush completed may still be on its way to 'data'.
    while (e.readableLength > 0 && !this.failure) await new Promise((r) => setImmediate(r));
    if (this.failure) throw this.failure;
    const out = this.parts;
    this.parts = [];
    if (this.c === 'gzip') {
      // The header's OS byte depends on how zlib was built: pin it (3, Unix) so output is the same everywhere.
      pinByte(out, 9, 3);
      (e as Zlib.Gzip & Zlib.ZlibReset).reset();
    }
    return out;
  }

  close(): void {
    this.engine.destroy();
  }
}

/**
 * The most `bytes` of tar can take once ParallelCompress has compressed it, `stored` of its
 * entries going out stored. Where compressing does not help, both codecs store: zstd in raw
 * blocks of 128 KiB behind a 3-byte header; zlib in stored blocks, within what its deflateBound
 * allows (1/4096 + 1/16384 of the input). On top come each member's or frame's own bytes: one
 * per 2 MiB chunk, and up to two more per stored entry (its own, and the chunk cut short before
 * it). What `--media` is checked against, so that a plan that fits is a promise.
 */
export function compressedBound(bytes: number, c: OutputCompression, stored: number): number {
  if (c === 'none') return bytes;
  const members = Math.ceil(bytes / PARALLEL_CHUNK) + 2 * stored + 1;
  const blocks = c === 'gzip' ? Math.ceil(bytes / 4096) + Math.ceil(bytes / 16384) : 3 * (Math.ceil(bytes / (128 << 10)) + members);
  return bytes + blocks + members * (c === 'gzip' ? 32 : 24);
}

/** Levels node:zlib accepts for whole-archive compression: gzip 1-9, zstd 1-22. */
export function checkLevel(c: 'gzip' | 'zstd', level: number | undefined): void {
  if (level === undefined) return;
  const max = c === 'gzip' ? 9 : 22;
  if (!Number.isInteger(level) || level < 1 || level > max) {
    throw new FerryError('USAGE', `--level ${level}: ${c} levels are 1 to ${max}`);
  }
}

function pinByte(parts: Buffer[], at: number, value: number): void {
  for (const p of parts) {
    if (at < p.length) {
      p[at] = value;
      return;
    }
    at -= p.length;
  }
}

export type OutputCompression = 'gzip' | 'zstd' | 'none';

/** Names that say "archive file": .tar, .tar.gz/.tgz, .tar.zst/.tzst. */
export const ARCHIVE_SUFFIX = /\.(tar|tar\.gz|tgz|tar\.zst|tar\.zstd|tzst)$/i;

/** Compression suffixes ferry does not write, and near misses of those it does. */
const OTHER_SUFFIX = /\.(zs|zt|zstandard|gzip|gz2|bz2?|tbz2?|xz|txz|lz|lz4|lzma|lzo|z|br|7z|zip)$/i;

/** Compression implied by a file name: `.tar.gz`/`.tgz` gzip, `.tar.zst`/`.tzst`/`.zstd` zstd, else none. */
export function compressionForPath(path: string): OutputCompression {
  const p = path.toLowerCase();
  if (p.endsWith('.gz') || p.endsWith('.tgz')) return 'gzip';
  if (p.endsWith('.zst') || p.endsWith('.zstd') || p.endsWith('.tzst')) return 'zstd';
  return 'none';
}

/**
 * An output's compression: `--compress` when given, else what the name's suffix says. A name that
 * says another compression than `--compress` is refused: a .tar.gz holding zstd fools every tool
 * (and person) that trusts the name.
 */
export function outputCompression(output: string, explicit: OutputCompression | undefined): OutputCompression {
  const named = output === '-' ? 'none' : compressionForPath(output);
  const odd = explicit === undefined && named === 'none' ? OTHER_SUFFIX.exec(output) : null;
  if (odd) {
    // Written as a plain tar, x.tar.zs or x.tar.bz2 would mislead whoever trusts the name.
    throw new FerryError('USAGE', `-o ${output}: ferry writes plain tar (.tar), gzip (.tar.gz, .tgz) or zstd (.tar.zst); "${odd[0]}" is none of them`, {
      hint: 'fix the suffix, or give --compress none to write a plain tar under this name',
    });
  }
  if (explicit === undefined || named === 'none' || named === explicit) return explicit ?? named;
  const suffix = explicit === 'gzip' ? '.tar.gz' : explicit === 'zstd' ? '.tar.zst' : '.tar';
  throw new FerryError('USAGE', `-o ${output} says ${named}, but --compress ${explicit} was given`, { hint: `name the file ${suffix}, or leave out --compress` });
}

/** Sniffs and decodes; returns the plain stream and what was detected. */
export async function decompress(body: Readable): Promise<{ compression: Compression; stream: Readable }> {
  const { head, stream } = await peek(body, 6);
  const compression = sniff(head);
  if (compression === 'none') return { compression, stream };
  const d = decompressor(compression);
  stream.on('error', (e) => d.destroy(e));
  return { compression, stream: stream.pipe(d) };
}

/** Fails once more than `limit` bytes have passed: the budget that stops decompression bombs. */
export class ByteLimit extends Transform {
  private seen = 0;
  constructor(private readonly limit: number, private readonly where: string) {
    super();
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.seen += chunk.byteLength;
    if (this.seen > this.limit) cb(new FerryError('TOO_LARGE', `${this.where}: decompressed data exceeds limit of ${this.limit} bytes`));
    else cb(null, chunk);
  }
}

/**
 * The decompressed-size budget for one layer (catalogue B3): FERRY_MAX_LAYER_BYTES when set, else
 * max(1 GiB, 2048 x the compressed size). Deflate cannot exceed about 1032:1, so only bombs (zstd,
 * or a lying size) reach it. Used by load, verify FILE and export alike.
 */
export function decompressBudget(compressedSize: number, env: NodeJS.ProcessEnv = process.env): number {
  return envNumber('FERRY_MAX_LAYER_BYTES', { above: 0, integer: true, unit: 'bytes' }, Math.max(2 ** 30, compressedSize * 2048), env);
}
