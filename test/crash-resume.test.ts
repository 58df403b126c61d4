import { mkdir, readdir, readFile, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry, start } from './helpers/cli.js';
import { bytesUnder, presentBlobs, runAndKill } from './helpers/crash.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { TESTDATA, tempDir, tempFilesIn } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { makeTarLayout, writeTarBlob, type BuiltImage } from './helpers/layers.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { startServe } from './helpers/serve.js';
import { listTar } from './helpers/tar-list.js';
import { hasTool } from './helpers/tools.js';

/**
 * Catalogue F (SIGKILL at 10/50/90 % of the bytes, then rerun) for every operation that moves
 * bytes. Registry traffic goes through the fault proxy, throttled so the kill lands mid-transfer,
 * and its byte counters show what the rerun sent again.
 */

const distribution = hasTool('docker-registry');
const MiB = 1 << 20;
const LAYER = 16 * MiB;
/** Registry traffic, both ways: a 48 MiB image takes under a second. */
const RATE = 64 * MiB;
/** Manifests, configs and headers on top of layer bytes. */
const SLACK = MiB;
const NAME = 'example.com/crash/img:1';
const FRACTIONS = [0.1, 0.5, 0.9] as const;
const isTemp = (name: string) => name.startsWith('.tmp-');

