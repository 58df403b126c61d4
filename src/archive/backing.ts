import { createReadStream } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { FerryError } from '../errors.js';
import { peek } from '../blob/compression.js';
import { readCapped } from '../blob/verify.js';
import { MAX_JSON_BYTES } from '../oci/manifest.js';
import { skimmedArchiveBytes } from './scan.js';
import { indexTar, readTar, type TarEntry, type TarHeader } from './tar.js';

/** The bytes of an archive's entries, however the archive is stored. */
export interface ArchiveBacking {
  /** Every entry's header, in archive order. */
  readonly headers: TarHeader[];
  /** True when entries are best read one at a time, in archive order. */
  readonly sequential: boolean;
  /** The first `length` bytes of an entry (all of it by default); for small entries. */
  read(h: TarHeader, length?: number): Promise<Buffer>;
  /** An entry's bytes from `start` on. */
  stream(h: TarHeader, start: number, signal?: AbortSignal): Promise<Readable>;
  /** Which file of several holds an entry, as messages name it (a volume set's). */
  locate?(h: TarHeader): string;
  close(): Promise<void>;
}

/** A plain tar file: headers indexed once, every entry a byte range read in place. */
export class PlainBacking implements ArchiveBacking {
  readonly sequential = false;
  private constructor(
    private readonly fh: FileHandle,
    private readonly file: string,
    readonly headers: TarHeader[],
  ) {}

  static async open(fh: FileHandle, file: string, where: string, signal?: AbortSignal): Promise<PlainBacking> {
    return new PlainBacking(fh, file, await indexTar(fh, where, signal));
  }

  async read(h: TarHeader, length = h.size): Promise<Buffer> {
    const b = Buffer.alloc(Math.min(length, h.size));
    await this.fh.read(b, 0, b.length, h.offset);
    return b;
  }

  async stream(h: TarHeader, start: number, signal?: AbortSignal): Promise<Readable> {
    if (h.size === 0 || start >= h.size) return Readable.from([]);
    return createReadStream(this.file, { start: h.offset + start, end: h.offset + h.size - 1, highWaterMark: 1 << 20, signal });
  }

  async close(): Promise<void> {
    await this.fh.close().catch(() => {});
  }
}

/** Entries up to this size are kept from the indexing pass (manifests, configs, index.json)... */
const HOLD_EACH = 256 << 10;
/** ...until this much is held; past it, they are read again from the archive like any blob. */
const HOLD_TOTAL = 16 << 20;
/** The head of every entry is kept too: enough to tell a compressed layer from a plain one. */
const HEAD = 6;

/**
 * A gzip or zstd archive, which cannot be seeked: one pass decompresses it to learn its entries
 * (keeping the small ones and every entry's first bytes), and each entry asked for later is read
 * by decompressing again up to it. One pass serves every request that comes in archive order
 * (which is how ferry and skopeo write blobs, and how the copy engine asks for them); a request
 * for an entry already passed starts a new pass. Nothing is written to disk.
 */
export class CompressedBacking implements ArchiveBacking {
  readonly sequential = true;
  readonly headers: TarHeader[] = [];
  private readonly held = new Map<number, Buffer>();
  private readonly heads = new Map<number, Buffer>();
  private cursor?: Cursor;
  private readonly open = new Set<Cursor>();

  private constructor(
    private readonly path: string,
    private readonly signal?: AbortSignal,
  ) {}

  static async open(path: string, signal?: AbortSignal): Promise<CompressedBacking> {
    const b = new CompressedBacking(path, signal);
    let heldBytes = 0;
    for await (const e of readTar(skimmedArchiveBytes(path, path, signal), { where: path, signal })) {
      b.headers.push({ name: e.name, type: e.type, size: e.size, linkname: e.linkname, offset: e.offset });
      if (e.type !== 'file' || e.size === 0) continue;
      if (e.size <= HOLD_EACH && heldBytes + e.size <= HOLD_TOTAL) {
        const bytes = await readCapped(e.body(), e.size, `${path}: ${e.name}`);
        b.held.set(e.offset, bytes);
        heldBytes += bytes.length;
      } else {
        b.heads.set(e.offset, await firstBytes(e.body(), HEAD));
      }
    }
    return b;
  }

