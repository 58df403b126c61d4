import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..');

describe('npm run demo', () => {
  it('runs the main job end to end on ferry serve and reports every digest identical', async () => {
    // The demo is what `npm ci && npm run demo` shows a newcomer: it must not break unnoticed.
    const { stdout } = await promisify(execFile)(process.execPath, [join(ROOT, 'dist', 'demo', 'demo.js')], { timeout: 120_000 });
    expect(stdout).toContain('digests identical at every step: yes');
    expect(stdout).toMatch(/the same sync the next night .* 0 copied, \d+ unchanged; archive untouched/);
    expect(stdout).toContain('result: OK');
  }, 150_000);
});
