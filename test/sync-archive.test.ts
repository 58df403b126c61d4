import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, readdir, readFile, rename, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { readVolumeHeader } from '../src/archive/scan.js';
import { ArchiveSource } from '../src/archive/source.js';
import { copy } from '../src/copy.js';
import { OciLayout } from '../src/locations/layout.js';
import { openRepository } from '../src/locations/registry/pool.js';
import { parseReference } from '../src/oci/reference.js';
import { makeLayout } from './helpers/images.js';
import { ferry } from './helpers/cli.js';
import { mustRun, testdataImages } from './helpers/expected-images.js';
import { tempDir } from './helpers/fs.js';
import { listTar } from './helpers/tar-list.js';
import { proxiedRegistry, publish } from './helpers/sync-fixture.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry');
const skopeo = hasTool('skopeo');

/** Pushes one image of uncompressed layers (random bytes of these sizes, or these bytes) to host/repo:tag. */
async function publishLayers(host: string, repo: string, tag: string, layers: Array<Buffer | number>): Promise<string> {
  const dir = await tempDir();
  const [made] = await makeLayout(dir, [{ tag: 'x', layers }]);
  await copy(await OciLayout.open(dir), openRepository(parseReference(`${host}/${repo}`)), [{ ref: 'x', names: [{ tag }] }]);
  return made!.manifest.digest;
}

/** The volume files in `dir`, and each one's inode and mtime: what a run that rewrites nothing leaves alone. */
async function volumeFiles(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const n of (await readdir(dir)).filter((x) => /\.\d{3}\.tar/.test(x)).sort()) {
    const st = await stat(join(dir, n), { bigint: true });
    out[n] = `${st.ino}:${st.mtimeNs}`;
  }
  return out;
}

/** name -> digest of every named image in an archive (or in the volumes of a set). */
async function archived(path: string | string[]): Promise<Record<string, string>> {
  const src = typeof path === 'string' ? await ArchiveSource.open(path) : await ArchiveSource.openSet(path);
  try {
    const out: Record<string, string> = {};
    for (const i of src.images()) for (const n of i.names) out[n.name ?? n.tag] = i.ref;
    return out;
  } finally {
    await src.close();
  }
}

