import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { bytesUnder, presentBlobs, runAndKill } from './helpers/crash.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { tempDir, tempFilesIn } from './helpers/fs.js';
import { makeTarLayout, writeTarBlob, type BuiltImage } from './helpers/layers.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
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
/** Registry traffic, both ways: a 48 MiB image takes about a second. */
const RATE = 48 * MiB;
/** Manifests, configs and headers on top of layer bytes. */
const SLACK = MiB;
const NAME = 'example.com/crash/img:1';
const FRACTIONS = [0.1, 0.5, 0.9] as const;

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

  const isTemp = (name: string) => name.startsWith('.tmp-');

  describe.each(FRACTIONS)('killed at %s of the bytes', (fraction) => {
    it('pull: rerun exits 0, verify is clean, no temp files, complete blobs are not downloaded again', async () => {
      const store = join(await tempDir(), 'store');
      await killAndRerun(['--store', store, 'pull', '--jobs', '1', `${proxy.host}/crash/img:1`], 'down', fraction, () => layerBytesIn(store));
      await verifyStore(store);
    });

    it('sync: rerun exits 0, verify is clean, no temp files, complete blobs are not downloaded again', async () => {
      const store = join(await tempDir(), 'store');
      await killAndRerun(['--store', store, 'sync', '--jobs', '1', `${proxy.host}/crash/img`], 'down', fraction, () => layerBytesIn(store));
      await verifyStore(store);
      expect((await ferry(['--store', store, 'images'])).stdout).toContain('crash/img');
    });

    it('push: rerun exits 0, the pushed image verifies, complete blobs are not uploaded again', async () => {
      const repo = `crash/push-${++repoCount}`;
      await killAndRerun(['--store', seed, 'push', '--jobs', '1', NAME, `${proxy.host}/${repo}:1`], 'up', fraction, () => layerBytesInRegistry(repo));
      const back = join(await tempDir(), 'back');
      expect((await ferry(['copy', `docker://${reg.host}/${repo}:1`, `oci:${back}:x`])).code).toBe(0);
      const v = await ferry(['verify', back]);
      expect(v.code, v.stdout).toBe(0);
      expect(await tempFilesIn(seed)).toEqual([]);
    });

    it('save: rerun exits 0, the archive verifies, no temp file is left beside it', async () => {
      const dir = await tempDir();
      const out = join(dir, 'out.tar');
      await killLocalAndRerun(['--store', seed, 'save', NAME, '-o', out], fraction, () => bytesUnder(dir, isTemp));
      const v = await ferry(['verify', out]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(await tempFilesIn(dir)).toEqual([]);
    });

    it('load: rerun exits 0, verify is clean, no temp files', async () => {
      const store = join(await tempDir(), 'store');
      await killLocalAndRerun(['--store', store, 'load', '-i', archive], fraction, () => bytesUnder(join(store, 'blobs')));
      await verifyStore(store);
      expect((await ferry(['--store', store, 'images'])).stdout).toContain('crash/img');
    });

    it('export: rerun exits 0, the filesystem tar is complete, no temp file is left beside it', async () => {
      const dir = await tempDir();
      const out = join(dir, 'rootfs.tar');
      await killLocalAndRerun(['--store', seed, 'export', NAME, '-o', out], fraction, () => bytesUnder(dir, isTemp));
      const files = (await listTar(out)).filter((e) => e.type === 'file');
      expect(files.map((f) => [f.name, f.size])).toEqual([1, 2, 3].map((i) => [`data/f${i}`, LAYER]));
      expect(await tempFilesIn(dir)).toEqual([]);
    });
  });
});
