import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { lstat, open, readlink, rename, stat, unlink, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { EarlySync } from './early-sync.js';
import { tempPathWith } from './temp-names.js';

export { TEMP_PREFIX, tempOwnerPid } from './temp-names.js';

export function tempPathFor(dest: string): string {
  return tempPathWith(dest, process.pid, randomBytes(4).toString('hex'));
}

export interface PublishOptions {
  signal?: AbortSignal;
}

/**
 * Writes a stream to `dest` atomically: temp file beside it (same filesystem, so rename never
 * crosses devices), fsync, rename. If the stream fails (a verification error included) the temp
 * file is removed and `dest` is untouched.
 */
export async function publishStream(dest: string, body: Readable, opts: PublishOptions = {}): Promise<void> {
  const tmp = tempPathFor(dest);
  try {
    // flush: fsync before close, so the rename never exposes a file whose data is not on disk.
    const file = createWriteStream(tmp, { flags: 'wx', mode: 0o644, flush: true, highWaterMark: 1 << 20 });
    await pipeline(body, new EarlySync(file).counter(), file, { signal: opts.signal });
    await rename(tmp, dest);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw withPath(e, dest);
  }
}

/** Write errors from streams carry no path; the user needs to know which file could not be written. */
export function withPath(e: unknown, path: string): unknown {
  const err = e as NodeJS.ErrnoException;
  if (err && typeof err === 'object' && typeof err.code === 'string' && err.path === undefined) err.path = path;
  return e;
}

/**
 * The file a user-named output really is: the end of a chain of symbolic links (which need not
 * exist yet), as GNU tools write, so that publishing (temp file beside it, then rename) replaces
 * that file and never a link. Renaming onto the link put the temp file beside it: `-o /dev/stdout`
 * with stdout redirected to a file replaced /dev/stdout for a root user; a docker config.json kept
 * by a dotfile manager (stow, home-manager) became a copy.
 */
export async function outputTarget(path: string, loopHint = 'fix the link, or remove it'): Promise<string> {
  // A device or a pipe (/dev/fd/3 -> pipe:[…]) is written into through the link as it is.
  if (await isSpecialFile(path)) return path;
  let p = path;
  for (let hops = 0; hops < 40; hops++) {
    let next: string;
    try {
      next = await readlink(p);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EINVAL' || code === 'ENOENT') return p; // not a link, or nothing there yet
      throw e;
    }
    await refuseForeignLink(p);
    p = resolve(dirname(p), next);
  }
  throw new FerryError('IO', `${path} is a loop of symbolic links`, { hint: loopHint });
}

/**
 * The kernel's protected_symlinks rule, which resolving links by hand would otherwise bypass: in
 * a sticky, world-writable directory (/tmp) a link is followed only if it is ours or the
 * directory owner's. Else `-o /tmp/out.tar --force` as root could be led to replace /etc/passwd.
 */
async function refuseForeignLink(link: string): Promise<void> {
  const uid = process.geteuid?.();
  if (uid === undefined) return;
  const [l, d] = await Promise.all([lstat(link), stat(dirname(link))]);
  const shared = (d.mode & 0o1000) !== 0 && (d.mode & 0o002) !== 0;
  if (shared && l.uid !== uid && l.uid !== d.uid) {
    throw new FerryError('IO', `${link} is a symbolic link another user made in the shared directory ${dirname(link)}: not followed`, {
      hint: 'remove the link, or write somewhere else',
    });
  }
}

/**
 * Whether an output path names a device, FIFO or socket (`-o /dev/null`, a named pipe), which is
 * written into as it is: a temp file renamed over it would replace the node with a regular file
 * (as root, /dev/null itself).
 */
export async function isSpecialFile(path: string): Promise<boolean> {
  const st = await stat(path).catch(() => undefined);
  return st !== undefined && !st.isFile() && !st.isDirectory();
}

export async function publishBytes(dest: string, data: Uint8Array | string, opts: { syncDir?: boolean; mode?: number } = {}): Promise<void> {
  if (await isSpecialFile(dest)) return writeFile(dest, data).catch((e: unknown) => Promise.reject(withPath(e, dest)));
  const tmp = tempPathFor(dest);
  const fh = await open(tmp, 'wx', opts.mode ?? 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
    await fh.close();
    await rename(tmp, dest);
  } catch (e) {
    await fh.close().catch(() => {});
    await unlink(tmp).catch(() => {});
    throw withPath(e, dest);
  }
  if (opts.syncDir) await syncDir(dirname(dest));
}

export async function syncDir(dir: string): Promise<void> {
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } catch {
    // some filesystems refuse fsync on a directory; the rename is still atomic
  } finally {
    await d.close();
  }
}
