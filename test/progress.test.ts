import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { FERRY, ferry } from './helpers/cli.js';
import { testdataImages } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { startDistribution } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';
import { TtyProgress } from '../src/progress/tty.js';

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
    const dst = join(await tempDir(), 'd');
    const screen = await inTmux(`${FERRY} copy oci:${src}:big oci:${dst}:big`);
    expect(screen).toContain('EXIT=0');
    expect(screen).toMatch(/[0-9a-f]{12}: Complete 50\.3MB/);
    expect(screen).toMatch(/Total: 101MB\/101MB \S+\/s ETA/);
    expectEachBlobOnce(screen, 2);
  });

  describe.skipIf(!hasTool('tmux'))('save, load and sync on a terminal (tmux)', () => {
    let src: string;
    let archive: string;
    beforeAll(async () => {
      src = join(await tempDir(), 'src');
      await makeLayout(src, [{ tag: 'big', layers: [48 << 20, 48 << 20] }]);
      archive = join(await tempDir(), 'big.tar');
    });

    it('save: a line per blob and a total of everything the archive will hold', async () => {
      const screen = await inTmux(`${FERRY} --store ${await tempDir()} save oci:${src}:big -o ${archive}`);
      expect(screen).toContain('EXIT=0');
      expect(screen).toMatch(/[0-9a-f]{12}: Complete 50\.3MB/);
      expect(screen).toMatch(/Total: 101MB\/101MB \S+\/s ETA/);
      expectEachBlobOnce(screen, 2);
    });

    it('load: a line per blob and a total of the archive bytes read', async () => {
      const screen = await inTmux(`${FERRY} --store ${await tempDir()} load -i ${archive}`);
      expect(screen).toContain('EXIT=0');
      expect(screen).toMatch(/[0-9a-f]{12}: Complete 50\.3MB/);
      expect(screen).toMatch(/Total: 101MB\/101MB \S+\/s ETA/);
      expect(screen).toContain('Loaded image: big');
      expectEachBlobOnce(screen, 2);
    });

    it.skipIf(!hasTool('docker-registry'))('sync: each tag copied gets its own lines and total', async () => {
      const reg = await startDistribution();
      try {
        const pushed = await ferry(['copy', `oci:${src}:big`, `docker://${reg.host}/p/big:1`]);
        expect(pushed.code, pushed.stderr).toBe(0);
        const screen = await inTmux(`${FERRY} sync ${reg.host}/p/big oci:${await tempDir()}/mirror`);
        expect(screen).toContain('EXIT=0');
        expect(screen).toContain(`${reg.host}/p/big:1: copying`);
        expect(screen).toMatch(/[0-9a-f]{12}: Complete 50\.3MB/);
        expect(screen).toMatch(/Total: 101MB\/101MB \S+\/s ETA/);
        expect(screen).toContain(`${reg.host}/p/big:1: synced`);
        expectEachBlobOnce(screen, 2);
        // Off a terminal: the same lines, plain.
        const plain = await ferry(['sync', `${reg.host}/p/big`, `oci:${await tempDir()}/mirror`]);
        expect(plain.code, plain.stderr).toBe(0);
        expect(plain.stderr).toContain(`${reg.host}/p/big:1: copying`);
        expect(plain.stderr).toMatch(/^[0-9a-f]{12}: Complete \(50\.3MB\)$/m);
        expect(plain.stderr).not.toContain('\x1b[');
      } finally {
        await reg.stop();
      }
    });

    it('more blobs than the screen has lines: finished ones are left behind, none drawn twice', async () => {
      const many = join(await tempDir(), 'many');
      await makeLayout(many, [{ tag: 'm', layers: Array.from({ length: 24 }, () => 1 << 20) }]);
      const screen = await inTmux(`${FERRY} copy oci:${many}:m oci:${await tempDir()}/d:m`, { height: 12 });
      expect(screen).toContain('EXIT=0');
      expect(screen).toMatch(/Total: 25\.2MB\/25\.2MB/);
      expectEachBlobOnce(screen, 25);
    });
  });

  it('off a terminal: load prints one plain line per blob', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [5 << 20] }]);
    const archive = join(await tempDir(), 'a.tar');
    expect((await ferry(['--store', await tempDir(), 'save', `oci:${src}:big`, '-o', archive])).code).toBe(0);
    const store = await tempDir();
    const load = await ferry(['--store', store, 'load', '-i', archive]);
    expect(load.code, load.stderr).toBe(0);
    expect(load.stderr).toMatch(/^[0-9a-f]{12}: Complete \(5\.24MB\)$/m);
    expect(load.stderr).not.toContain('\x1b[');
    const again = await ferry(['--store', store, 'load', '-i', archive]);
    expect(again.stderr).toMatch(/^[0-9a-f]{12}: Already exists$/m);
  });
});

/** Runs a shell command in a detached tmux window; returns the screen and scrollback once it exits. */
async function inTmux(command: string, o: { height?: number } = {}): Promise<string> {
  const session = `ferry-progress-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '140', '-y', String(o.height ?? 30), `${command}; echo EXIT=$?; sleep 30`]);
  try {
    let screen = '';
    for (let i = 0; i < 300 && !screen.includes('EXIT='); i++) {
      await sleep(100);
      screen = execFileSync('tmux', ['capture-pane', '-p', '-S', '-', '-t', session]).toString();
    }
    return screen;
  } finally {
    execFileSync('tmux', ['kill-session', '-t', session]);
  }
}

/** Redrawn in place: each blob's line is on screen exactly once, in its final state. */
function expectEachBlobOnce(screen: string, blobs: number): void {
  const ids = screen.match(/^[0-9a-f]{12}: (Complete|Already exists|Mounted)/gm) ?? [];
  expect(new Set(ids.map((l) => l.slice(0, 12))).size).toBe(ids.length);
  expect(ids.length).toBeGreaterThanOrEqual(blobs);
  expect(screen).not.toMatch(/^[0-9a-f]{12}: Copying/m);
}

describe('terminal progress on a pty that reports no size', () => {
  it('0 columns and 0 rows are read as unknown, not as a width that cuts every line short', () => {
    let written = '';
    const out = { columns: 0, rows: 0, write: (s: string) => ((written += s), true) } as unknown as NodeJS.WriteStream;
    const p = new TtyProgress(out);
    const digest = `sha256:${'ab'.repeat(32)}` as const;
    p.onEvent({ type: 'blob-start', digest, size: 271 });
    p.onEvent({ type: 'blob-done', digest, size: 271 });
    p.finish();
    // eslint-disable-next-line no-control-regex
    const lines = written.replace(/\x1b\[[0-9]*[A-Z]/g, '').split('\n').filter(Boolean);
    expect(lines[0]).toBe('abababababab: Complete 271B');
    expect(lines[1]).toMatch(/^Total: 271B\/271B .* ETA \S+$/);
  });
});
