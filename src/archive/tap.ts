import { createHash, type Hash } from 'node:crypto';
import { once } from 'node:events';
import { Transform, type TransformCallback } from 'node:stream';
import { FerryError } from '../errors.js';
import { ByteLimit, decompressBudget, decompressor, sniff, type Compression } from '../blob/compression.js';
import { hashLater, hashSink } from '../blob/verify.js';
import { algorithmOf, type Digest } from '../oci/digest.js';
import { streamed } from '../util/memory.js';


export interface TapResult {
  digest: Digest;
  size: number;
  /** What the first bytes say. */
  compression: Compression;
  /** Digest of the content after decompression (= digest for plain content). */
  diffId?: Digest;
  /** Why diffId is missing: truncated or corrupt compressed data, a bomb, an unsupported codec. */
  diffError?: FerryError;
  /** Set in record mode when the content does not match `expected`. */
  mismatch?: FerryError;
}

export interface TapOptions {
  /** What the bytes must be; checked as they pass (size) and at the end (digest). */
  expected?: { digest: Digest; size: number };
  where: string;
  /** The byte count when known without `expected` (sets the decompression budget). */
  size?: number;
  /** Compute the decompressed digest too (for layers' diff_ids). */
  diff?: boolean;
  /** `throw` (default): a mismatch fails the stream. `record`: it is only reported in result(). */
  mode?: 'throw' | 'record';
  /** Bytes received so far, after each chunk (progress). */
  onProgress?: (received: number) => void;
}

function decodeError(e: unknown, c: Compression, where: string): FerryError {
  if (e instanceof FerryError) return e.message.startsWith(where) ? e : new FerryError(e.code, `${where}: ${e.message}`, { cause: e });
  const err = e as NodeJS.ErrnoException;
  if (err?.code === 'Z_BUF_ERROR') return new FerryError('INTEGRITY', `${where}: truncated ${c} data (unexpected end)`, { cause: e });
  return new FerryError('INTEGRITY', `${where}: corrupt ${c} data (${err?.message ?? String(e)})`, { cause: e });
}

/**
 * Passes an entry's bytes through unchanged while hashing them once, checking them against what
 * they must be, and (for layers) hashing their decompressed content within a budget. Decoding
 * failures never fail the stream: they are kept in result() for whoever learns the bytes are a layer.
 */
export class EntryTap extends Transform {
  private readonly hash: Hash;
  private received = 0;
  private head?: Buffer;
  private sniffed = false;
  private compression: Compression = 'none';
  private decoder?: Transform;
  private inner?: Hash;
  private decodeDone?: Promise<void>;
  private diffError?: FerryError;
  private res?: TapResult;

  constructor(private readonly o: TapOptions) {
    super({ highWaterMark: 1 << 20 });
    this.hash = createHash(o.expected ? algorithmOf(o.expected.digest) : 'sha256');
  }

  result(): TapResult {
    if (!this.res) throw new Error('EntryTap.result() before the end of the stream');
    return this.res;
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.received += chunk.length;
    streamed(chunk.length);
    this.o.onProgress?.(this.received);
    const exp = this.o.expected;
    if (exp && this.received > exp.size && this.o.mode !== 'record') {
      cb(new FerryError('SIZE_MISMATCH', `size mismatch for ${this.o.where}: more than the expected ${exp.size} bytes`));
      return;
    }
    hashLater(chunk.byteLength, () => {
      this.hash.update(chunk);
      if (!this.o.diff) cb(null, chunk);
      else this.feed(chunk).then(() => cb(null, chunk), (e: unknown) => cb(e as Error));
    });
  }

  private async feed(chunk: Buffer): Promise<void> {
    if (this.sniffed) return this.decode(chunk);
    // Sniff once at least 6 bytes (or the whole entry) have been seen.
    this.head = this.head ? Buffer.concat([this.head, chunk]) : chunk;
    if (this.head.length < 6) return;
    const head = this.head;
    this.head = undefined;
    this.startDecoder(head);
    await this.decode(head);
  }

  private startDecoder(head: Buffer): void {
    this.sniffed = true;
    this.compression = sniff(head);
    if (this.compression === 'none') return;
    if (this.compression !== 'gzip' && this.compression !== 'zstd') {
      this.diffError = new FerryError('UNSUPPORTED', `${this.o.where}: ${this.compression} compression is not supported (ferry decodes gzip and zstd)`);
      return;
    }
    const c = this.compression;
    const decoder = decompressor(c, { chunk: 1 << 20 });
    const limit = new ByteLimit(decompressBudget(this.o.expected?.size ?? this.o.size ?? 0), this.o.where);
    const inner = createHash('sha256');
    this.inner = inner;
    const sink = hashSink(inner, streamed);
    this.decoder = decoder;
    this.decodeDone = new Promise<void>((resolve) => {
      const fail = (e: unknown) => {
        this.diffError ??= decodeError(e, c, this.o.where);
        this.decoder = undefined;
        decoder.destroy();
        limit.destroy();
        resolve();
      };
      decoder.on('error', fail);
      limit.on('error', fail);
      sink.on('error', fail);
      sink.on('finish', () => resolve());
    });
    decoder.pipe(limit).pipe(sink);
  }

  private async decode(chunk: Buffer): Promise<void> {
    const d = this.decoder;
    if (!d || chunk.length === 0) return;
    if (!d.write(chunk)) {
      await Promise.race([once(d, 'drain').catch(() => {}), this.decodeDone]);
    }
  }

  override _flush(cb: TransformCallback): void {
    this.finish().then(() => cb(), (e: unknown) => cb(e as Error));
  }

  private async finish(): Promise<void> {
    if (this.o.diff && !this.sniffed) {
      const head = this.head ?? Buffer.alloc(0);
      this.head = undefined;
      this.startDecoder(head);
      await this.decode(head);
    }
    const alg = this.o.expected ? algorithmOf(this.o.expected.digest) : 'sha256';
    const digest = `${alg}:${this.hash.digest('hex')}` as Digest;
    let mismatch: FerryError | undefined;
    const exp = this.o.expected;
    if (exp && this.received !== exp.size) {
      mismatch = new FerryError('SIZE_MISMATCH', `size mismatch for ${this.o.where}: expected ${exp.size} bytes, got ${this.received}`);
    } else if (exp && digest !== exp.digest) {
      mismatch = new FerryError('DIGEST_MISMATCH', `digest mismatch for ${this.o.where}: expected ${exp.digest}, got ${digest} (${this.received} bytes)`);
    }
    if (mismatch && this.o.mode !== 'record') {
      this.decoder?.destroy();
      throw mismatch;
    }
    let diffId: Digest | undefined;
    if (this.o.diff) {
      if (this.compression === 'none') diffId = digest;
      else if (this.decoder) {
        this.decoder.end();
        await this.decodeDone;
        if (!this.diffError) diffId = `sha256:${this.inner!.digest('hex')}` as Digest;
      }
    }
    this.res = { digest, size: this.received, compression: this.compression, diffId, diffError: this.diffError, mismatch };
  }
}
