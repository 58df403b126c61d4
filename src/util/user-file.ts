import { readFile } from 'node:fs/promises';
import { withPath } from '../blob/publish.js';
import { FerryError } from '../errors.js';

/**
 * The text of a file the user named (a sync configuration, an inventory), or an error saying
 * why not in its own words: missing (`what PATH does not exist`), a directory, too large for one
 * string (~512 MiB); any other failure names the path. A byte-order mark is dropped.
 */
export async function readUserFile(path: string, what: string, hint?: string): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).replace(/^\uFEFF/, '');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new FerryError('NOT_FOUND', `${what} ${path} does not exist`);
    if (code === 'EISDIR') throw new FerryError('USAGE', `${what} ${path} is a directory, not a file`, hint ? { hint } : {});
    if (code === 'ERR_STRING_TOO_LONG') throw new FerryError('TOO_LARGE', `${what} ${path} is too large to read`);
    throw withPath(e, path);
  }
}
