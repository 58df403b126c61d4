import { readdir, readFile, stat, statfs } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { PARTIAL_PREFIX, TEMP_PREFIX } from '../blob/temp-names.js';
import { FerryError } from '../errors.js';
import { binarySize } from '../progress/format.js';

/** The errno of `e` or of the error it wraps. */
function errnoOf(e: unknown): { code?: string; path?: string } | undefined {
  const err = e as { code?: string; path?: string; cause?: unknown } | undefined;
  if (!err || typeof err !== 'object') return undefined;
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT') return err;
  return err.cause ? errnoOf(err.cause) : undefined;
}

/** The nearest existing directory at or above `path`, and the mount point it lives on. */
async function mountOf(path: string): Promise<{ dir: string; mount: string } | undefined> {
  let dir = path;
  let st = await stat(dir).catch(() => undefined);
  while (!st?.isDirectory()) {
    if (dirname(dir) === dir) return undefined;
    dir = dirname(dir);
    st = await stat(dir).catch(() => undefined);
  }
  let mount = dir;
  while (dirname(mount) !== mount) {
    const up = await stat(dirname(mount)).catch(() => undefined);
    if (!up || up.dev !== st.dev) break;
    mount = dirname(mount);
  }
  return { dir, mount };
}

/**
 * A full disk (ENOSPC, EDQUOT) becomes an IO error (exit 7) that says where, and, when the caller
 * knows the bytes still to write (`remaining`), how much more space that needs beyond what is free
 * now. `path` names the file when the error carries none. Anything else is returned unchanged.
 */
export async function explainDiskFull(e: unknown, o: { remaining?: number; path?: string } = {}): Promise<unknown> {
  const err = errnoOf(e);
  const path = err?.path ?? o.path;
  if (!err || !path) return e;
  const where = await mountOf(path).catch(() => undefined);
  if (!where) return e;
  const fs = await statfs(where.dir).catch(() => undefined);
  // This run's temp files there go as it fails: the space they hold is free for the next run
  // (a 45 MiB temp file left "free 0 B, need 55 MiB" where 12 MiB more would do).
  const freeBytes = (fs ? fs.bavail * fs.bsize : 0) + (await ownTempBytes(where.dir));
  const free = binarySize(freeBytes);
  const need = o.remaining === undefined ? undefined : Math.max(o.remaining - freeBytes, 0) || o.remaining;
  const space = need === undefined ? `on ${where.mount} (free ${free})` : `need about ${binarySize(need)} more on ${where.mount} (free ${free})`;
  return new FerryError('IO', `${err.code}: no space left writing ${path}: ${space}`, {
    cause: e,
    hint: 'free some space on that filesystem (or choose another destination) and run the same command again',
  });
}

/** Bytes in this process's temp files and partial downloads in `dir`. */
async function ownTempBytes(dir: string): Promise<number> {
  let n = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    if (name.startsWith(`${TEMP_PREFIX}${process.pid}-`) || name.startsWith(`${PARTIAL_PREFIX}${process.pid}-`)) n += (await stat(join(dir, name)).catch(() => undefined))?.size ?? 0;
  }
  return n;
}

/** statfs' type of FAT (msdos, vfat): a file holds at most 4 GiB - 1 byte there. exFAT has no such cap. */
const MSDOS_SUPER_MAGIC = 0x4d44;
/** statfs' type of every FUSE filesystem: only mountinfo tells FAT through FUSE (fusefat) apart. */
const FUSE_SUPER_MAGIC = 0x65735546;
const FAT_MAX_FILE = 2 ** 32 - 1;

/**
 * The largest file the filesystem that `path` would be written on can hold, when it caps it
 * below what ferry writes (FAT32, the usual USB stick); undefined for any other.
 */
export async function fileSizeCap(path: string): Promise<{ bytes: number; fs: string; mount: string } | undefined> {
  // Absolute: mountinfo names mount points so.
  const where = await mountOf(dirname(resolve(path))).catch(() => undefined);
  if (!where) return undefined;
  const type = (await statfs(where.dir).catch(() => undefined))?.type;
  const fat = type === MSDOS_SUPER_MAGIC || (type === FUSE_SUPER_MAGIC && (await mountType(where.mount)) === 'fuse.fusefat');
  return fat ? { bytes: FAT_MAX_FILE, fs: 'FAT', mount: where.mount } : undefined;
}

/** The filesystem type /proc/self/mountinfo gives the mount at `mount` (the last one mounted there). */
async function mountType(mount: string): Promise<string | undefined> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  let type: string | undefined;
  for (const line of info.split('\n')) {
    // "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw": field 5 is the mount
    // point (spaces and the like octal-escaped), the type follows the " - ".
    const fields = line.split(' ');
    const dash = fields.indexOf('-');
    if (dash < 0 || unescapeMount(fields[4] ?? '') !== mount) continue;
    type = fields[dash + 1];
  }
  return type;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}
