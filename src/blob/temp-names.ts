import { basename, dirname, join } from 'node:path';

/** Temp names carry the pid so a later run can tell a dead writer's leftovers from a live one's. */
export const TEMP_PREFIX = '.tmp-';

/** `.tmp-<pid>-<random>-<name>` beside `dest`: written there, then renamed over it. */
export function tempPathWith(dest: string, pid: number, random: string): string {
  return join(dirname(dest), `${TEMP_PREFIX}${pid}-${random}-${basename(dest)}`);
}

export function tempOwnerPid(name: string): number | undefined {
  if (!name.startsWith(TEMP_PREFIX)) return undefined;
  const pid = Number(name.slice(TEMP_PREFIX.length).split('-')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** The path a temp file stands for, for messages: users named `dest`, never the temp name. */
export function destinationOf(path: string): string {
  const name = basename(path);
  if (tempOwnerPid(name) === undefined) return path;
  // Past the prefix: <pid>-<random>-<name>, and the name may hold dashes of its own.
  const [, , ...rest] = name.slice(TEMP_PREFIX.length).split('-');
  return rest.length > 0 ? join(dirname(path), rest.join('-')) : path;
}