  async read(h: TarHeader, length = h.size): Promise<Buffer> {
    const n = Math.min(length, h.size);
    const held = this.held.get(h.offset);
    if (held) return held.subarray(0, n);
    const head = this.heads.get(h.offset);
    if (head && n <= head.length) return head.subarray(0, n);
    if (n > MAX_JSON_BYTES) throw new FerryError('INTERNAL', `${this.path}: ${h.name}: ${n} bytes asked to be held in memory`);
    const body = await this.stream(h, 0, this.signal);
    return n === h.size ? readCapped(body, n, `${this.path}: ${h.name}`) : firstBytes(body, n);
  }

  async stream(h: TarHeader, start: number, signal = this.signal): Promise<Readable> {
    const held = this.held.get(h.offset);
    if (held) return Readable.from([held.subarray(start)]);
    if (h.size === 0 || start >= h.size) return Readable.from([]);
    // The idle cursor serves the request if the entry is still ahead of it; otherwise (behind it,
    // or the cursor busy with another entry) a new pass starts and becomes the cursor.
    let c = this.cursor;
    if (!c || c.busy || c.failed || h.offset <= c.position) {
      if (c && !c.busy) this.drop(c);
      c = new Cursor(this.path, signal);
      this.open.add(c);
      this.cursor = c;
    }
    const body = await c.seek(h);
    if (start === 0) return body;
    const tail = skipping(start);
    body.on('error', (e) => tail.destroy(e));
    return body.pipe(tail);
  }

  private drop(c: Cursor): void {
    c.close();
    this.open.delete(c);
  }

  async close(): Promise<void> {
    for (const c of this.open) c.close();
    this.open.clear();
    this.cursor = undefined;
  }
}

/** One decompression pass over an archive, handing out entries in order. */
class Cursor {
  position = -1;
  busy = false;
  failed = false;
  private readonly entries: AsyncGenerator<TarEntry>;

  constructor(
    private readonly path: string,
    signal?: AbortSignal,
  ) {
    this.entries = readTar(skimmedArchiveBytes(path, path, signal), { where: path, signal });
  }

  async seek(h: TarHeader): Promise<Readable> {
    this.busy = true;
    try {
      for (;;) {
        const r = await this.entries.next();
        if (r.done) throw new FerryError('INTEGRITY', `${this.path}: entry ${h.name} is gone on a second reading: did the archive change?`);
        if (r.value.offset < h.offset) continue; // skipped unread
        if (r.value.offset > h.offset || r.value.name !== h.name) {
          throw new FerryError('INTEGRITY', `${this.path}: entry ${h.name} is not where the first reading found it: did the archive change?`);
        }
        this.position = h.offset;
        const body = r.value.body();
        // Free once the entry has been read to its end: before its consumer is done with it, so
        // the next request in order finds the cursor idle. A body left half-read keeps the cursor
        // busy, and the next request starts a pass of its own instead of waiting for it.
        body.once('end', () => (this.busy = false));
        body.once('close', () => (this.busy = false)); // destroyed: the pass skips the rest
        body.once('error', () => {
          this.failed = true;
          this.busy = false;
        });
        return body;
      }
    } catch (e) {
      this.failed = true;
      this.busy = false;
      throw e;
    }
  }

  close(): void {
    void this.entries.return(undefined).catch(() => {});
  }
}

/** The first `n` bytes of a stream; the rest is let go. */
async function firstBytes(body: Readable, n: number): Promise<Buffer> {
  const { head } = await peek(body, n);
  body.destroy();
  return head;
}

/** Drops the first `n` bytes (a resumed read of an entry). */
function skipping(n: number): Transform {
  let left = n;
  return new Transform({
    transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback) {
      if (left >= chunk.length) {
        left -= chunk.length;
        cb();
        return;
      }
      const rest = chunk.subarray(left);
      left = 0;
      cb(null, rest);
    },
  });
}