describe.skipIf(!distribution)('ferry sync into an archive (CNCF distribution registry)', () => {
  const fx = proxiedRegistry(async (host) => {
    await publish(host, 'arch/app', 'plain', ['1.0', '1.1']);
    await publish(host, 'arch/app', 'layers', ['2.0']);
    await publish(host, 'arch/other', 'docker', ['latest']);
    await publish(host, 'arch/multi', 'multi', ['1']);
  });

  const { since } = fx;
  const blobGets = (n: number) => since(n).filter((q) => q.method === 'GET' && q.url.includes('/blobs/')).map((q) => q.url.split('/').pop());

  it('a first run writes a loadable, verified archive; a second run reads it and writes nothing', async () => {
    const dir = await tempDir();
    const file = join(dir, 'app.tar.zst');
    const exp = await testdataImages();
    const first = await ferry(['sync', `${fx.proxy.host}/arch/app`, file]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`-> ${file}: 3 tags, 3 copied, 0 unchanged`);
    expect(first.stderr).toContain(`writing ${file} anew (0 image(s) kept from it, 3 new)`);
    expect(first.stderr).toContain(`wrote ${file}`);
    expect(await readdir(dir)).toEqual(['app.tar.zst']); // no staging layout or lock left behind
    expect(await archived(file)).toEqual({
      [`${fx.proxy.host}/arch/app:1.0`]: exp.plain.digest,
      [`${fx.proxy.host}/arch/app:1.1`]: exp.plain.digest,
      [`${fx.proxy.host}/arch/app:2.0`]: exp.layers.digest,
    });
    expect((await ferry(['verify', file])).code).toBe(0);
    const store = join(dir, 'store');
    const loaded = await ferry(['--store', store, 'load', '-i', file]);
    expect(loaded.code, loaded.stderr).toBe(0);
    expect(loaded.stdout).toContain(`Loaded image: ${fx.proxy.host}/arch/app:2.0`);

    const before = (await stat(file)).mtimeMs;
    const mark = fx.proxy.seen.length;
    const again = await ferry(['sync', `${fx.proxy.host}/arch/app`, file]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('3 tags, 0 copied, 3 unchanged');
    expect(again.stderr).not.toContain('wrote');
    expect((await stat(file)).mtimeMs).toBe(before);
    expect(since(mark).filter((q) => q.url.includes('/blobs/') || (q.method === 'GET' && q.url.includes('/manifests/')))).toEqual([]);
    expect(await readdir(dir)).toEqual(['app.tar.zst', 'store']);
  });

  it('after one tag moves only its new blobs are fetched; --prune drops a deleted tag, which stays without it', async () => {
    const dir = await tempDir();
    const file = join(dir, 'app.tar');
    const exp = await testdataImages();
    await publish(fx.reg.host, 'arch/moving', 'plain', ['a', 'b']);
    await publish(fx.reg.host, 'arch/moving', 'layers', ['c']);
    expect((await ferry(['sync', `${fx.proxy.host}/arch/moving`, file])).code).toBe(0);
    await copyFile(file, `${file}.v1`);

    await publish(fx.reg.host, 'arch/moving', 'zstd', ['b']);
    let mark = fx.proxy.seen.length;
    const moved = await ferry(['sync', `${fx.proxy.host}/arch/moving`, file]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toContain('3 tags, 1 copied, 2 unchanged');
    expect(blobGets(mark).sort()).toEqual([exp.zstd.config as string, ...exp.zstd.layers!.map((l) => l.digest)].sort());
    const names = await archived(file);
    expect(names[`${fx.proxy.host}/arch/moving:b`]).toBe(exp.zstd.digest);
    expect(names[`${fx.proxy.host}/arch/moving:a`]).toBe(exp.plain.digest);
    expect((await ferry(['verify', file])).code).toBe(0);

    // The state file vouches for the archive it describes, so the archive is not read again ...
    const trusted = await ferry(['--debug', 'sync', `${fx.proxy.host}/arch/moving`, file]);
    expect(trusted.stdout).toContain('3 tags, 0 copied, 3 unchanged');
    expect(trusted.stderr).toContain(`${file}: unchanged since the last run`);
    const untrusted = await ferry(['--debug', 'sync', '--no-state', `${fx.proxy.host}/arch/moving`, file]);
    expect(untrusted.stdout).toContain('3 tags, 0 copied, 3 unchanged');
    expect(untrusted.stderr).not.toContain('unchanged since the last run');
    // ... but only that one: an older copy put in its place is read, and b is brought up to date.
    await copyFile(`${file}.v1`, file);
    const restored = await ferry(['--debug', 'sync', `${fx.proxy.host}/arch/moving`, file]);
    expect(restored.stderr).not.toContain('unchanged since the last run');
    expect(restored.stdout).toContain('3 tags, 1 copied, 2 unchanged');
    expect((await archived(file))[`${fx.proxy.host}/arch/moving:b`]).toBe(exp.zstd.digest);
    await unlink(`${file}.v1`);

    // A new tag on blobs the archive holds already: nothing but its manifest is fetched.
    await publish(fx.reg.host, 'arch/moving', 'layers', ['d']);
    mark = fx.proxy.seen.length;
    const same = await ferry(['sync', `${fx.proxy.host}/arch/moving`, file]);
    expect(same.stdout).toContain('4 tags, 1 copied, 3 unchanged');
    expect(blobGets(mark)).toEqual([]);

    expect((await ferry(['rm', `docker://${fx.reg.host}/arch/moving:a`])).code).toBe(0);
    const before = (await stat(file)).mtimeMs;
    const kept = await ferry(['sync', `${fx.proxy.host}/arch/moving`, file]);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toContain('3 tags, 0 copied, 3 unchanged, 0 pruned');
    expect((await stat(file)).mtimeMs).toBe(before);
    expect(Object.keys(await archived(file))).toContain(`${fx.proxy.host}/arch/moving:a`);

    const plan = await ferry(['sync', '--prune', '--dry-run', `${fx.proxy.host}/arch/moving`, file]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toContain('1 would be pruned');
    expect((await stat(file)).mtimeMs).toBe(before);

    const pruned = await ferry(['sync', '--prune', `${fx.proxy.host}/arch/moving`, file]);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toContain('1 pruned');
    expect(Object.keys(await archived(file)).sort()).toEqual(['b', 'c', 'd'].map((t) => `${fx.proxy.host}/arch/moving:${t}`));
    expect((await ferry(['verify', file])).code).toBe(0);
  });

  it('the summary counts blobs the archive did not hold as moved, each once; only those it held as already present', async () => {
    const dir = await tempDir();
    const file = join(dir, 'count.tar');
    const exp = await testdataImages();
    const blobsOf = (t: 'plain' | 'layers' | 'docker' | 'zstd') => exp[t].layers!.length + 1;
    const blobs = async (args: string[]) => {
      const r = await ferry(['sync', '--json', ...args, `${fx.proxy.host}/arch/count`, file]);
      expect(r.code, r.stderr).toBe(0);
      const doc = JSON.parse(r.stdout);
      // A plan counts {count, bytes}; a run's report copied and skipped.
      return doc.dryRun ? { copied: doc.blobs.count, skipped: doc.skipped.count } : { copied: doc.blobs.copied, skipped: doc.blobs.skipped };
    };
    await publish(fx.reg.host, 'arch/count', 'plain', ['1.0', '1.1']);
    await publish(fx.reg.host, 'arch/count', 'layers', ['2.0']);
    // A new archive held nothing: 1.1 shares 1.0's blobs, which are moved once, not "already present".
    const first = await ferry(['sync', `${fx.proxy.host}/arch/count`, file]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toMatch(new RegExp(`moved ${blobsOf('plain') + blobsOf('layers')} blob\\(s\\), .*; 0 already present`));

    // Two new tags on one new image, and one on an image the archive holds.
    await publish(fx.reg.host, 'arch/count', 'docker', ['3.0', '3.1']);
    await publish(fx.reg.host, 'arch/count', 'plain', ['1.2']);
    expect(await blobs([])).toEqual({ copied: blobsOf('docker'), skipped: blobsOf('plain') });
    expect(await blobs([])).toEqual({ copied: 0, skipped: 0 });

    // Blobs a crashed run left in the staging layout reach the archive in this run: moved.
    await publish(fx.reg.host, 'arch/count', 'zstd', ['4.0']);
    const staged = await ferry(['copy', `docker://${fx.reg.host}/arch/count:4.0`, `oci:${join(dir, '.count.tar.ferry-sync')}:left`]);
    expect(staged.code, staged.stderr).toBe(0);
    expect(await blobs([])).toEqual({ copied: blobsOf('zstd'), skipped: 0 });
    expect(await readdir(dir)).toEqual(['count.tar']);

    // A --dry-run plans the same way: each blob once, by what the archive holds.
    await publish(fx.reg.host, 'arch/count', 'layers', ['5.0', '5.1']);
    await publish(fx.reg.host, 'arch/count', 'multi', ['6.0']);
    const plan = await blobs(['--dry-run']);
    const now = await blobs([]);
    expect(now).toEqual(plan);
    expect(now.skipped).toBe(blobsOf('layers'));
  });

  it('I7: a staging layout that a killed run made or removed only in part does not block the rerun', async () => {
    const dir = await tempDir();
    const file = join(dir, 'half.tar');
    const stage = join(dir, '.half.tar.ferry-sync');
    const emptyIndex = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
    const leftovers: Array<[string, Record<string, string>]> = [
      // Killed while the layout was being created: index.json written, oci-layout not yet.
      ['creation', { 'index.json': emptyIndex, 'index.json.lock': '', '.ferry-writer-999999-1': '' }],
      // Killed while the layout was being removed: index.json gone, a blob and oci-layout still there.
      ['removal', { 'oci-layout': '{"imageLayoutVersion":"1.0.0"}', [`blobs/sha256/${'a'.repeat(64)}`]: 'stale' }],
    ];
    for (const [cut, files] of leftovers) {
      await mkdir(join(stage, 'blobs', 'sha256'), { recursive: true });
      for (const [name, text] of Object.entries(files)) await writeFile(join(stage, name), text);
      const hoursAgo = new Date(Date.now() - 2 * 3600_000);
      for (const name of ['.', 'blobs', 'blobs/sha256', ...Object.keys(files)]) await utimes(join(stage, name), hoursAgo, hoursAgo);
      const r = await ferry(['sync', `${fx.proxy.host}/arch/other`, file]);
      expect(r.code, `${cut}: ${r.stderr}`).toBe(0);
      const v = await ferry(['verify', file]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      expect(Object.keys(await archived(file))).toEqual([`${fx.proxy.host}/arch/other:latest`]);
      expect(await readdir(dir)).toEqual(['half.tar']);
      await rm(file);
    }
  });

  it('--prune that leaves an archive with no image removes it, and says so', async () => {
    const dir = await tempDir();
    const file = join(dir, 'last.tar');
    await publish(fx.reg.host, 'arch/last', 'plain', ['only']);
    await publish(fx.reg.host, 'arch/last', 'layers', ['keep']);
    expect((await ferry(['sync', '--include', '^only$', `${fx.proxy.host}/arch/last`, file])).code).toBe(0);
    expect((await ferry(['rm', `docker://${fx.reg.host}/arch/last:only`])).code).toBe(0);
    const r = await ferry(['sync', '--prune', '--include', '^only$', `${fx.proxy.host}/arch/last`, file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('0 tags, 0 copied, 0 unchanged, 1 pruned');
    expect(r.stderr).toContain(`removed ${file} (every image in it was pruned)`);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a changed image that fails keeps its old version; the others are written', async () => {
    const dir = await tempDir();
    const file = join(dir, 'partial.tar.gz');
    const exp = await testdataImages();
    await publish(fx.reg.host, 'arch/flaky', 'plain', ['1', '2']);
    expect((await ferry(['sync', `${fx.proxy.host}/arch/flaky`, file])).code).toBe(0);
    await publish(fx.reg.host, 'arch/flaky', 'zstd', ['1']);
    await publish(fx.reg.host, 'arch/flaky', 'layers', ['2', '3']);
    const zstdLayer = exp.zstd.layers![0]!.digest;
    fx.proxy.setRule((q) => (q.method === 'GET' && q.url.endsWith(`/blobs/${zstdLayer}`) ? { flipByte: 3 } : undefined));
    const r = await ferry(['sync', `${fx.proxy.host}/arch/flaky`, file]);
    fx.proxy.setRule(undefined);
    expect(r.code).toBe(4);
    expect(r.stdout).toContain('3 tags, 2 copied, 0 unchanged, 0 pruned, 1 failed');
    expect(r.stderr).toMatch(/arch\/flaky:1: digest mismatch/);
    expect(await archived(file)).toEqual({
      [`${fx.proxy.host}/arch/flaky:1`]: exp.plain.digest,
      [`${fx.proxy.host}/arch/flaky:2`]: exp.layers.digest,
      [`${fx.proxy.host}/arch/flaky:3`]: exp.layers.digest,
    });
    expect((await ferry(['verify', file])).code).toBe(0);
    expect(await readdir(dir)).toEqual(['partial.tar.gz']);
    const rerun = await ferry(['sync', `${fx.proxy.host}/arch/flaky`, file]);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stdout).toContain('3 tags, 1 copied, 2 unchanged');
  });

  it('a damaged old archive is reported when it is rewritten, and left exactly as it was', async () => {
    const dir = await tempDir();
    const file = join(dir, 'rot.tar');
    const exp = await testdataImages();
    await publish(fx.reg.host, 'arch/rot', 'plain', ['1']);
    await publish(fx.reg.host, 'arch/rot', 'layers', ['2']);
    expect((await ferry(['sync', `${fx.proxy.host}/arch/rot`, file])).code).toBe(0);
    // Bit rot in the body of a kept image's layer (the tar header is 512 bytes before it).
    const bytes = await readFile(file);
    const layer = exp.plain.layers![0]!.digest.replace(':', '/');
    const header = bytes.indexOf(`blobs/${layer}`);
    expect(header).toBeGreaterThan(0);
    bytes[header + 512 + 40] ^= 0xff;
    await writeFile(file, bytes);

    await publish(fx.reg.host, 'arch/rot', 'zstd', ['3']);
    const r = await ferry(['sync', `${fx.proxy.host}/arch/rot`, file]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`${file} was left as it was`);
    expect(r.stderr).toContain(exp.plain.layers![0]!.digest);
    expect(r.stdout).toContain('0 copied');
    expect(Buffer.compare(await readFile(file), bytes)).toBe(0);
    expect(await readdir(dir)).toEqual(['rot.tar']);
  });

  it('--dry-run plans what a new archive would take and creates nothing', async () => {
    const dir = await tempDir();
    const file = join(dir, 'new.tar');
    const r = await ferry(['sync', '--dry-run', `${fx.proxy.host}/arch/app`, file]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`-> ${file}: 3 tags, 3 would copy`);
    expect(r.stdout).toMatch(/blobs to move: +\d+ /);
    const json = JSON.parse((await ferry(['sync', '--dry-run', '--json', `${fx.proxy.host}/arch/app`, file])).stdout);
    expect(json.jobs[0].destination).toBe(file);
    expect(json.blobs.count).toBeGreaterThan(0);
    expect(await readdir(dir)).toEqual([]);
  });

  it('a config file can send several repositories into one archive; a --platform narrowed image is a no-op the second time', async () => {
    const dir = await tempDir();
    const file = join(dir, 'all.tar');
    const cfg = join(dir, 'sync.yaml');
    await writeFile(cfg, [
      `destination: ${file}`,
      `platform: linux/amd64`,
      `repositories:`,
      `  - ${fx.proxy.host}/arch/app`,
      `  - ${fx.proxy.host}/arch/multi`,
      // Written after the narrowed image: its rewrite must keep what that copy recorded.
      `  - ${fx.proxy.host}/arch/other`,
      `  - source: ${fx.proxy.host}/arch/other`,
      `    destination: oci-archive:${join(dir, 'other.tar')}`,
    ].join('\n'));
    const r = await ferry(['sync', '--config', cfg]);
    expect(r.code, r.stderr).toBe(0);
    expect(Object.keys(await archived(file)).sort()).toEqual([
      `${fx.proxy.host}/arch/app:1.0`, `${fx.proxy.host}/arch/app:1.1`, `${fx.proxy.host}/arch/app:2.0`,
      `${fx.proxy.host}/arch/multi:1`, `${fx.proxy.host}/arch/other:latest`,
    ]);
    expect(Object.keys(await archived(join(dir, 'other.tar')))).toEqual([`${fx.proxy.host}/arch/other:latest`]);
    // oci-archive: is a pure OCI archive; a plain path is also docker-loadable.
    expect((await listTar(join(dir, 'other.tar'))).map((e) => e.name)).not.toContain('manifest.json');
    expect((await listTar(file)).map((e) => e.name)).toContain('manifest.json');
    expect((await ferry(['verify', file])).code).toBe(0);
    const before = (await stat(file)).mtimeMs;
    const mark = fx.proxy.seen.length;
    const again = await ferry(['sync', '--config', cfg]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).not.toMatch(/[1-9]\d* copied/);
    expect((await stat(file)).mtimeMs).toBe(before);
    expect(since(mark).filter((q) => q.url.includes('/blobs/') || (q.method === 'GET' && q.url.includes('/manifests/')))).toEqual([]);
  });

  it('a changed --platform writes the image into the archive again (by the state file, or by the archive itself); the same one again is a no-op', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const exp = await testdataImages();
    const file = join(await tempDir(), 'sel.tar.zst');
    const name = `${fx.proxy.host}/arch/multi:1`;
    const run = (platform?: string, extra: string[] = []) => ferry(['sync', ...extra, ...(platform ? ['--platform', platform] : []), `${fx.proxy.host}/arch/multi`, file], { env });
    expect((await run()).code).toBe(0);
    expect((await archived(file))[name]).toBe(exp.multi.digest);
    const arm = await run('linux/arm64');
    expect(arm.stdout, arm.stderr).toMatch(/1 copied/);
    expect((await archived(file))[name]).toBe(exp.multi.platforms!['linux/arm64/v8']!.manifest);
    expect((await run('linux/arm64')).stdout).toMatch(/0 copied, 1 unchanged/);
    // Without the state file, the archive's own annotations say how it was copied.
    expect((await run(undefined, ['--no-state'])).stdout).toMatch(/1 copied/);
    expect((await archived(file))[name]).toBe(exp.multi.digest);
    expect((await run()).stdout).toMatch(/0 copied, 1 unchanged/);
  });

  it.skipIf(!skopeo)('skopeo reads every image of an archive that sync rewrote, by its docker name and from its OCI index', async () => {
    const dir = await tempDir();
    const file = join(dir, 'mixed.tar');
    expect((await ferry(['sync', '--platform', 'linux/arm64', `${fx.proxy.host}/arch/multi`, file])).code).toBe(0);
    expect((await ferry(['sync', `${fx.proxy.host}/arch/app`, file])).code).toBe(0); // rewrites it, keeping arch/multi
    const names = Object.keys(await archived(file));
    expect(names).toHaveLength(4);
    for (const [i, name] of names.entries()) {
      await mustRun('skopeo', ['copy', '-q', `docker-archive:${file}:${name}`, `oci:${join(dir, 'out')}:d${i}`]);
    }
    await mustRun('skopeo', ['copy', '-q', `oci-archive:${file}:1`, `oci:${join(dir, 'out')}:multi`]);
    expect((await ferry(['verify', join(dir, 'out')])).code).toBe(0);
  });

  it('two runs into one archive take turns: a live holder of the lock is waited for, then named (exit 8); a dead one is broken', async () => {
    const dir = await tempDir();
    const file = join(dir, 'locked.tar');
    const lock = join(dir, '.locked.tar.ferry-sync.lock');
    await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), since: new Date().toISOString() }));
    const held = await ferry(['sync', `${fx.proxy.host}/arch/other`, file], { env: { FERRY_LOCK_TIMEOUT: '1' } });
    expect(held.code).toBe(8);
    expect(held.stderr).toContain(`${lock} is locked by process ${process.pid}`);
    expect(await readdir(dir)).toEqual(['.locked.tar.ferry-sync.lock']);
    await writeFile(lock, JSON.stringify({ pid: 2 ** 22 + 1, host: hostname(), since: new Date().toISOString() }));
    const stale = await ferry(['sync', `${fx.proxy.host}/arch/other`, file], { env: { FERRY_LOCK_TIMEOUT: '1' } });
    expect(stale.code, stale.stderr).toBe(0);
    expect(stale.stderr).toContain('broke a stale lock');
    expect(await readdir(dir)).toEqual(['locked.tar']);
  });

  it('bad destinations are refused clearly and leave what is there alone', async () => {
    const dir = await tempDir();
    const missing = await ferry(['sync', `${fx.proxy.host}/arch/other`, join(dir, 'nope', 'x.tar')]);
    expect(missing.code).toBe(7);
    expect(missing.stderr).toContain(`the directory ${join(dir, 'nope')} does not exist`);

    const named = await ferry(['sync', `${fx.proxy.host}/arch/other`, `docker-archive:${join(dir, 'x.tar')}:app:1`]);
    expect(named.code).toBe(2);
    expect(named.stderr).toContain('an archive is named by its path alone');

    const plainDir = await ferry(['sync', `${fx.proxy.host}/arch/other`, dir]);
    expect(plainDir.code).toBe(2);
    expect(plainDir.stderr).toContain('or an archive file');

    const garbage = join(dir, 'garbage.tar');
    await writeFile(garbage, 'this is not a tar archive\n'.repeat(40));
    const mark = fx.proxy.seen.length;
    const bad = await ferry(['sync', `${fx.proxy.host}/arch/other`, garbage]);
    expect(bad.code).toBe(3);
    expect(bad.stderr).toContain(garbage);
    expect((await stat(garbage)).size).toBe(26 * 40);
    expect(since(mark).filter((q) => q.url.includes('/blobs/'))).toEqual([]);
    expect((await readdir(dir)).sort()).toEqual(['garbage.tar']);

    // A directory of ours by name but not ours by content is neither used nor deleted.
    const squatter = join(dir, '.squat.tar.ferry-sync');
    await mkdir(squatter);
    await writeFile(join(squatter, 'notes.txt'), 'mine');
    const squat = await ferry(['sync', `${fx.proxy.host}/arch/other`, join(dir, 'squat.tar')]);
    expect(squat.code).toBe(2);
    expect(squat.stderr).toContain(`${squatter} exists and is not ferry's staging layout`);
    expect(await readFile(join(squatter, 'notes.txt'), 'utf8')).toBe('mine');
    await rm(squatter, { recursive: true });

    // In a config, that is one job's failure: the next job still runs.
    const cfg = join(dir, 'sync.yaml');
    await writeFile(cfg, `repositories:\n  - {source: ${fx.proxy.host}/arch/other, destination: ${garbage}}\n  - {source: ${fx.proxy.host}/arch/other, destination: ${join(dir, 'good.tar')}}\n`);
    const both = await ferry(['sync', '--config', cfg]);
    expect(both.code).toBe(3);
    expect(both.stdout).toContain(`-> ${garbage}: 0 tags, 0 copied, 0 unchanged, 0 pruned, 1 failed`);
    expect(both.stdout).toContain(`-> ${join(dir, 'good.tar')}: 1 tags, 1 copied`);
    expect((await stat(garbage)).size).toBe(26 * 40);
  });
  describe('--volume-size: the archive kept as a volume set', () => {
    const vols = (dir: string, names: string[]) => names.map((n) => join(dir, n));

    it('a first run writes a set verify calls clean and load reads; a second touches no volume; a moved tag rewrites it, shrinking it without a stale volume', async () => {
      const dir = await tempDir();
      const file = join(dir, 'app.tar');
      const src = `${fx.proxy.host}/vol/app`;
      const [a, b, c] = [randomBytes(40 << 10), randomBytes(40 << 10), randomBytes(40 << 10)];
      const digests = {
        t1: await publishLayers(fx.reg.host, 'vol/app', 't1', [a]),
        t2: await publishLayers(fx.reg.host, 'vol/app', 't2', [b]),
        t3: await publishLayers(fx.reg.host, 'vol/app', 't3', [c]),
      };
      const three = ['app.001.tar', 'app.002.tar', 'app.003.tar'];

      // The dry run says how many volumes the set would take, and creates nothing.
      const plan = await ferry(['sync', '--dry-run', '--volume-size', '64K', src, file]);
      expect(plan.code, plan.stderr).toBe(0);
      expect(plan.stdout).toContain(`-> ${file}: 3 tags, 3 would copy, 0 unchanged, 0 would be pruned, 0 failed; would be written as 3 volume(s) under 65.5kB`);
      expect(plan.stdout).toContain(`volumes:         3 each under 65.5kB: ${vols(dir, three).join(', ')}`);
      expect(await readdir(dir)).toEqual([]);

      const first = await ferry(['sync', '--volume-size', '64K', src, file]);
      expect(first.code, first.stderr).toBe(0);
      expect(first.stdout).toContain(`-> ${file}: 3 tags, 3 copied, 0 unchanged`);
      expect(first.stderr).toContain(`wrote ${file} as 3 volume(s): ${three.join(', ')}`);
      expect((await readdir(dir)).sort()).toEqual(three); // no staging layout, lock or journal left
      for (const v of three) expect((await stat(join(dir, v))).size).toBeLessThan(64 << 10);
      const verified = await ferry(['verify', ...vols(dir, three)]);
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
      const loaded = await ferry(['--store', join(await tempDir(), 'store'), 'load', ...vols(dir, three).flatMap((v) => ['-i', v])]);
      expect(loaded.code, loaded.stderr).toBe(0);
      expect(loaded.stdout).toContain(`Loaded image: ${src}:t3`);
      expect(await archived(vols(dir, three))).toEqual({ [`${src}:t1`]: digests.t1, [`${src}:t2`]: digests.t2, [`${src}:t3`]: digests.t3 });

      // Nothing changed upstream: no volume is written, by the state file or (--no-state) by reading the set.
      const before = await volumeFiles(dir);
      for (const extra of [[], ['--no-state']]) {
        const again = await ferry(['sync', ...extra, '--volume-size', '64K', src, file]);
        expect(again.code, again.stderr).toBe(0);
        expect(again.stdout).toContain('3 tags, 0 copied, 3 unchanged');
        expect(again.stderr).not.toContain('wrote');
        expect(await volumeFiles(dir)).toEqual(before);
      }
      const json = JSON.parse((await ferry(['sync', '--json', '--volume-size', '64K', src, file])).stdout);
      expect(json.jobs[0]).toMatchObject({ destination: file, rewritten: false, volumes: vols(dir, three) });

      // t3 moves onto t1's layer: only its manifest and config are fetched (the layer is read from
      // the set), and the set shrinks to two volumes, the old third one gone.
      digests.t3 = await publishLayers(fx.reg.host, 'vol/app', 't3', [a, randomBytes(16)]);
      const shrink = await ferry(['sync', '--dry-run', '--json', '--volume-size', '64K', src, file]);
      const planned = JSON.parse(shrink.stdout);
      expect(planned.archive.files.map((f: { path: string }) => f.path)).toEqual(vols(dir, ['app.001.tar', 'app.002.tar']));
      expect(planned.archive.volumeSize).toBe(64 << 10);
      expect(planned.jobs[0].plan.archive.files).toHaveLength(2);
      const mark = fx.proxy.seen.length;
      const moved = await ferry(['sync', '--volume-size', '64K', src, file]);
      expect(moved.code, moved.stderr).toBe(0);
      expect(moved.stdout).toContain('3 tags, 1 copied, 2 unchanged');
      expect(blobGets(mark)).toHaveLength(2); // the new config and the 16-byte layer
      expect((await readdir(dir)).sort()).toEqual(['app.001.tar', 'app.002.tar']);
      const two = vols(dir, ['app.001.tar', 'app.002.tar']);
      expect((await ferry(['verify', ...two])).code).toBe(0);
      expect(await archived(two)).toEqual({ [`${src}:t1`]: digests.t1, [`${src}:t2`]: digests.t2, [`${src}:t3`]: digests.t3 });
    });

    it('a compressed set: a blob split across volumes is read back from them when the set is rewritten', async () => {
      const dir = await tempDir();
      const file = join(dir, 'big.tar.zst');
      const src = `${fx.proxy.host}/vol/big`;
      const big = await publishLayers(fx.reg.host, 'vol/big', 'big', [150 << 10]);
      await publishLayers(fx.reg.host, 'vol/big', 'small', [1000]);
      const first = await ferry(['sync', '--volume-size', '64K', src, file]);
      expect(first.code, first.stderr).toBe(0);
      const names = (await readdir(dir)).sort();
      expect(names.length).toBeGreaterThanOrEqual(3);
      expect(names.every((n) => /^big\.\d{3}\.tar\.zst$/.test(n))).toBe(true);
      const small = await publishLayers(fx.reg.host, 'vol/big', 'small', [2000]);
      const moved = await ferry(['sync', '--volume-size', '64K', src, file]);
      expect(moved.code, moved.stderr).toBe(0);
      expect(moved.stdout).toContain('2 tags, 1 copied, 1 unchanged');
      const now = vols(dir, (await readdir(dir)).sort());
      const verified = await ferry(['verify', ...now]);
      expect(verified.code, verified.stdout + verified.stderr).toBe(0);
      expect(await archived(now)).toEqual({ [`${src}:big`]: big, [`${src}:small`]: small });
    });

    it('a switch of volumes cut short is a mix verify refuses; the next run completes it first', async () => {
      const dir = await tempDir();
      const other = await tempDir();
      const file = join(dir, 'sw.tar');
      const src = `${fx.proxy.host}/vol/sw`;
      await publishLayers(fx.reg.host, 'vol/sw', 'a', [40 << 10]);
      await publishLayers(fx.reg.host, 'vol/sw', 'b', [40 << 10]);
      await publishLayers(fx.reg.host, 'vol/sw', 'c', [40 << 10]);
      expect((await ferry(['sync', '--volume-size', '64K', src, file])).code).toBe(0);
      expect((await readdir(dir)).sort()).toEqual(['sw.001.tar', 'sw.002.tar', 'sw.003.tar']);
      // The set a later run would write (c now small: two volumes), made elsewhere, then left as
      // that run leaves it when it dies after renaming its first volume: journal, one temp file.
      const c = await publishLayers(fx.reg.host, 'vol/sw', 'c', [100]);
      expect((await ferry(['sync', '--volume-size', '64K', src, join(other, 'sw.tar')])).code).toBe(0);
      const set = (await readVolumeHeader(join(other, 'sw.001.tar')))!.set;
      await rename(join(other, 'sw.001.tar'), join(dir, 'sw.001.tar'));
      await rename(join(other, 'sw.002.tar'), join(dir, '.tmp-sw.002.tar'));
      await writeFile(join(dir, '.sw.tar.ferry-volumes'), JSON.stringify({ ferryVolumeJournal: 1, set, renames: [{ from: 'sw.001.tar.gone', to: 'sw.001.tar' }, { from: '.tmp-sw.002.tar', to: 'sw.002.tar' }] }));
      const mixed = await ferry(['verify', ...vols(dir, ['sw.001.tar', 'sw.002.tar', 'sw.003.tar'])]);
      // Each volume names its set: the files are read as two incomplete sets, never as one.
      expect(mixed.code).toBe(4);
      expect(mixed.stdout).toContain('volume 2 and later of the set are missing: sw.001.tar is not the last volume');
      expect(mixed.stdout).toContain('volume 1 of the set is missing (given: 2, 3)');

      const r = await ferry(['sync', '--volume-size', '64K', src, file]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`completed the switch of ${file}'s volumes`);
      expect(r.stdout).toContain('3 tags, 0 copied, 3 unchanged');
      expect((await readdir(dir)).sort()).toEqual(['sw.001.tar', 'sw.002.tar']);
      const two = vols(dir, ['sw.001.tar', 'sw.002.tar']);
      expect((await ferry(['verify', ...two])).code).toBe(0);
      expect((await archived(two))[`${src}:c`]).toBe(c);
    });

    it('bad sizes and destinations that are not archives are refused before any request (exit 2)', async () => {
      const dir = await tempDir();
      const src = `${fx.proxy.host}/vol/app`;
      const mark = fx.proxy.seen.length;
      const cases: Array<[string[], string]> = [
        [['--volume-size', '64K', src, `oci:${join(dir, 'layout')}`], `the sync destination "oci:${join(dir, 'layout')}" is not an archive`],
        [['--volume-size', '64K', src, `docker://${fx.proxy.host}/mirror`], `"docker://${fx.proxy.host}/mirror" is not an archive`],
        [['--volume-size', '64K', src], 'the store is not an archive'],
        [['--volume-size', 'lots', src, join(dir, 'x.tar')], 'invalid size "lots"'],
        [['--volume-size', '1K', src, join(dir, 'x.tar')], '--volume-size 1024 is too small: a volume takes at least 65536 bytes (64K)'],
      ];
      for (const [args, message] of cases) {
        const r = await ferry(['sync', ...args]);
        expect(r.code, r.stderr).toBe(2);
        expect(r.stderr).toContain(message);
      }
      const cfg = join(dir, 'sync.yaml');
      await writeFile(cfg, `repositories:\n  - {source: ${src}, destination: oci:${join(dir, 'layout')}, volume-size: 4G}\n`);
      const inConfig = await ferry(['sync', '--config', cfg]);
      expect(inConfig.code).toBe(2);
      expect(inConfig.stderr).toContain(`repositories[0].volume-size writes an archive as volumes, but the destination "oci:${join(dir, 'layout')}" is not an archive`);
      await writeFile(cfg, `volume-size: 1K\nrepositories:\n  - {source: ${src}, destination: ${join(dir, 'x.tar')}}\n`);
      const tiny = await ferry(['sync', '--config', cfg]);
      expect(tiny.code).toBe(2);
      expect(tiny.stderr).toContain('the top-level "volume-size": --volume-size 1024 is too small');
      const both = await ferry(['sync', '--config', cfg, '--volume-size', '4G']);
      expect(both.code).toBe(2);
      expect(both.stderr).toContain('--volume-size is not taken with --config');
      expect(since(mark)).toEqual([]);

      // One archive file already there is not turned into volumes behind the user's back.
      await writeFile(join(dir, 'one.tar'), 'x');
      const single = await ferry(['sync', '--volume-size', '64K', src, join(dir, 'one.tar')]);
      expect(single.code).toBe(2);
      expect(single.stderr).toContain(`${join(dir, 'one.tar')} is one archive file, but --volume-size keeps the destination as volumes (one.001.tar, …)`);
      // The refusal's own hint, not yargs' pointer to --help.
      expect(single.stderr).toContain('ferry: hint: ');
      expect(single.stderr).not.toContain("Run 'ferry --help' for usage.");
      expect((await readdir(dir)).sort()).toEqual(['one.tar', 'sync.yaml']);
    });

    it('--prune that leaves no image removes every volume of the set', async () => {
      const dir = await tempDir();
      const file = join(dir, 'gone.tar.gz');
      const src = `${fx.proxy.host}/vol/gone`;
      await publishLayers(fx.reg.host, 'vol/gone', 'only', [40 << 10]);
      await publishLayers(fx.reg.host, 'vol/gone', 'also', [40 << 10]);
      expect((await ferry(['sync', '--volume-size', '64K', src, file])).code).toBe(0);
      expect((await readdir(dir)).sort()).toEqual(['gone.001.tar.gz', 'gone.002.tar.gz']);
      for (const t of ['only', 'also']) expect((await ferry(['rm', `docker://${fx.reg.host}/vol/gone:${t}`])).code).toBe(0);
      const r = await ferry(['sync', '--json', '--prune', '--volume-size', '64K', src, file]);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout).jobs[0]).toMatchObject({ pruned: ['also', 'only'], rewritten: true, volumes: [] });
      expect(await readdir(dir)).toEqual([]);
    });

    it('a config file keeps one repository in volumes; the second run is a no-op', async () => {
      const dir = await tempDir();
      const file = join(dir, 'cfg.tar');
      const cfg = join(dir, 'sync.yaml');
      await publishLayers(fx.reg.host, 'vol/cfg', '1', [40 << 10]);
      await publishLayers(fx.reg.host, 'vol/cfg', '2', [40 << 10]);
      await writeFile(cfg, `repositories:\n  - source: ${fx.proxy.host}/vol/cfg\n    destination: ${file}\n    volume-size: 64K\n`);
      const r = await ferry(['sync', '--config', cfg]);
      expect(r.code, r.stderr).toBe(0);
      const names = (await readdir(dir)).filter((n) => n !== 'sync.yaml').sort();
      expect(names).toEqual(['cfg.001.tar', 'cfg.002.tar']);
      expect((await ferry(['verify', ...vols(dir, names)])).code).toBe(0);
      const before = await volumeFiles(dir);
      const again = await ferry(['sync', '--config', cfg]);
      expect(again.stdout).toContain('2 tags, 0 copied, 2 unchanged');
      expect(await volumeFiles(dir)).toEqual(before);
    });
  });
});
