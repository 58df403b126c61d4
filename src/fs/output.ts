import { createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { lstat, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { PassThrough, type Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ParallelCompress, type OutputCompression } from '../blob/compression.js';
import { isSpecialFile, outputTarget, withPath } from '../blob/publish.js';
import { openTempOutput, ResumingFile } from '../blob/resume-file.js';
import { FerryError } from '../errors.js';

export { compressionForPath, type OutputCompression } from '../blob/compression.js';

/** Where a tar goes: write to `stream` (honouring backpressure), then commit or abort. */
export interface TarOutput {
  stream: Writable;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

function closed(out: Writable): Error {
  return (out.errored as Error | null) ?? new FerryError('IO', 'the output was closed before the tar was complete');
}

/** Writes with backpressure: resolves at once or after 'drain'; rejects if the output fails. */
export function writeTo(out: Writable, buf: Buffer): Promise<void> | undefined {
  if (out.destroyed || out.writableEnded) throw closed(out);
  if (out.write(buf)) return undefined;
  return new Promise((resolve, reject) => {
    const cleanup = () => {
      out.off('drain', onDrain);
      out.off('error', onError);
      out.off('close', onClose);
    };
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onError = (e: Error) => {
      cleanup();
      reject(e);
    };
    const onClose = () => {
      cleanup();
      reject(closed(out));
    };
    out.on('drain', onDrain);
    out.on('error', onError);
    out.on('close', onClose);
  });
}

/**
 * A file written as a temp file beside `dest` (fsync on close), renamed into place by commit();
 * abort() removes it. An existing `dest` is refused unless `force`. A device or FIFO (`-o
 * /dev/null`, a named pipe) is written into as it is: a rename would replace the node.
 */
export async function openFileOutput(named: string, compression: OutputCompression, o: { force?: boolean } = {}): Promise<TarOutput> {
  const device = await isSpecialFile(named);
  const dest = device ? named : await outputTarget(named);
  const existing = device ? undefined : await lstat(dest).catch(() => undefined);
  if (existing?.isDirectory()) {
    throw new FerryError('USAGE', `${dest} is a directory; -o takes a file`, { hint: `name the file (e.g. ${join(dest, 'rootfs.tar')}), or extract into a directory with --dir` });
  }
  if (existing && !o.force) {
    throw new FerryError('USAGE', `${dest} already exists`, { hint: 'choose another name, or pass --force to replace it' });
  }
  let tmp: string | undefined;
  let file: Writable;
  if (device) {
    file = createWriteStream(dest, { flags: 'w', highWaterMark: 1 << 20 });
    await once(file, 'open');
  } else {
    // A killed export's file is continued, as save's is (the tar is the same from run to run).
    ({ temp: tmp, file } = await openTempOutput(dest));
  }
  // Compressed as save compresses archives: independent frames on every core, in order.
  const head: Transform = compression === 'none' ? new PassThrough({ highWaterMark: 1 << 20 }) : new ParallelCompress(compression);
  // Write errors carry no path: name the file.
  const done = pipeline(head, file).catch((e: unknown) => Promise.reject(withPath(e, dest)));
  done.catch(() => {});
  return {
    stream: head,
    async commit() {
      head.end();
      await done;
      if (file instanceof ResumingFile) file.report(dest);
      if (tmp) await rename(tmp, dest);
    },
    async abort() {
      head.destroy();
      await done.catch(() => {});
      if (tmp) await unlink(tmp).catch(() => {});
    },
  };
}

/** An already-open stream (stdout): never ended by us, errors such as EPIPE surface on write. */
export function openStreamOutput(out: Writable, compression: OutputCompression): TarOutput {
  let failure: Error | undefined;
  const onError = (e: Error) => {
    failure ??= e;
  };
  out.on('error', onError);
  const flush = () =>
    new Promise<void>((resolve, reject) => {
      if (failure) return reject(failure);
      out.write(Buffer.alloc(0), (e) => (e ? reject(e) : resolve()));
    });
  if (compression === 'none') {
    return { stream: out, commit: flush, abort: async () => {} };
  }
  const head = new ParallelCompress(compression);
  head.pipe(out, { end: false });
  out.on('error', (e) => head.destroy(e));
  return {
    stream: head,
    async commit() {
      const ended = new Promise<void>((resolve, reject) => {
        head.once('end', resolve);
        head.once('error', reject);
      });
      head.end();
      await ended;
      await flush();
    },
    async abort() {
      head.unpipe(out);
      head.destroy();
    },
  };
}

/**
 * Gathers small writes (headers, small files, padding) into bigger ones: a stream write per
 * 512-byte header would dominate the cost of exporting many small files. Big buffers go
 * straight through.
 */
export class Batcher {
  private parts: Buffer[] = [];
  private size = 0;
  constructor(
    private readonly out: Writable,
    private readonly limit = 256 << 10,
  ) {}

  put(b: Buffer): Promise<void> | undefined {
    if (b.length >= 64 << 10) {
      const p = this.flush();
      return p ? p.then(() => writeTo(this.out, b)) : writeTo(this.out, b);
    }
    this.parts.push(b);
    this.size += b.length;
    return this.size >= this.limit ? this.flush() : undefined;
  }

  flush(): Promise<void> | undefined {
    if (this.size === 0) return undefined;
    const b = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.size);
    this.parts = [];
    this.size = 0;
    return writeTo(this.out, b);
  }
}
