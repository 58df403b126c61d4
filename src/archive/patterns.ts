import { readdir, stat } from 'node:fs/promises';
import { basename, dirname } from 'node:path';
import { FerryError } from '../errors.js';
import { numberedVolume } from './volumes.js';

/**
 * Names for the volumes of a set where one argument must name them all (`oci-archive:`, `push
 * --from`): a pattern in the file name (`/mnt/usb/app.*.tar`) that ferry expands itself, as a
 * shell would. Only the file name may hold `*`, `?` or `[…]`; the directory is taken as written.
 */
export function isPattern(path: string): boolean {
  return /[*?[]/.test(basename(path));
}

/** A shell pattern for one file name as a regular expression (`[!…]` negates, as in sh). */
function patternRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i]!;
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[' && pattern.indexOf(']', i + 2) > 0) {
      const end = pattern.indexOf(']', i + 2);
      const body = pattern.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\');
      re += `[${body}]`;
      i = end;
    } else re += c.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** The files a pattern matches (hidden ones only if it starts with a dot), in name order. */
async function matches(pattern: string): Promise<string[]> {
  const name = basename(pattern);
  const re = patternRegExp(name);
  const names = await readdir(dirname(pattern)).catch(() => [] as string[]);
  // As written: `set.*.tar` gives `set.001.tar`, `./x/set.*.tar` gives `./x/set.001.tar`.
  const dir = pattern.slice(0, pattern.length - name.length);
  return names.filter((n) => re.test(n) && (name.startsWith('.') || !n.startsWith('.'))).sort().map((n) => dir + n);
}

/** Whether `path` is a file there, or a pattern some file matches. */
export async function archiveExists(path: string): Promise<boolean> {
  if (await stat(path).then(() => true, () => false)) return true;
  return isPattern(path) && (await matches(path)).length > 0;
}

/**
 * The archive files `text` names: itself, or the files it matches if it is a pattern (and no file
 * has that very name). A pattern that matches nothing is refused here, naming it.
 */
export async function archiveFiles(text: string): Promise<string[]> {
  if (!isPattern(text) || (await stat(text).then(() => true, () => false))) return [text];
  const found = await matches(text);
  if (found.length === 0) {
    throw new FerryError('NOT_FOUND', `${text}: no file matches`, { hint: `the volumes of a set are named NAME.001.tar, NAME.002.tar, …: check the directory (ls ${dirname(text)})` });
  }
  return found;
}

/** How to name a whole set in one argument, given one of its volumes: `app.003.tar` -> `app.*.tar`. */
export function volumePattern(path: string): string {
  const v = numberedVolume(path);
  return v ? `${v.stem}.*${v.ext}` : `${dirname(path)}/NAME.*.tar`;
}

/** A path quoted for a shell command line (hints), when it needs it. */
export function shellQuoted(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/**
 * A pattern given as an output (`oci-archive:set.*.tar`, `save -o 'set.*.tar'`) would be written
 * as a file of that very name. Patterns name the volumes of a set to read; a set is written from
 * one name with --volume-size. `where` is the output as written, `command` how to write a set
 * there given a plain name (`set.*.tar` -> `set.tar`).
 */
export function refuseOutputPattern(path: string, where: string, command: (plain: string) => string): void {
  const name = basename(path);
  if (!/[*?]/.test(name)) return;
  const stem = name.replace(/\.?[*?]+/g, '');
  const plain = path.slice(0, path.length - name.length) + (stem === '' || stem.startsWith('.') ? `NAME${stem || '.tar'}` : stem);
  throw new FerryError('USAGE', `${where}: ${name} is a pattern, which names the volumes of a set to read, not a file to write`, {
    hint: `to write a set (NAME.001.tar, NAME.002.tar, …), name one file and add --volume-size: ${command(shellQuoted(plain))}`,
  });
}
