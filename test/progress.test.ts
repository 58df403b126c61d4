import { execFileSync } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { FERRY, ferry } from './helpers/cli.js';
import { testdataImages } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { startDistribution } from './helpers/registry.js';
import { startServe } from './helpers/serve.js';
import { hasTool } from './helpers/tools.js';
import { TtyProgress } from '../src/progress/tty.js';
import { Screen } from './helpers/screen.js';

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
    // The blob counts are a status line, as for pull and push: stderr, and not with -q.
    expect(quiet.stdout).not.toContain('blob(s)');
    expect(r.stdout).not.toContain('blob(s)');
    expect(r.stderr).toMatch(/^\d+ blob\(s\) copied \(.*\), 0 already present \(0B\)$/m);
    expect(again.stderr).toMatch(/^0 blob\(s\) copied \(0B\), \d+ already present/m);
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

  it.skipIf(!hasTool('tmux'))('a retry printed during the display stays whole, above the bars (tmux)', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 'big', layers: [16 << 20, 1 << 20] }]);
    const served = await startServe(await tempDir());
    const proxy = await startFaultProxy(served.host);
    try {
      expect((await ferry(['copy', `oci:${src}:big`, `docker://${served.host}/p/big:1`])).code).toBe(0);
      const small = img!.layers[1]!.digest;
      // The big layer is still coming in (~2 s) when the small one's first answer, a 503, arrives.
      proxy.setRate(8 << 20);
      proxy.setRule((req, count) => (req.method === 'GET' && req.url.endsWith(small) && count === 0 ? { delayMs: 700, status: 503 } : undefined));
      const screen = await inTmux(`FERRY_RETRY_BACKOFF_MS=20 ${FERRY} --store ${await tempDir()} pull ${proxy.host}/p/big:1`);
      expect(screen).toContain('EXIT=0');
      expect(screen).toMatch(new RegExp(`^ferry: retrying http://${proxy.host}/v2/p/big/blobs/${small} in \\S+ s \\(.*, attempt 1\\)$`, 'm'));
      expectEachBlobOnce(screen, 3);
      expect(screen).toMatch(/^Total: 17\.\dMB\/17\.\dMB /m);
    } finally {
      await proxy.stop();
      await served.stop();
    }
  });

  it.skipIf(!hasTool('script'))('TERM=dumb on a terminal: one plain line per state change, no escape sequences', async () => {
    const dir = await tempDir();
    const typescript = join(dir, 'typescript');
    const run = (term: string | undefined, dst: string) => execFileSync('script', ['-qec', `${FERRY} copy oci:${TESTDATA}:layers oci:${join(dir, dst)}:x`, typescript], { env: { ...process.env, TERM: term }, stdio: 'ignore' });
    run('dumb', 'd');
    const dumb = await readFile(typescript, 'utf8');
    expect(dumb).toMatch(/^[0-9a-f]{12}: Complete \(/m);
    expect(dumb).not.toContain('\x1b[');
    run('xterm', 'x');
    expect(await readFile(typescript, 'utf8')).toContain('\x1b[2K');
  });

  it('off a terminal: a sync copying several tags at once names each tag once, and each blob once', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, ['t1', 't2', 't3', 't4'].map((tag) => ({ tag, layers: [3 << 20, 3 << 20] })));
    const served = await startServe(await tempDir());
    try {
      for (const t of ['t1', 't2', 't3', 't4']) expect((await ferry(['copy', '-q', `oci:${src}:${t}`, `docker://${served.host}/p/app:${t}`])).code).toBe(0);
      const r = await ferry(['sync', '--jobs', '4', `${served.host}/p/app`, `oci:${await tempDir()}/mirror`]);
      expect(r.code, r.stderr).toBe(0);
      for (const t of ['t1', 't2', 't3', 't4']) {
        expect(r.stderr.split('\n').filter((l) => l === `${served.host}/p/app:${t}: copying`), r.stderr).toHaveLength(1);
        expect(r.stderr).toContain(`${served.host}/p/app:${t}: synced`);
      }
      // 8 layers and 4 configs, each Complete once.
      expect(r.stderr.match(/^[0-9a-f]{12}: Complete /gm), r.stderr).toHaveLength(12);
    } finally {
      await served.stop();
    }
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

describe.skipIf(!hasTool('tmux'))('a terminal that goes away during a run', () => {
  it('with SIGHUP ignored, the live progress meeting a hung-up terminal (EIO) does not stop a save: it completes, exit 0', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'big', layers: [64 << 20, 64 << 20] }]);
    const file = join(dir, 'out.tar');
    const log = join(dir, 'rc');
    const session = `ferry-hangup-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
    // Progress goes to the terminal (stderr), the result line to a file.
    execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '100', '-y', '20', `trap '' HUP; ${FERRY} save oci:${src}:big -o ${file} > ${join(dir, 'stdout')}; echo $? > ${log}`]);
    let writing = false;
    for (let i = 0; i < 400 && !writing; i++) {
      writing = (await readdir(dir)).some((n) => n.startsWith('.tmp-'));
      if (!writing) await sleep(10);
    }
    execFileSync('tmux', ['kill-session', '-t', session]);
    let rc: string | undefined;
    for (let i = 0; i < 300 && rc === undefined; i++) {
      rc = await readFile(log, 'utf8').catch(() => undefined);
      if (rc === undefined) await sleep(100);
    }
    expect(writing, 'the save never started writing').toBe(true);
    // Was exit 1 (an unhandled EIO from stderr) with the temp file left behind.
    expect(rc?.trim()).toBe('0');
    expect((await ferry(['verify', file])).code).toBe(0);
    expect((await readdir(dir)).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });
});

/** Runs a shell command in a detached tmux window; returns the screen and scrollback (wrapped lines joined) once it exits. */
async function inTmux(command: string, o: { height?: number } = {}): Promise<string> {
  const session = `ferry-progress-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  execFileSync('tmux', ['new-session', '-d', '-s', session, '-x', '140', '-y', String(o.height ?? 30), `${command}; echo EXIT=$?; sleep 30`]);
  try {
    let screen = '';
    for (let i = 0; i < 300 && !screen.includes('EXIT='); i++) {
      await sleep(100);
      screen = execFileSync('tmux', ['capture-pane', '-p', '-J', '-S', '-', '-t', session]).toString().replace(/ +$/gm, '');
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

describe('terminal progress when every blob is already there', () => {
  it('the total line says nothing is to be copied and how much was present, not "0B/0B 0B/s ETA --"', () => {
    const screen = new Screen(80, 10);
    const p = new TtyProgress(screen.stream);
    p.onEvent({ type: 'queued', blobs: 2, bytes: 3_000_000 });
    for (const [i, size] of [[1, 1_000_000], [2, 2_000_000]] as const) {
      const digest = `sha256:${String(i).repeat(64)}` as const;
      p.onEvent({ type: 'blob-skip', digest, size });
    }
    p.finish();
    expect(screen.text().filter(Boolean)).toEqual(['111111111111: Already exists', '222222222222: Already exists', 'Total: nothing to copy, 3.00MB already present']);
  });
});

describe('terminal progress drawn on a small terminal (Screen)', () => {
  const digest = (i: number) => `sha256:${String(i).repeat(64)}` as const;
  const MB = 1_000_000;
  /** Three blobs of 30MB started, each `done` bytes along, drawn at once (finish() stops the timer). */
  function copying(screen: Screen, done: number): TtyProgress {
    const p = new TtyProgress(screen.stream);
    p.onEvent({ type: 'queued', blobs: 3, bytes: 90 * MB });
    for (let i = 1; i <= 3; i++) p.onEvent({ type: 'blob-start', digest: digest(i), size: 30 * MB });
    advance(p, done);
    return p;
  }
  function advance(p: TtyProgress, done: number): void {
    for (let i = 1; i <= 3; i++) p.onEvent({ type: 'blob-progress', digest: digest(i), bytes: done, size: 30 * MB });
    (p as unknown as { draw(): void }).draw();
  }
  function complete(p: TtyProgress): void {
    for (let i = 1; i <= 3; i++) p.onEvent({ type: 'blob-done', digest: digest(i), size: 30 * MB });
    p.finish();
  }

  it('a line printed during the display (a warning, a retry) stays above it, whole, and the bars below', () => {
    const screen = new Screen(60, 20);
    screen.write('Pulling example.com/app:1\n');
    const p = copying(screen, 5 * MB);
    p.print('ferry: warning: a warning long enough to be wrapped by a terminal of sixty columns\n');
    advance(p, 10 * MB);
    p.print('ferry: retrying http://127.0.0.1:5000/v2/app/blobs/sha256:1111 in 0.4 s\n');
    complete(p);
    screen.write('Digest: sha256:abc\n');
    expect(screen.text()).toEqual([
      'Pulling example.com/app:1',
      'ferry: warning: a warning long enough to be wrapped by a ter',
      'minal of sixty columns',
      'ferry: retrying http://127.0.0.1:5000/v2/app/blobs/sha256:11',
      '11 in 0.4 s',
      '111111111111: Complete 30.0MB',
      '222222222222: Complete 30.0MB',
      '333333333333: Complete 30.0MB',
      expect.stringMatching(/^Total: 90\.0MB\/90\.0MB \S+\/s ETA \S+$/),
      'Digest: sha256:abc',
    ]);
  });

  it('printing before the first frame and after finish() writes the text as it is', () => {
    const screen = new Screen(80);
    const p = new TtyProgress(screen.stream);
    p.print('before\n');
    p.onEvent({ type: 'blob-start', digest: digest(1), size: 10 });
    p.onEvent({ type: 'blob-done', digest: digest(1), size: 10 });
    p.finish();
    p.print('after\n');
    expect(screen.text()).toEqual(['before', '111111111111: Complete 10B', expect.stringMatching(/^Total: 10B\/10B /), 'after']);
  });

  it('a narrow terminal: the bar narrows, then goes, and the sizes stay in view; no line wraps', () => {
    for (const [columns, bar] of [[100, 30], [60, 21], [50, 11], [45, 0], [30, 0]] as const) {
      const screen = new Screen(columns);
      const p = copying(screen, 10 * MB);
      const line = screen.text()[0]!;
      expect(line.length, line).toBeLessThan(columns);
      const filled = Math.floor(bar / 3);
      if (bar) expect(line).toBe(`111111111111: Copying [${'='.repeat(filled - 1)}>${' '.repeat(bar - filled)}] 10.0MB/30.0MB`);
      else expect(line).toBe('111111111111: Copying 10.0MB/30.0MB'.slice(0, columns - 1));
      complete(p);
      expect(screen.text().slice(0, 3)).toEqual(['111111111111: Complete 30.0MB', '222222222222: Complete 30.0MB', '333333333333: Complete 30.0MB']);
    }
  });

  it('a terminal made narrower mid-transfer: the rewrapped frame is cleared, no piece of it left behind', () => {
    const screen = new Screen(100);
    screen.write('line above\n');
    const p = copying(screen, 10 * MB);
    screen.resize(40);
    advance(p, 20 * MB);
    expect(screen.text()).toEqual([
      'line above',
      '111111111111: Copying 20.0MB/30.0MB',
      '222222222222: Copying 20.0MB/30.0MB',
      '333333333333: Copying 20.0MB/30.0MB',
      expect.stringMatching(/^Total: 60\.0MB\/90\.0MB \S+\/s ETA/),
    ]);
    screen.resize(100);
    complete(p);
    expect(screen.text(), screen.text().join('\n')).toHaveLength(5);
    expect(screen.text()[3]).toBe('333333333333: Complete 30.0MB');
  });

  it('a terminal shorter than the blobs in flight: the frame keeps to its rows, the rest counted', () => {
    const screen = new Screen(80, 4);
    const p = copying(screen, 10 * MB);
    advance(p, 20 * MB);
    expect(screen.text()).toEqual([
      `111111111111: Copying [${'='.repeat(19)}>${' '.repeat(10)}] 20.0MB/30.0MB`,
      '(2 more)',
      expect.stringMatching(/^Total: 60\.0MB\/90\.0MB /),
    ]);
    complete(p);
    expect(screen.text().slice(0, 3)).toEqual(['111111111111: Complete 30.0MB', '222222222222: Complete 30.0MB', '333333333333: Complete 30.0MB']);
  });

  it('never clears the screen from the frame\'s first row (tmux would keep a copy of each frame in its scrollback)', () => {
    const screen = new Screen(80);
    const p = copying(screen, 1 * MB);
    advance(p, 2 * MB);
    p.print('ferry: warning: w\n');
    complete(p);
    // eslint-disable-next-line no-control-regex
    expect(screen.written).not.toMatch(/\x1b\[[0-9]+A\r?\x1b\[J/);
    expect(screen.written).toContain('\x1b[');
  });
});
