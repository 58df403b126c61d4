import { fdatasync } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { Transform, type TransformCallback } from 'node:stream';

/** How much may be written between two background flushes. */
const EVERY = 16 << 20;

/**
 * Asks the kernel to write a file's dirty pages out while more are being produced: an fdatasync
 * in the background every 16 MiB, so the fsync that publishing needs at the end finds little left
 * to do (for a large archive it was a third of `save`'s time). Only a hint: errors are left for
 * that final fsync to report, and at most one runs at a time.
 */
export class EarlySync {
  private since = 0;
  private running?: Promise<void>;

  constructor(private readonly file: WriteStream) {}

  wrote(n: number): void {
    this.since += n;
    // Set once the file is open (@types/node does not declare it).
    const fd = (this.file as WriteStream & { fd?: number | null }).fd;
    if (this.since < EVERY || this.running || typeof fd !== 'number') return;
    this.since = 0;
    this.running = new Promise<void>((resolve) => fdatasync(fd, () => resolve())).finally(() => (this.running = undefined));
  }

  /** Resolves once no background flush runs: call before the file is closed. */
  async settled(): Promise<void> {
    await this.running;
  }

  /** A pass-through stage for the bytes written to the file (pipelines). */
  counter(): Transform {
    // Holds about one chunk: the file stream behind it already buffers a megabyte.
    return new Transform({
      highWaterMark: 64 << 10,
      transform: (chunk: Buffer, _e: BufferEncoding, cb: TransformCallback) => {
        this.wrote(chunk.length);
        cb(null, chunk);
      },
      flush: (cb: TransformCallback) => void this.settled().then(() => cb()),
    });
  }
}
