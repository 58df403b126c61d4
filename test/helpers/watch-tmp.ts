import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { finish, start, type RunResult } from './cli.js';
import { tempDir } from './fs.js';

/**
 * Runs ferry with a TMPDIR of its own, watching it meanwhile: the result, the largest file seen
 * there (a temporary copy of an archive would show up as one), and what was left behind.
 */
export async function runWatchingTmp(args: string[], env: Record<string, string> = {}): Promise<{ r: RunResult; largest: number; left: string[] }> {
  const tmp = await tempDir();
  const child = start(args, { env: { ...env, TMPDIR: tmp } });
  let largest = 0;
  let running = true;
  const watch = (async () => {
    while (running) {
      for (const f of await readdir(tmp).catch(() => [] as string[])) {
        const st = await stat(join(tmp, f)).catch(() => undefined);
        if (st) largest = Math.max(largest, st.size);
      }
      await new Promise((res) => setTimeout(res, 5));
    }
  })();
  const r = await finish(child);
  running = false;
  await watch;
  return { r, largest, left: await readdir(tmp) };
}
