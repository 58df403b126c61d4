import { mkdir, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

/**
 * `mkdir -p`. Node's own recursive mkdir spins forever at 100 % CPU where a directory exists but
 * answers ENOENT for any new child (procfs: `--store /proc/x`, a state directory under /proc): it
 * takes every ENOENT for a missing parent and tries again. Here a directory that is still not
 * found once its parent exists is an error, as it is for `mkdir -p`.
 */
export async function mkdirs(path: string, mode?: number): Promise<void> {
  try {
    await mkdir(path, { mode });
    return;
  } catch (e) {
    if (await existingDirectory(e, path)) return;
    const parent = dirname(path);
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT' || parent === path) throw e;
  }
  await mkdirs(dirname(path), mode);
  try {
    await mkdir(path, { mode });
  } catch (e) {
    if (!(await existingDirectory(e, path))) throw e;
  }
}

/** EEXIST for a directory (made meanwhile by someone else, or there all along) is success. */
async function existingDirectory(e: unknown, path: string): Promise<boolean> {
  if ((e as NodeJS.ErrnoException).code !== 'EEXIST') return false;
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}
