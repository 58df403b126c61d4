import { hostname } from 'node:os';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { envNumber } from '../util/env.js';

interface Owner {
  pid: number;
  host: string;
  since: string;
}

export interface LockOptions {
  /** How long to wait for a live holder; then LOCKED (exit 8). */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** FERRY_LOCK_TIMEOUT (seconds) bounds the wait for another process's lock; default 60. */
export function lockTimeoutFromEnv(): number {
  return envNumber('FERRY_LOCK_TIMEOUT', { min: 0, unit: 'seconds' }, 60) * 1000;
}

export async function processAlive(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  // kill() also reaches a zombie: a killed run whose parent has not reaped it yet (a container's
  // pid 1 may take its time) runs nothing, and what it left must not wait for the reaping.
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  const state = stat?.slice(stat.lastIndexOf(')') + 2)[0];
  return state !== 'Z' && state !== 'X';
}

/** A lock whose owner is gone: a dead pid on this host, or an unreadable file older than a minute. */
async function staleReason(path: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  let owner: Owner | undefined;
  try {
    owner = JSON.parse(text) as Owner;
  } catch {
    owner = undefined;
  }
  if (!owner || typeof owner.pid !== 'number') {
    const st = await stat(path).catch(() => undefined);
    return st && Date.now() - st.mtimeMs > 60_000 ? 'unreadable lock file older than a minute' : undefined;
  }
  if (owner.host === hostname() && !(await processAlive(owner.pid))) {
    return `process ${owner.pid} that held it since ${owner.since} is gone`;
  }
  return undefined;
}

async function holder(path: string): Promise<string> {
  try {
    const o = JSON.parse(await readFile(path, 'utf8')) as Owner;
    return `process ${o.pid} on ${o.host}, since ${o.since}`;
  } catch {
    return 'another process';
  }
}

/**
 * Takes an exclusive lock file (created with O_EXCL) and returns its release. Locks left by killed
 * processes are broken with a warning; a live holder is waited for, up to the timeout.
 */
export async function acquireLock(path: string, opts: LockOptions = {}): Promise<() => Promise<void>> {
  const deadline = Date.now() + (opts.timeoutMs ?? 60_000);
  let delay = 20;
  for (;;) {
    opts.signal?.throwIfAborted();
    try {
      const fh = await open(path, 'wx', 0o644);
      const owner: Owner = { pid: process.pid, host: hostname(), since: new Date().toISOString() };
      await fh.writeFile(JSON.stringify(owner));
      await fh.close();
      return () => unlink(path).catch(() => {});
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
    const stale = await staleReason(path);
    if (stale) {
      // Move it aside first: of two processes breaking the same stale lock, only one rename wins.
      const aside = `${path}.stale-${process.pid}`;
      try {
        await rename(path, aside);
        await unlink(aside).catch(() => {});
        warn(`broke a stale lock ${path}: ${stale}`);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      }
      continue;
    }
    if (Date.now() > deadline) {
      throw new FerryError('LOCKED', `${path} is locked by ${await holder(path)}`, {
        hint: 'wait for the other ferry process to finish, or remove the lock file if that process no longer exists',
      });
    }
    await sleep(delay);
    delay = Math.min(delay * 2, 250);
  }
}

/** Runs `fn` holding the lock file `path` (see acquireLock). */
export async function withLock<T>(path: string, fn: () => Promise<T>, opts: LockOptions = {}): Promise<T> {
  const release = await acquireLock(path, opts);
  try {
    return await fn();
  } finally {
    await release();
  }
}
