import { createHash } from 'node:crypto';
import { basename, dirname, join } from 'node:path';

/** Temp names carry the pid so a later run can tell a dead writer's leftovers from a live one's. */
export const TEMP_PREFIX = '.tmp-';
/** A partial download in a layout's blobs/: `.partial-<pid>-<encoded digest>`, kept to resume. */
export const PARTIAL_PREFIX = '.partial-';

// NAME_MAX (ext4, xfs, btrfs: 255 bytes; FAT and exFAT: 255 characters) less the longest
// `.tmp-<pid>-<8 hex>-` (pids go to 4194304): a longer name would fit but its temp name would not.
const LONGEST_TAIL = 255 - 24;

/** Temp paths of this process whose tail is not their name (see tempTail), for messages. */
const shortened = new Map<string, string>();

/**
 * What stands for `name` at the end of its temp name: the name itself, or for a name too long to
 * carry a prefix, its first bytes and a hash of the whole (the same in every run, so a dead run's
 * temp file is still found).
 */
export function tempTail(name: string): string {
  if (Buffer.byteLength(name) <= LONGEST_TAIL) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 16);
  let head = '';
  for (const ch of name) {
    if (Buffer.byteLength(head + ch) > LONGEST_TAIL - 1 - hash.length) break;
    head += ch;
  }
  return `${head}~${hash}`;
}

/** `.tmp-<pid>-<random>-<name>` beside `dest`: written there, then renamed over it. */
export function tempPathWith(dest: string, pid: number, random: string): string {
  const name = basename(dest);
  const tail = tempTail(name);
  const path = join(dirname(dest), `${TEMP_PREFIX}${pid}-${random}-${tail}`);
  if (tail !== name) shortened.set(path, dest);
  return path;
}

export function tempOwnerPid(name: string): number | undefined {
  if (!name.startsWith(TEMP_PREFIX)) return undefined;
  const pid = Number(name.slice(TEMP_PREFIX.length).split('-')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** Past the prefix, pid and random part: the tail (the name may hold dashes of its own). */
export function tempTailOf(name: string): string | undefined {
  if (tempOwnerPid(name) === undefined) return undefined;
  const [, , ...rest] = name.slice(TEMP_PREFIX.length).split('-');
  return rest.length > 0 ? rest.join('-') : undefined;
}

/** The path a temp file stands for, for messages: users named `dest`, never the temp name. */
export function destinationOf(path: string): string {
  const long = shortened.get(path);
  if (long !== undefined) return long;
  const tail = tempTailOf(basename(path));
  return tail === undefined ? path : join(dirname(path), tail);
}
