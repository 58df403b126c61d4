import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { finish, start, type RunResult, type RunOptions } from './cli.js';

export interface KillAt {
  /** Bytes moved so far by the run being watched (proxy counters, file sizes). */
  progress: () => number | Promise<number>;
  /** What progress() reaches when the run is complete. */
  total: number;
  /** Kill once progress() reaches this share of total (0.1, 0.5, 0.9). */
  fraction: number;
}

export interface Killed {
  /** False when the run finished before the kill point was seen. */
  killed: boolean;
  /** progress() when the kill was sent. */
  at: number;
  result: RunResult;
}

/** Runs ferry and SIGKILLs it once progress() reaches `fraction` of `total`. */
export async function runAndKill(args: string[], k: KillAt, opts: RunOptions = {}): Promise<Killed> {
  const child = start(args, opts);
  const done = finish(child);
  let exited = false;
  void done.then(() => (exited = true));
  let at = 0;
  while (!exited) {
    at = await k.progress();
    if (at >= k.fraction * k.total) break;
    await sleep(2);
  }
  const killed = !exited && child.kill('SIGKILL');
  const result = await done;
  return { killed: killed && result.signal === 'SIGKILL', at, result };
}

/** Sum of file sizes under `dir` whose names pass `keep` (default: all); 0 when `dir` is missing. */
export async function bytesUnder(dir: string, keep: (name: string) => boolean = () => true): Promise<number> {
  let n = 0;
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  for (const e of entries) {
    if (!e.isFile() || !keep(e.name)) continue;
    n += (await stat(join(e.parentPath, e.name)).catch(() => ({ size: 0 }))).size;
  }
  return n;
}

/** Blobs (by digest) present with their full size in a layout. */
export async function presentBlobs(layoutDir: string, blobs: Array<{ digest: string; size: number }>): Promise<Array<{ digest: string; size: number }>> {
  const out = [];
  for (const b of blobs) {
    const st = await stat(join(layoutDir, 'blobs', 'sha256', b.digest.slice(7))).catch(() => undefined);
    if (st?.size === b.size) out.push(b);
  }
  return out;
}
