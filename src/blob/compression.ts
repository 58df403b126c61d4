import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { FerryError } from '../errors.js';
import { ZstdDecompress } from './zstd-frames.js';

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

export function decompressor(c: Compression): Transform {
  switch (c) {
    case 'gzip':
      return zlib.createGunzip({ chunkSize: 1 << 16 });
    case 'zstd':
      // node:zlib's own stream stops after the first frame; this one reads them all (catalogue B4).
      return new ZstdDecompress();
    case 'none':
      return new PassThrough({ highWaterMark: 1 << 20 });
    default:
      throw new FerryError('UNSUPPORTED', `${c} compression is not supported (ferry decodes gzip and zstd)`);
  }
}

/** Output chunks of 1 MiB: with node:zlib's default of 16 KiB, zstd runs about three times slower. */
export function compressor(c: 'gzip' | 'zstd', level?: number): Transform {
  const chunkSize = 1 << 20;
  if (c === 'gzip') return zlib.createGzip({ chunkSize, ...(level === undefined ? {} : { level }) });
  return zlib.createZstdCompress({ chunkSize, ...(level === undefined ? {} : { params: { [zlib.constants.ZSTD_c_compressionLevel]: level } }) });
}

export type OutputCompression = 'gzip' | 'zstd' | 'none';

/** Compression implied by a file name: `.tar.gz`/`.tgz` gzip, `.tar.zst`/`.tzst`/`.zstd` zstd, else none. */
export function compressionForPath(path: string): OutputCompression {
  const p = path.toLowerCase();
  if (p.endsWith('.gz') || p.endsWith('.tgz')) return 'gzip';
  if (p.endsWith('.zst') || p.endsWith('.zstd') || p.endsWith('.tzst')) return 'zstd';
  return 'none';
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
  const v = env.FERRY_MAX_LAYER_BYTES;
  if (v !== undefined && v !== '') {
    const n = Number(v);
    if (!Number.isSafeInteger(n) || n <= 0) throw new FerryError('USAGE', `FERRY_MAX_LAYER_BYTES must be a positive number of bytes, not ${JSON.stringify(v)}`);
    return n;
  }
  return Math.max(2 ** 30, compressedSize * 2048);
}
