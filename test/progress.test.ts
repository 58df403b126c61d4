import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { FERRY, ferry } from './helpers/cli.js';
import { testdataImages } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { hasTool } from './helpers/tools.js';

describe('progress and machine-readable output', () => {
  it('--json: one JSON event per line, ending with the result object', async () => {
    const exp = await testdataImages();
    const r = await ferry(['copy', '--json', `oci:${TESTDATA}:layers`, `oci:${join(await tempDir(), 'd')}:x`]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; [k: string]: unknown });
    expect(lines.map((l) => l.event)).toContain('blob-start');
    expect(lines.map((l) => l.event)).toContain('blob-done');
    const result = lines.at(-1)!;
    expect(result.event).toBe('result');
    expect((result.images as Array<{ digest: string }>)[0]!.digest).toBe(exp.layers.digest);
    expect(r.stderr).toBe('');
  });

  it('off a terminal: one plain line per state change, no escape sequences; -q prints only results', async () => {
    const dst = join(await tempDir(), 'd');
    const r = await ferry(['copy', `oci:${TESTDATA}:layers`, `oci:${dst}:x`]);
    expect(r.stderr).toMatch(/^[0-9a-f]{12}: Complete \(/m);
    expect(r.stderr).not.toContain('\x1b[');
    const again = await ferry(['copy', `oci:${TESTDATA}:layers`, `oci:${dst}:x`]);
    expect(again.stderr).toMatch(/: Already exists/);
    const quiet = await ferry(['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${join(await tempDir(), 'q')}:x`]);
    expect(quiet.stderr).toBe('');
    expect(quiet.stdout).toContain('Digest: ');
  });

  it('completion prints a shell script, and completes command names', async () => {
    const script = await ferry(['completion']);
    expect(script.code).toBe(0);
    expect(script.stdout).toContain('ferry-completions');
    const words = await ferry(['--get-yargs-completions', 'ferry', '']);
    expect(words.stdout.split('\n')).toEqual(expect.arrayContaining(['pull', 'push', 'copy', 'verify', 'sync']));
  });

  it.skipIf(!hasTool('tmux'))('on a terminal: live per-blob lines and a total line, redrawn in place (tmux)', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [48 << 20, 48 << 20] }]);
    const session = `ferry-progress-${process.pid}`;
    const dst = join(await tempDir(), 'd');
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '140', '-y', '30', `${FERRY} copy oci:${src}:big oci:${dst}:big; echo EXIT=$?; sleep 30`]);
    try {
      let screen = '';
      for (let i = 0; i < 200 && !screen.includes('EXIT='); i++) {
        await sleep(100);
        screen = execFileSync('tmux', ['capture-pane', '-p', '-t', session]).toString();
      }
      expect(screen).toContain('EXIT=0');
      expect(screen).toMatch(/[0-9a-f]{12}: Complete 50\.3MB/);
      expect(screen).toMatch(/Total: 101MB\/101MB \S+\/s ETA/);
      // Redrawn in place: each blob appears on exactly one line.
      const ids = screen.match(/^[0-9a-f]{12}:/gm) ?? [];
      expect(new Set(ids).size).toBe(ids.length);
    } finally {
      execFileSync('tmux', ['kill-session', '-t', session]);
    }
  });
});
