import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * One private FERRY_STATE_DIR for the whole run (the workers and the ferry processes they start
 * inherit it): sync state and upload notes never leak into ~/.local/state or between runs. The
 * same for the default store: a command a test runs without --store never reaches the store of
 * whoever runs the suite (~/.local/share/ferry/store).
 */
export default async function setup(): Promise<() => Promise<void>> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-state-'));
  process.env.FERRY_STATE_DIR = dir;
  process.env.FERRY_STORE = join(dir, 'default-store');
  return () => rm(dir, { recursive: true, force: true });
}
