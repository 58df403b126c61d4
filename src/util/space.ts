import { stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
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
  const free = binarySize(fs ? fs.bavail * fs.bsize : 0);
  const need = o.remaining === undefined ? undefined : Math.max(o.remaining - (fs ? fs.bavail * fs.bsize : 0), 0) || o.remaining;
  const space = need === undefined ? `on ${where.mount} (free ${free})` : `need about ${binarySize(need)} more on ${where.mount} (free ${free})`;
  return new FerryError('IO', `${err.code}: no space left writing ${path}: ${space}`, {
    cause: e,
    hint: 'free some space on that filesystem (or choose another destination) and run the same command again',
  });
}
