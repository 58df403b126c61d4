import { constants, createWriteStream } from 'node:fs';
import { once } from 'node:events';
import { lstat, open, readdir, rename, unlink, type FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { warn } from '../log.js';
import { processAlive } from '../locations/lock.js';
import { humanSize } from '../progress/format.js';
import { tempPathFor } from './publish.js';
import { tempOwnerPid, tempTail, tempTailOf } from './temp-names.js';

/**
 * Temp names that dead runs left for `dest`, largest first (a live run's are never listed);
 * `plain` only for a regular file (lstat: a link planted under such a name is never followed).
 */
export async function deadTemps(dest: string): Promise<Array<{ path: string; size: number; plain: boolean }>> {
  const dir = dirname(dest);
  const tail = tempTail(basename(dest));
  const dead: Array<{ path: string; size: number; plain: boolean }> = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = tempOwnerPid(name);
    const path = join(dir, name);
    // Exactly this output's: `.tmp-1-ab-x-out.tar` belongs to x-out.tar, not out.tar.
    if (pid === undefined || tempTailOf(name) !== tail || (await processAlive(pid))) continue;
    const st = await lstat(path).catch(() => undefined);
    if (st) dead.push({ path, size: st.isFile() ? st.size : 0, plain: st.isFile() });
  }
  return dead.sort((a, b) => b.size - a.size);
}

/**
 * The temp file a dead run left for `dest` (the largest, when there are several), renamed to
 * `mine` for this process; the others are removed. Its size, or undefined when there is none.
 */
async function claimDeadTemp(dest: string, mine: string): Promise<number | undefined> {
  let claimed: number | undefined;
  for (const d of await deadTemps(dest)) {
    // A rename is atomic: of two runs claiming one file, one gets it. Only a file that can only be
    // ours is continued: a regular file of this user with no other name (not a hard link to some
    // other file, which writing would change; not swapped for a link since it was listed).
    if (claimed === undefined && d.plain && d.size > 0 && (await rename(d.path, mine).then(() => true, () => false)) && (await ownPlainFile(mine))) {
      claimed = d.size;
      warn(`found ${humanSize(d.size)} of ${dest} written by an interrupted run: what matches is kept, not written again`);
      continue;
    }
    await unlink(d.path).catch(() => {});
    warn(`removed ${d.path}, left by an interrupted run`);
  }
  return claimed;
}

/**
 * The file an output is written into before it is renamed to `dest`: a dead run's, continued
 * (ResumingFile), or a new one beside `dest`; open either way. Durable once finished (fsync).
 */
export async function openTempOutput(dest: string): Promise<{ temp: string; file: Writable }> {
  const temp = tempPathFor(dest);
  const dead = await claimDeadTemp(dest, temp);
  if (dead !== undefined) return { temp, file: await ResumingFile.open(temp, dead) };
  const file = createWriteStream(temp, { flags: 'wx', mode: 0o644, flush: true, highWaterMark: 1 << 20 });
  await once(file, 'open');
  return { temp, file };
}

async function ownPlainFile(path: string): Promise<boolean> {
  const st = await lstat(path).catch(() => undefined);
  const ok = st !== undefined && st.isFile() && st.nlink === 1 && (process.getuid === undefined || st.uid === process.getuid());
  if (!ok) await unlink(path).catch(() => {});
  return ok;
}

/**
 * The end of an output that continues a dead run's file: each chunk is first compared with the
 * bytes already at its offset and, while they match, not written again (reading a USB stick is
 * faster than writing it). From the first difference, or past the old end, it writes as usual;
 * old bytes beyond the new end are cut. Whatever the old file held, the result is exactly the
 * bytes given to it. Durable once finished (fsync), as a `flush: true` file stream is.
 */
export class ResumingFile extends Writable {
  /** For EarlySync, which flushes by descriptor. */
  readonly fd: number;
  private at = 0;
  private comparing: boolean;
  /** Bytes found equal and kept, and bytes written. */
  kept = 0;
  written = 0;

  private constructor(
    private readonly fh: FileHandle,
    private readonly existing: number,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.fd = fh.fd;
    this.comparing = existing > 0;
  }

  /** What it did, for the user: said once the file is complete. */
  report(dest: string): void {
    warn(`${dest}: kept ${humanSize(this.kept)} an interrupted run had written, wrote ${humanSize(this.written)}`);
  }

  static async open(path: string, existing: number): Promise<ResumingFile> {
    // O_NOFOLLOW: the name was checked to be a plain file; a link put there since is refused.
    return new ResumingFile(await open(path, constants.O_RDWR | constants.O_NOFOLLOW), existing);
  }

  override _write(chunk: Buffer, _e: BufferEncoding, cb: (e?: Error | null) => void): void {
    this.put(chunk).then(() => cb(), cb);
  }

  private async put(chunk: Buffer): Promise<void> {
    let from = 0;
    if (this.comparing) {
      const n = Math.min(chunk.length, this.existing - this.at);
      const old = Buffer.allocUnsafe(n);
      const { bytesRead } = await this.fh.read(old, 0, n, this.at);
      from = sameBytes(old.subarray(0, bytesRead), chunk);
      this.at += from;
      this.kept = this.at;
      if (from < n || this.at >= this.existing) {
        this.comparing = false;
        if (from < n) await this.fh.truncate(this.at);
      }
    }
    while (from < chunk.length) {
      const { bytesWritten } = await this.fh.write(chunk, from, chunk.length - from, this.at);
      from += bytesWritten;
      this.at += bytesWritten;
      this.written += bytesWritten;
    }
  }

  override _final(cb: (e?: Error | null) => void): void {
    const end = async () => {
      // Shorter than what the dead run had written: its tail goes.
      if (this.comparing) await this.fh.truncate(this.at);
      await this.fh.sync();
      await this.fh.close();
    };
    end().then(() => cb(), cb);
  }

  override _destroy(e: Error | null, cb: (e: Error | null) => void): void {
    this.fh.close().then(() => cb(e), () => cb(e));
  }
}

/** How many leading bytes of `old` equal those of `chunk`. */
function sameBytes(old: Buffer, chunk: Buffer): number {
  const n = Math.min(old.length, chunk.length);
  if (old.subarray(0, n).equals(chunk.subarray(0, n))) return n;
  let i = 0;
  while (i < n && old[i] === chunk[i]) i++;
  return i;
}
