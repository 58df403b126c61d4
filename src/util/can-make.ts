import { access, constants, stat, statfs } from 'node:fs/promises';
import { FerryError } from '../errors.js';
import { dirname } from 'node:path';

/** The error `mkdir(path, { recursive: true })` fails with, made without calling it. */
function mkdirError(code: 'ENOTDIR' | 'EACCES', path: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: mkdir '${path}'`), { code, path, syscall: 'mkdir' });
}

/**
 * For dry runs: throws what `mkdir(path, { recursive: true })` would for a path that does not
 * exist yet (its nearest existing ancestor is a file, or cannot be written), creating nothing.
 */
export async function checkCanMake(path: string): Promise<void> {
  for (let dir = dirname(path), child = path; dir !== child; child = dir, dir = dirname(dir)) {
    const st = await stat(dir).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return undefined;
      throw e;
    });
    if (st === undefined) continue;
    if (!st.isDirectory()) throw mkdirError('ENOTDIR', path);
    await access(dir, constants.W_OK).catch(() => {
      throw mkdirError('EACCES', path);
    });
    await refusePseudoFilesystem(dir, path);
    return;
  }
}

// statfs types of the kernel's own filesystems, where no file or directory can be made: root
// passes access(W_OK) there, and only the real run's ENOENT (or EACCES) said so.
const PSEUDO: Record<number, string> = { 0x9fa0: 'procfs', 0x62656572: 'sysfs' };

/**
 * Refuses `path` (to be made in `dir`) when `dir` is on procfs or sysfs, so that a dry run
 * refuses what the real run would, and the real run says why instead of "no such file".
 */
export async function refusePseudoFilesystem(dir: string, path: string): Promise<void> {
  const type = (await statfs(dir).catch(() => undefined))?.type;
  const name = type === undefined ? undefined : PSEUDO[type];
  if (name) throw new FerryError('IO', `cannot write ${path}: ${dir} is on ${name}, where no file can be created`, { hint: 'write somewhere else' });
}
