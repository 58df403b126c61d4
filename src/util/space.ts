import { stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FerryError } from '../errors.js';

/** The errno of `e` or of the error it wraps. */
function errnoOf(e: unknown): { code?: string; path?: string } | undefined {
  const err = e as { code?: string; path?: string; cause?: unknown } | undefined;
  if (!err || typeof err !== 'object') return undefined;
  if (err.code === 'ENOSPC' || err.code === 'EDQUOT') return err;
  return err.cause ? errnoOf(err.cause) : undefined;
}

/** 1.2 GiB, 3.1 MiB: binary units, as df -h shows them. */
export function binarySize(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(1)} ${units[u]}`;
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
 * A full disk (ENOSPC, EDQUOT) becomes an IO error (exit 7) that says where, and how much more
 * space the rest of the operation needs: `remaining` bytes still to write, less what is free now.
 * Anything else is returned unchanged.
 */
export async function explainDiskFull(e: unknown, remaining: number): Promise<unknown> {
  const err = errnoOf(e);
  if (!err?.path) return e;
  const where = await mountOf(err.path).catch(() => undefined);
  if (!where) return e;
  const fs = await statfs(where.dir).catch(() => undefined);
  const free = fs ? fs.bavail * fs.bsize : 0;
  const need = remaining > free ? remaining - free : remaining;
  return new FerryError('IO', `${err.code}: no space left writing ${err.path}: need about ${binarySize(need)} more on ${where.mount} (free ${binarySize(free)})`, {
    cause: e,
    hint: 'free some space on that filesystem (or choose another destination) and run the same command again: complete blobs are kept',
  });
}
