import { access, constants, stat } from 'node:fs/promises';
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
    return;
  }
}