describe.skipIf(!distribution)('crash and resume: SIGKILL at 10/50/90 % of the bytes, then the same command again (catalogue F2, I7)', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let img: BuiltImage;
  let total: number;
  let seed: string;
  let archive: string;
  let repoCount = 0;

  beforeAll(async () => {
    reg = await startDistribution();
    proxy = await startFaultProxy(reg.host);
    const src = join(await tempDir(), 'src');
    const files = [];
    for (let i = 1; i <= 3; i++) files.push({ file: await writeTarBlob(src, [{ name: `data/f${i}`, bigFile: LAYER, seed: i }]) });
    [img] = await makeTarLayout(src, [{ tag: 'img', layers: files }]);
    total = img!.layers.reduce((n, l) => n + l.size, 0);
    seed = join(await tempDir(), 'seed');
    expect((await ferry(['--store', seed, 'copy', `oci:${src}:img`, NAME])).code).toBe(0);
    expect((await ferry(['copy', `oci:${src}:img`, `docker://${reg.host}/crash/img:1`])).code).toBe(0);
    archive = join(await tempDir(), 'img.tar');
    expect((await ferry(['--store', seed, 'save', NAME, '-o', archive])).code).toBe(0);
  }, 120_000);
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  /**
   * Kills the run at `fraction` of the proxy's bytes (direction `dir`), asks `completed()` how many
   * layer bytes the killed run finished, reruns the same command, and checks the rerun sent at most
   * the rest again.
   */
  const killAndRerun = async (args: string[], dir: 'up' | 'down', fraction: number, completed: () => Promise<number>) => {
    const start = proxy.seen.length;
    proxy.setRate(RATE);
    try {
      const first = await runAndKill(args, { progress: () => proxy.bytes(start)[dir], total, fraction });
      expect(first.killed, `the run ended before ${fraction * 100} %: ${first.result.stderr}`).toBe(true);
      const done = await completed();
      const mark = proxy.seen.length;
      const rerun = await ferry(args);
      expect(rerun.code, rerun.stderr).toBe(0);
      const again = proxy.bytes(mark)[dir];
      expect(again, `rerun moved ${again} bytes; the killed run had completed ${done} of ${total}`).toBeLessThanOrEqual(total - done + SLACK);
      return { killedAt: first.at, completed: done, again };
    } finally {
      proxy.setRate(undefined);
    }
  };

  /** Kills a local run once `progress()` reaches `fraction` of the layer bytes, then reruns it. */
  const killLocalAndRerun = async (args: string[], fraction: number, progress: () => Promise<number>) => {
    const first = await runAndKill(args, { progress, total, fraction });
    expect(first.killed, `the run ended before ${fraction * 100} %: ${first.result.stderr}`).toBe(true);
    const rerun = await ferry(args);
    expect(rerun.code, rerun.stderr).toBe(0);
    return rerun;
  };

  const verifyStore = async (store: string) => {
    const v = await ferry(['--store', store, 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect(v.stdout).toContain('0 problem(s)');
    expect(await tempFilesIn(store)).toEqual([]);
  };

  const layerBytesIn = async (store: string) => (await presentBlobs(store, img.layers)).reduce((n, b) => n + b.size, 0);

  const layerBytesInRegistry = async (repo: string) => {
    let n = 0;
    for (const l of img.layers) {
      const r = await fetch(`http://${reg.host}/v2/${repo}/blobs/${l.digest}`, { method: 'HEAD' });
      if (r.status === 200) n += l.size;
    }
    return n;
  };


  describe.each(FRACTIONS)('killed at %s of the bytes', (fraction) => {
    it('F2: pull: rerun exits 0, verify is clean, no temp files, complete blobs are not downloaded again', async () => {
      const store = join(await tempDir(), 'store');
      await killAndRerun(['--store', store, 'pull', '--jobs', '1', `${proxy.host}/crash/img:1`], 'down', fraction, () => layerBytesIn(store));
      await verifyStore(store);
    });

    it('F2: sync: rerun exits 0, verify is clean, no temp files, complete blobs are not downloaded again', async () => {
      const store = join(await tempDir(), 'store');
      await killAndRerun(['--store', store, 'sync', '--jobs', '1', `${proxy.host}/crash/img`], 'down', fraction, () => layerBytesIn(store));
      await verifyStore(store);
      expect((await ferry(['--store', store, 'images'])).stdout).toContain('crash/img');
    });

    it('F2: sync into an archive: the rerun reuses what the staging layout completed; the archive verifies, nothing is left beside it', async () => {
      const dir = await tempDir();
      const out = join(dir, 'img.tar');
      await killAndRerun(['sync', '--jobs', '1', `${proxy.host}/crash/img`, out], 'down', fraction, () => layerBytesIn(join(dir, '.img.tar.ferry-sync')));
      const v = await ferry(['verify', out]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(await readdir(dir)).toEqual(['img.tar']);
    });

    it('F2: push: rerun exits 0, the pushed image verifies, complete blobs are not uploaded again', async () => {
      const repo = `crash/push-${++repoCount}`;
      await killAndRerun(['--store', seed, 'push', '--jobs', '1', NAME, `${proxy.host}/${repo}:1`], 'up', fraction, () => layerBytesInRegistry(repo));
      const back = join(await tempDir(), 'back');
      expect((await ferry(['copy', `docker://${reg.host}/${repo}:1`, `oci:${back}:x`])).code).toBe(0);
      const v = await ferry(['verify', back]);
      expect(v.code, v.stdout).toBe(0);
      expect(await tempFilesIn(seed)).toEqual([]);
    });

    it('F2: save: rerun exits 0, the archive verifies, no temp file is left beside it', async () => {
      const dir = await tempDir();
      const out = join(dir, 'out.tar');
      await killLocalAndRerun(['--store', seed, 'save', NAME, '-o', out], fraction, () => bytesUnder(dir, isTemp));
      const v = await ferry(['verify', out]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(await tempFilesIn(dir)).toEqual([]);
    });

    it('F2: load: rerun exits 0, verify is clean, no temp files', async () => {
      const store = join(await tempDir(), 'store');
      await killLocalAndRerun(['--store', store, 'load', '-i', archive], fraction, () => bytesUnder(join(store, 'blobs')));
      await verifyStore(store);
      expect((await ferry(['--store', store, 'images'])).stdout).toContain('crash/img');
    });

    it('F2: export: rerun exits 0, the filesystem tar is complete, no temp file is left beside it', async () => {
      const dir = await tempDir();
      const out = join(dir, 'rootfs.tar');
      await killLocalAndRerun(['--store', seed, 'export', NAME, '-o', out], fraction, () => bytesUnder(dir, isTemp));
      const files = (await listTar(out)).filter((e) => e.type === 'file');
      expect(files.map((f) => [f.name, f.size])).toEqual([1, 2, 3].map((i) => [`data/f${i}`, LAYER]));
      expect(await tempFilesIn(dir)).toEqual([]);
    });
  });

  describe('one big blob across restarts (partial downloads)', () => {
    const BIG = 48 * MiB;
    let layer: { digest: string; size: number };
    beforeAll(async () => {
      const src = join(await tempDir(), 'one');
      const [made] = await makeLayout(src, [{ tag: 'one', layers: [BIG] }]);
      layer = made!.layers[0]!;
      expect((await ferry(['copy', `oci:${src}:one`, `docker://${reg.host}/crash/one:1`])).code).toBe(0);
    }, 60_000);

    const partialsIn = async (store: string) =>
      (await readdir(join(store, 'blobs', 'sha256')).catch(() => [] as string[])).filter((n) => n.startsWith('.partial-'));

    /** Pulls crash/one through the throttled proxy and kills the run at half the blob. */
    const killHalfway = async (store: string) => {
      const start = proxy.seen.length;
      proxy.setRate(RATE);
      try {
        const first = await runAndKill(['--store', store, 'pull', `${proxy.host}/crash/one:1`], { progress: () => proxy.bytes(start).down, total: BIG, fraction: 0.5 });
        expect(first.killed, first.result.stderr).toBe(true);
      } finally {
        proxy.setRate(undefined);
      }
      const [partial] = await partialsIn(store);
      expect(partial, 'the killed run keeps its partial download').toMatch(new RegExp(`^\\.partial-\\d+-${layer.digest.slice(7)}$`));
      const path = join(store, 'blobs', 'sha256', partial!);
      return { path, size: (await stat(path)).size };
    };

    const blobGets = (since: number) => proxy.seen.slice(since).filter((q) => q.method === 'GET' && q.url.endsWith(`/blobs/${layer.digest}`));

    it('F2: SIGKILL at 50 % of one blob; the rerun asks for Range: bytes=N- and downloads only the rest', async () => {
      const store = join(await tempDir(), 'store');
      const partial = await killHalfway(store);
      expect(partial.size).toBeGreaterThan(0);
      expect(partial.size).toBeLessThan(BIG);
      const mark = proxy.seen.length;
      const rerun = await ferry(['--store', store, 'pull', `${proxy.host}/crash/one:1`]);
      expect(rerun.code, rerun.stderr).toBe(0);
      const gets = blobGets(mark);
      expect(gets.map((q) => q.headers.range)).toEqual([`bytes=${partial.size}-`]);
      expect(gets[0]!.down).toBe(BIG - partial.size);
      await verifyStore(store);
    });

    it('F5: an empty partial download left by a dead run does not get in the way: the pull fetches the blob whole and removes it', async () => {
      const store = join(await tempDir(), 'store');
      await mkdir(store);
      expect((await ferry(['--store', store, 'copy', `oci:${TESTDATA}:plain`, 'example.com/p:1'])).code).toBe(0);
      await writeFile(join(store, 'blobs', 'sha256', `.partial-999999-${layer.digest.slice(7)}`), '');
      const mark = proxy.seen.length;
      const pull = await ferry(['--store', store, 'pull', `${proxy.host}/crash/one:1`]);
      expect(pull.code, pull.stderr).toBe(0);
      expect(blobGets(mark).map((q) => q.headers.range ?? 'whole')).toEqual(['whole']);
      await verifyStore(store);
      expect(await partialsIn(store)).toEqual([]);
    });

    it('C7: a server that ignores Range on the rerun sends the whole blob again: it still verifies and is published', async () => {
      const store = join(await tempDir(), 'store');
      await killHalfway(store);
      const mark = proxy.seen.length;
      proxy.setRule((q) => (q.url.endsWith(`/blobs/${layer.digest}`) ? { dropRequestHeaders: ['range'] } : undefined));
      try {
        const rerun = await ferry(['--store', store, 'pull', `${proxy.host}/crash/one:1`]);
        expect(rerun.code, rerun.stderr).toBe(0);
      } finally {
        proxy.setRule(undefined);
      }
      expect(blobGets(mark)[0]!.down).toBe(BIG);
      await verifyStore(store);
    });

    it('B8: a partial download with a wrong byte fails the digest check, is deleted and fetched again whole', async () => {
      const store = join(await tempDir(), 'store');
      const partial = await killHalfway(store);
      const bytes = await readFile(partial.path);
      bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
      await writeFile(partial.path, bytes);
      const mark = proxy.seen.length;
      const rerun = await ferry(['--store', store, 'pull', `${proxy.host}/crash/one:1`]);
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(blobGets(mark).map((q) => q.headers.range)).toEqual([`bytes=${partial.size}-`, undefined]);
      await verifyStore(store);
    });

    it('C6: a network failure that outlasts the retries (exit 6) keeps the partial; the next run continues it', async () => {
      const store = join(await tempDir(), 'store');
      // The link breaks at 20 MiB and the registry then answers 503 until ferry gives up.
      proxy.setRule((q, n) => (q.url.endsWith(`/blobs/${layer.digest}`) ? (n === 0 ? { resetAfter: 20 * MiB } : { status: 503 }) : undefined));
      try {
        const r = await ferry(['--store', store, 'pull', `${proxy.host}/crash/one:1`], { env: { FERRY_RETRY_BACKOFF_MS: '1' } });
        expect(r.code, r.stderr).toBe(6);
      } finally {
        proxy.setRule(undefined);
      }
      const kept = await partialsIn(store);
      expect(kept).toHaveLength(1);
      const size = (await stat(join(store, 'blobs', 'sha256', kept[0]!))).size;
      expect(size).toBeGreaterThan(0);
      const mark = proxy.seen.length;
      const rerun = await ferry(['--store', store, 'pull', `${proxy.host}/crash/one:1`]);
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(blobGets(mark).map((q) => [q.headers.range, q.down])).toEqual([[`bytes=${size}-`, BIG - size]]);
      await verifyStore(store);
    });
  });

  describe('a chunked push killed mid-blob (80 MiB: 32 MiB chunks)', () => {
    const BIG = 80 * MiB;
    let store: string;
    let layer: string;
    beforeAll(async () => {
      const src = join(await tempDir(), 'up');
      const [made] = await makeLayout(src, [{ tag: 'up', layers: [BIG] }]);
      layer = made!.layers[0]!.digest;
      store = join(await tempDir(), 'store');
      expect((await ferry(['--store', store, 'copy', `oci:${src}:up`, 'example.com/crash/up:1'])).code).toBe(0);
    }, 60_000);

    /** Pushes through `via` (a fault proxy), kills at 60 %, reruns; returns what the rerun sent. */
    const killAndRerunPush = async (via: FaultProxy, repo: string) => {
      const state = await tempDir();
      const env = { FERRY_STATE_DIR: state };
      const args = ['--store', store, 'push', 'example.com/crash/up:1', `${via.host}/${repo}:1`];
      const start = via.seen.length;
      via.setRate(RATE);
      try {
        const first = await runAndKill(args, { progress: () => via.bytes(start).up, total: BIG, fraction: 0.6 }, { env });
        expect(first.killed, first.result.stderr).toBe(true);
      } finally {
        via.setRate(undefined);
      }
      expect(await readdir(join(state, 'uploads')), 'the open upload is remembered').toHaveLength(1);
      const mark = via.seen.length;
      const rerun = await ferry(args, { env });
      expect(rerun.code, rerun.stderr).toBe(0);
      expect(await readdir(join(state, 'uploads')), 'and forgotten once complete').toEqual([]);
      const later = via.seen.slice(mark);
      expect(later.some((q) => q.method === 'GET' && q.url.includes('/blobs/uploads/')), 'asks the registry for the upload offset').toBe(true);
      return { later, up: via.bytes(mark).up };
    };

    it('F5: garbage upload notes are ignored, and a note for a blob that arrived meanwhile is dropped by the rerun', async () => {
      const state = await tempDir();
      const args = ['--store', store, 'push', 'example.com/crash/up:1', `${proxy.host}/crash/note:1`];
      const start = proxy.seen.length;
      proxy.setRate(RATE);
      try {
        const first = await runAndKill(args, { progress: () => proxy.bytes(start).up, total: BIG, fraction: 0.6 }, { env: { FERRY_STATE_DIR: state } });
        expect(first.killed, first.result.stderr).toBe(true);
      } finally {
        proxy.setRate(undefined);
      }
      const [note] = await readdir(join(state, 'uploads'));
      expect(note).toMatch(/^[0-9a-f]{64}\.json$/);
      await writeFile(join(state, 'uploads', 'empty.json'), '');
      await writeFile(join(state, 'uploads', 'garbage.json'), '{"location": 12, "si');
      // Another run (its own state) completes the push first.
      expect((await ferry(args, { env: { FERRY_STATE_DIR: await tempDir() } })).code).toBe(0);
      const rerun = await ferry(args, { env: { FERRY_STATE_DIR: state } });
      expect(rerun.code, rerun.stderr).toBe(0);
      expect((await readdir(join(state, 'uploads'))).sort()).toEqual(['empty.json', 'garbage.json']);
    });

    it('F2: against ferry serve, the rerun continues the upload session from the offset the registry reports', async () => {
      const served = await startServe(join(await tempDir(), 'served'));
      const via = await startFaultProxy(served.host);
      try {
        const { later, up } = await killAndRerunPush(via, 'crash/up');
        const firstPatch = later.find((q) => q.method === 'PATCH');
        expect(Number(/^(\d+)-/.exec(String(firstPatch?.headers['content-range']))?.[1]), 'the first chunk sent continues the session').toBeGreaterThanOrEqual(32 * MiB);
        expect(up).toBeLessThanOrEqual(BIG - 32 * MiB + SLACK);
        const back = join(await tempDir(), 'back');
        expect((await ferry(['copy', `docker://${served.host}/crash/up:1`, `oci:${back}:x`])).code).toBe(0);
        expect((await ferry(['verify', back])).code).toBe(0);
        expect((await stat(join(back, 'blobs', 'sha256', layer.slice(7)))).size).toBe(BIG);
      } finally {
        await via.stop();
        await served.stop();
      }
    });

    it('F2: against distribution, which refuses a session cut mid-chunk, the rerun starts a new upload and succeeds', async () => {
      const { up } = await killAndRerunPush(proxy, 'crash/up');
      expect(up).toBeGreaterThanOrEqual(BIG);
      const back = join(await tempDir(), 'back');
      expect((await ferry(['copy', `docker://${reg.host}/crash/up:1`, `oci:${back}:x`])).code).toBe(0);
      expect((await ferry(['verify', back])).code).toBe(0);
    });
  });
});

describe('gc and partial downloads', () => {
  const hex = (c: string) => c.repeat(64);

  it('F5: gc deletes partial downloads of dead runs that are a day old or whose blob is complete, and keeps the rest', async () => {
    const store = join(await tempDir(), 'store');
    const [made] = await makeLayout(store, [{ tag: 't', layers: [Buffer.from('complete layer')] }]);
    const dir = join(store, 'blobs', 'sha256');
    const dead = 999_999;
    const old = join(dir, `.partial-${dead}-${hex('a')}`);
    const recent = join(dir, `.partial-${dead}-${hex('b')}`);
    const done = join(dir, `.partial-${dead}-${made!.layers[0]!.digest.slice(7)}`);
    const live = join(dir, `.partial-${process.pid}-${hex('c')}`);
    for (const p of [old, recent, done, live]) await writeFile(p, 'partial bytes');
    const dayAgo = new Date(Date.now() - 25 * 3600_000);
    await utimes(old, dayAgo, dayAgo);
    await utimes(live, dayAgo, dayAgo);
    const dry = await ferry(['gc', '--dry-run', '--json', store]);
    expect(JSON.parse(dry.stdout)).toMatchObject({ partials: 2, partialBytes: 26 });
    expect((await readdir(dir)).filter((n) => n.startsWith('.partial-'))).toHaveLength(4);
    const r = await ferry(['gc', store]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('removed 2 abandoned partial download(s)');
    expect((await readdir(dir)).filter((n) => n.startsWith('.partial-')).sort()).toEqual([`.partial-${process.pid}-${hex('c')}`, `.partial-${dead}-${hex('b')}`].sort());
    expect((await ferry(['verify', store])).code).toBe(0);
  });

  it('gc says which partial downloads it keeps for resuming and until when; gc --partials deletes those of dead runs now', async () => {
    const store = join(await tempDir(), 'store');
    await makeLayout(store, [{ tag: 't', layers: [Buffer.from('complete layer')] }]);
    const dir = join(store, 'blobs', 'sha256');
    const dead = 999_999;
    const kept = [join(dir, `.partial-${dead}-${hex('a')}`), join(dir, `.partial-${dead}-${hex('b')}`)];
    const live = join(dir, `.partial-${process.pid}-${hex('c')}`);
    for (const p of [...kept, live]) await writeFile(p, 'x'.repeat(2048));
    const hourAgo = new Date(Date.now() - 3600_000);
    await utimes(kept[0]!, hourAgo, hourAgo);
    const until = new Date((await stat(kept[1]!)).mtimeMs + 24 * 3600_000).toISOString();

    const dry = await ferry(['gc', '--dry-run', store]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`Kept 2 partial download(s) (4.10kB) of interrupted runs for a rerun to resume, until ${until.slice(0, 16).replace('T', ' ')} UTC; \`ferry gc --partials\` deletes them now`);
    expect(JSON.parse((await ferry(['gc', '--dry-run', '--json', store])).stdout)).toMatchObject({ partials: 0, partialsKept: 2, partialKeptBytes: 4096, partialsKeptUntil: until });
    const plain = await ferry(['gc', store]);
    expect(plain.stdout).toContain('Kept 2 partial download(s)');
    expect((await readdir(dir)).filter((n) => n.startsWith('.partial-'))).toHaveLength(3);

    const dryAll = await ferry(['gc', '--dry-run', '--partials', '--json', store]);
    expect(JSON.parse(dryAll.stdout)).toMatchObject({ partials: 2, partialBytes: 4096, partialsKept: 0 });
    expect((await readdir(dir)).filter((n) => n.startsWith('.partial-'))).toHaveLength(3);
    const all = await ferry(['gc', '--partials', store]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain('removed 2 abandoned partial download(s), 4.10kB');
    expect(all.stdout).not.toContain('Kept');
    // A running ferry's partial download is never touched.
    expect((await readdir(dir)).filter((n) => n.startsWith('.partial-'))).toEqual([`.partial-${process.pid}-${hex('c')}`]);
    expect((await ferry(['verify', store])).code).toBe(0);
  });
});

describe('a store written by a killed run (catalogue F2, I7)', () => {
  const writerMarkers = async (store: string) => (await readdir(store)).filter((n) => n.startsWith('.ferry-writer-'));

  it('F2: the rerun deletes the killed run\'s writer marker; the store verifies and keeps its other images', async () => {
    const store = join(await tempDir(), 'store');
    const rootfs = join(await tempDir(), 'rootfs');
    await mkdir(join(rootfs, 'etc'), { recursive: true });
    await writeFile(join(rootfs, 'etc', 'hello'), 'hello\n');
    expect((await ferry(['--store', store, 'import', '--dir', rootfs, 'example.com/keep:1'])).code).toBe(0);
    // Waits on stdin that never ends, with the store open: the kill lands mid-import.
    const child = start(['--store', store, 'import', '-', 'example.com/killed:1']);
    // Not finish(): it ends stdin, and the import would then fail and tidy up before the kill.
    const done = new Promise<{ signal: NodeJS.Signals | null }>((resolve) => child.on('close', (_code, signal) => resolve({ signal })));
    while ((await writerMarkers(store)).length === 0) await sleep(5);
    child.kill('SIGKILL');
    expect((await done).signal).toBe('SIGKILL');
    expect(await writerMarkers(store)).toHaveLength(1);

    const rerun = await ferry(['--store', store, 'import', '--dir', rootfs, 'example.com/killed:1']);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(await writerMarkers(store)).toEqual([]);
    const v = await ferry(['--store', store, 'verify']);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    const images = (await ferry(['--store', store, 'images'])).stdout;
    expect(images).toContain('example.com/keep');
    expect(images).toContain('example.com/killed');
  });
});

describe('an interrupted save is continued, not written again from the start (catalogue F2)', () => {
  let src: string;
  beforeAll(async () => {
    src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [24 * MiB, 24 * MiB, 24 * MiB] }, { tag: 'small', layers: [MiB] }]);
  });

  /** `out` is byte for byte what a fresh save of `tag` writes. */
  async function expectFreshSave(out: string, tag: string): Promise<void> {
    const fresh = join(await tempDir(), 'fresh.tar');
    expect((await ferry(['save', '-q', `oci:${src}:${tag}`, '-o', fresh])).code).toBe(0);
    expect(Buffer.compare(await readFile(out), await readFile(fresh))).toBe(0);
  }

  /** SIGKILLs a save once its temp files beside `dir` hold `fraction` of ~72 MiB. */
  async function killedSave(dir: string, args: string[], fraction: number): Promise<void> {
    const k = await runAndKill(['save', `oci:${src}:big`, ...args], { progress: () => bytesUnder(dir, isTemp), total: 72 * MiB, fraction });
    expect(k.killed, 'the save finished before the kill').toBe(true);
  }

  it('one archive: the rerun keeps the dead run\'s file and bytes, says how much, and the archive equals a fresh save', async () => {
    const dir = await tempDir();
    const out = join(dir, 'out.tar');
    await killedSave(dir, ['-o', out], 0.5);
    const [temp] = (await readdir(dir)).filter(isTemp);
    const before = await stat(join(dir, temp!));
    const r = await ferry(['save', `oci:${src}:big`, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/found [\d.]+MB of .*out\.tar written by an interrupted run: what matches is kept/);
    const kept = /out\.tar: kept ([\d.]+)MB an interrupted run had written, wrote ([\d.]+)MB/.exec(r.stderr);
    expect(kept, r.stderr).not.toBeNull();
    expect(Number(kept![1]) * 1e6).toBeGreaterThan(before.size - 2 * MiB);
    // The same file, continued (was: removed, and the whole archive written again).
    expect((await stat(out)).ino).toBe(before.ino);
    await expectFreshSave(out, 'big');
    expect((await readdir(dir)).filter(isTemp)).toEqual([]);
  });

  it('a name of 250 bytes (longer than its temp name could carry) is saved, and a killed save of it is continued', async () => {
    const dir = await tempDir();
    const out = join(dir, `${'ü'.repeat(120)}-backup.tar`);
    expect(Buffer.byteLength(out.slice(dir.length + 1))).toBe(251);
    await killedSave(dir, ['-o', out], 0.5);
    const r = await ferry(['save', `oci:${src}:big`, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/found [\d.]+MB of .*-backup\.tar written by an interrupted run/);
    expect(r.stderr).toMatch(/-backup\.tar: kept [\d.]+MB an interrupted run had written/);
    await expectFreshSave(out, 'big');
    expect((await readdir(dir)).filter(isTemp)).toEqual([]);
  });

  it('a dead run\'s file of other content (another image, longer than the new archive) ends as exactly the new archive', async () => {
    const dir = await tempDir();
    const out = join(dir, 'out.tar');
    await killedSave(dir, ['-o', out], 0.5);
    const r = await ferry(['save', '-q', `oci:${src}:small`, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    await expectFreshSave(out, 'small');
    expect((await readdir(dir)).filter(isTemp)).toEqual([]);
  });

  it('a link under a dead temp name (a shared directory) is never written through: symbolic or hard, the file it names stays as it was', async () => {
    const { link, symlink, writeFile: write } = await import('node:fs/promises');
    const dir = await tempDir();
    const victim = join(await tempDir(), 'victim');
    await write(victim, 'precious '.repeat(1000));
    const hard = join(dir, 'victim-hardlink');
    await write(hard, 'precious too '.repeat(1000));
    // Named as temp files of dead runs (pid 999999) for out.tar and hl.tar.
    await symlink(victim, join(dir, '.tmp-999999-aaaaaaaa-out.tar'));
    await link(hard, join(dir, '.tmp-999998-bbbbbbbb-hl.tar'));
    for (const name of ['out.tar', 'hl.tar']) {
      const r = await ferry(['save', '-q', `oci:${src}:small`, '-o', join(dir, name)]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toContain('what matches is kept');
    }
    expect(await readFile(victim, 'utf8')).toBe('precious '.repeat(1000));
    expect(await readFile(hard, 'utf8')).toBe('precious too '.repeat(1000));
    const fresh = join(await tempDir(), 'fresh.tar');
    expect((await ferry(['save', '-q', `oci:${src}:small`, '-o', fresh])).code).toBe(0);
    for (const name of ['out.tar', 'hl.tar']) expect(Buffer.compare(await readFile(join(dir, name)), await readFile(fresh))).toBe(0);
    expect((await readdir(dir)).filter(isTemp)).toEqual([]);
  });

  it('export -o: a killed export\'s file is continued the same way', async () => {
    const img = join(await tempDir(), 'img');
    const layer = await writeTarBlob(img, [{ name: 'big', bigFile: 72 * MiB }]);
    await makeTarLayout(img, [{ tag: 'fs', layers: [{ file: layer }] }]);
    const dir = await tempDir();
    const out = join(dir, 'rootfs.tar');
    const k = await runAndKill(['export', `oci:${img}:fs`, '-o', out], { progress: () => bytesUnder(dir, isTemp), total: 72 * MiB, fraction: 0.5 });
    expect(k.killed, 'the export finished before the kill').toBe(true);
    const [temp] = (await readdir(dir)).filter(isTemp);
    const before = await stat(join(dir, temp!));
    const r = await ferry(['export', `oci:${img}:fs`, '-o', out]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/rootfs\.tar: kept [\d.]+MB an interrupted run had written, wrote/);
    expect((await stat(out)).ino).toBe(before.ino);
    const fresh = join(await tempDir(), 'fresh.tar');
    expect((await ferry(['export', `oci:${img}:fs`, '-o', fresh])).code).toBe(0);
    expect(Buffer.compare(await readFile(out), await readFile(fresh))).toBe(0);
  });

  it('a volume set: the rerun takes the dead set\'s id, and a volume the dead run finished is kept untouched', async () => {
    const { readVolumeHeader } = await import('../src/archive/scan.js');
    const dir = await tempDir();
    const base = join(dir, 'set.tar');
    await killedSave(dir, ['-o', base, '--volume-size', '16M'], 0.6);
    const temps = (await readdir(dir)).filter(isTemp).sort();
    const first = temps.find((n) => n.endsWith('-set.001.tar'))!;
    expect(temps.length, temps.join(' ')).toBeGreaterThan(1);
    const deadSet = (await readVolumeHeader(join(dir, first)))!.set;
    // Finished by the dead run: if the rerun wrote it again, its time would change.
    const old = new Date('2020-01-01T00:00:00Z');
    await utimes(join(dir, first), old, old);
    const r = await ferry(['save', '-q', `oci:${src}:big`, '-o', base, '--volume-size', '16M']);
    expect(r.code, r.stderr).toBe(0);
    expect((await readVolumeHeader(join(dir, 'set.001.tar')))!.set).toBe(deadSet);
    expect((await stat(join(dir, 'set.001.tar'))).mtime.getTime()).toBe(old.getTime());
    const volumes = (await readdir(dir)).filter((n) => /^set\.\d{3}\.tar$/.test(n)).map((n) => join(dir, n));
    expect(volumes.length).toBeGreaterThan(3);
    const v = await ferry(['verify', ...volumes]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    expect((await readdir(dir)).filter(isTemp)).toEqual([]);
  });
});
