import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { ArchiveSource } from '../src/archive/source.js';
import { copy } from '../src/copy.js';
import { OciLayout } from '../src/locations/layout.js';
import { shortDigest } from '../src/oci/digest.js';
import { parseReference } from '../src/oci/reference.js';
import { humanSize } from '../src/progress/format.js';
import { loadSyncConfig } from '../src/sync/config.js';
import { sync } from '../src/sync/sync.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { closeRegistryClients, openRepository } from '../src/locations/registry/pool.js';
import { ferry } from './helpers/cli.js';
import { testdataImages } from './helpers/expected-images.js';
import { makeLayout, type MadeImage } from './helpers/images.js';
import { TESTDATA, tempDir, testdataCopy } from './helpers/fs.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { startServe, type Served } from './helpers/serve.js';
import { proxiedRegistry, publish } from './helpers/sync-fixture.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry');
const TAG_COUNT = 200;
const tagName = (i: number) => `t${String(i).padStart(3, '0')}`;

describe.skipIf(!distribution)('ferry sync against the CNCF distribution registry', () => {
  const store = tempDir().then((d) => join(d, 'store'));

  const fx = proxiedRegistry(async (host) => {
    await publish(host, 'sync/app', 'plain', Array.from({ length: TAG_COUNT - 1 }, (_, i) => tagName(i)));
    await publish(host, 'sync/app', 'docker', [tagName(TAG_COUNT - 1)]);
    await publish(host, 'sync/versions', 'zstd', ['1.0.0', '1.2.0', '2.0.0', 'latest']);
  });

  const { since } = fx;

  it(`syncs a repository with ${TAG_COUNT} tags; a second run moves no blob and GETs no manifest`, async () => {
    const s = await store;
    const first = await ferry(['--store', s, 'sync', `${fx.proxy.host}/sync/app`]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain(`${TAG_COUNT} tags, ${TAG_COUNT} copied, 0 unchanged`);
    const images = (await ferry(['--store', s, 'images', '--json'])).stdout;
    expect(JSON.parse(images)).toHaveLength(TAG_COUNT);

    const mark = fx.proxy.seen.length;
    const connected = fx.proxy.connections();
    const second = await ferry(['--store', s, 'sync', `${fx.proxy.host}/sync/app`], { wrap: ['/usr/bin/time', '-f', 'maxrss=%M'] });
    expect(second.code, second.stderr).toBe(0);
    // ~76 MiB here; 90 when V8 still optimised undici's wasm HTTP parser with TurboFan.
    expect(Number(/maxrss=(\d+)/.exec(second.stderr)![1]) / 1024).toBeLessThan(84);
    expect(second.stdout).toContain(`${TAG_COUNT} tags, 0 copied, ${TAG_COUNT} unchanged`);
    const reqs = since(mark);
    expect(reqs.filter((q) => q.method === 'GET' && q.url.includes('/manifests/'))).toEqual([]);
    expect(reqs.filter((q) => q.url.includes('/blobs/'))).toEqual([]);
    const heads = reqs.filter((q) => q.method === 'HEAD' && q.url.includes('/manifests/'));
    expect(heads).toHaveLength(TAG_COUNT);
    // Each HEAD names the digest the store holds; distribution answers 304 without reading the manifest.
    expect(heads.every((q) => /^"sha256:[0-9a-f]{64}"$/.test(String(q.headers['if-none-match'])))).toBe(true);
    expect(heads.filter((q) => q.status !== 304)).toEqual([]);
    // The HEADs share a few kept-alive connections (undici closes after each HEAD by default).
    expect(fx.proxy.connections() - connected).toBeLessThan(20);

    // A registry (or proxy) that ignores If-None-Match answers 200 with the digest: still a no-op.
    fx.proxy.setRule((q) => (q.method === 'HEAD' ? { dropRequestHeaders: ['if-none-match'] } : undefined));
    try {
      const m = fx.proxy.seen.length;
      const plain = await ferry(['--store', s, 'sync', `${fx.proxy.host}/sync/app`]);
      expect(plain.stdout).toContain(`${TAG_COUNT} tags, 0 copied, ${TAG_COUNT} unchanged`);
      expect(since(m).filter((q) => q.method === 'HEAD' && q.status === 200)).toHaveLength(TAG_COUNT);
    } finally {
      fx.proxy.setRule(undefined);
    }

    // Tag checks overlap four per --jobs: what a far registry's round trips cost is divided by 16.
    fx.proxy.setRule((q) => (q.method === 'HEAD' ? { delayMs: 40 } : undefined));
    try {
      fx.proxy.peakInFlight();
      const far = await ferry(['--store', s, 'sync', `${fx.proxy.host}/sync/app`]);
      expect(far.code, far.stderr).toBe(0);
      const peak = fx.proxy.peakInFlight();
      expect(peak).toBeGreaterThanOrEqual(12);
      expect(peak).toBeLessThanOrEqual(16);
      const gentle = await ferry(['--store', s, 'sync', '--jobs', '1', `${fx.proxy.host}/sync/app`]);
      expect(gentle.code, gentle.stderr).toBe(0);
      expect(fx.proxy.peakInFlight()).toBeLessThanOrEqual(4);
    } finally {
      fx.proxy.setRule(undefined);
    }
  });

  it('a no-op run into another registry costs both tag lists and one HEAD per tag at the source (the state file stands in for the destination HEADs) and loads no codec or child process module', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const args = ['sync', '--include', '^t00[0-4]$', `${fx.proxy.host}/sync/app`, `docker://${fx.proxy.host}/noop`];
    expect((await ferry(args, { env })).code).toBe(0);
    const [file] = await readdir(join(env.FERRY_STATE_DIR, 'sync'));
    const statePath = join(env.FERRY_STATE_DIR, 'sync', file!);
    expect((await stat(statePath)).mode & 0o777).toBe(0o600);
    const state = JSON.parse(await readFile(statePath, 'utf8'));
    expect(state.destination).toBe(`docker://${fx.proxy.host}/noop/sync/app`);
    expect(Object.keys(state.tags)).toEqual(['t000', 't001', 't002', 't003', 't004']);

    let mark = fx.proxy.seen.length;
    // Start-up is most of a no-op run: nothing may load what it does not use.
    const modules = join(env.FERRY_STATE_DIR, 'modules.txt');
    const hook = join(env.FERRY_STATE_DIR, 'modules.cjs');
    await writeFile(hook, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(modules)}, process.moduleLoadList.join('\\n')));`);
    const again = await ferry(args, { env: { ...env, NODE_OPTIONS: `--require ${hook}` } });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('5 tags, 0 copied, 5 unchanged');
    const loaded = (await readFile(modules, 'utf8')).split('\n');
    expect(loaded).toContain('NativeModule net');
    expect(loaded.filter((m) => /^NativeModule (zlib|child_process|tls|http2)$/.test(m))).toEqual([]);
    let reqs = since(mark).filter((q) => q.url !== '/v2/');
    expect(reqs.filter((q) => q.url.includes('/tags/list')).map((q) => q.url.split('?')[0]).sort()).toEqual(['/v2/noop/sync/app/tags/list', '/v2/sync/app/tags/list']);
    expect(reqs.filter((q) => q.method === 'HEAD' && q.url.startsWith('/v2/sync/app/manifests/'))).toHaveLength(5);
    expect(reqs).toHaveLength(7);
    // The destination's list is asked for beside the source's, not after the first tag check.
    const order = reqs.map((q) => (q.method === 'HEAD' ? 'HEAD' : q.url.split('?')[0]));
    expect(order.indexOf('/v2/noop/sync/app/tags/list')).toBeLessThan(order.indexOf('HEAD'));

    // --no-state: every tag is checked at the destination again, as on a first run.
    mark = fx.proxy.seen.length;
    const full = await ferry([...args, '--no-state'], { env });
    expect(full.code, full.stderr).toBe(0);
    expect(full.stdout).toContain('5 tags, 0 copied, 5 unchanged');
    reqs = since(mark).filter((q) => q.url !== '/v2/');
    expect(reqs.filter((q) => q.method === 'HEAD' && q.url.startsWith('/v2/noop/sync/app/manifests/'))).toHaveLength(5);
    expect(reqs.filter((q) => q.url.startsWith('/v2/noop/sync/app/tags/list'))).toEqual([]);
    expect(reqs).toHaveLength(11);

    // A damaged state file is set aside with a warning; the run checks every tag instead.
    await writeFile(statePath, '{"destination": 5');
    mark = fx.proxy.seen.length;
    const damaged = await ferry(args, { env });
    expect(damaged.code, damaged.stderr).toBe(0);
    expect(damaged.stderr).toContain('ignoring the sync state');
    expect(damaged.stdout).toContain('5 tags, 0 copied, 5 unchanged');
    expect(since(mark).filter((q) => q.method === 'HEAD' && q.url.startsWith('/v2/noop/sync/app/manifests/'))).toHaveLength(5);
    expect(JSON.parse(await readFile(statePath, 'utf8')).tags).toEqual(state.tags);
  });

  it('copies and reports tags in version order (v1, v2, v10), not code-unit order (v1, v10, v2)', async () => {
    await publish(fx.reg.host, 'sync/order', 'plain', ['v10', 'v2', 'v1', '1.10', '1.9', 'latest']);
    const store = join(await tempDir(), 's');
    const r = await ferry(['--store', store, 'sync', '--json', '--jobs', '1', `${fx.reg.host}/sync/order`]);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).jobs[0].copied).toEqual(['1.9', '1.10', 'latest', 'v1', 'v2', 'v10']);
    // Unchanged tags are checked many at once and answered in any order: reported in version order too.
    const again = await ferry(['--store', store, 'sync', '--json', `${fx.reg.host}/sync/order`]);
    expect(JSON.parse(again.stdout).jobs[0].unchanged).toEqual(['1.9', '1.10', 'latest', 'v1', 'v2', 'v10']);
  });

  it('a layout whose index.json is damaged fails the job (exit 3) and is left as it was: no writer marker of the run', async () => {
    const dir = join(await tempDir(), 'lay');
    expect((await ferry(['copy', '-q', `oci:${TESTDATA}:plain`, `oci:${dir}:x`])).code).toBe(0);
    for (const damaged of ['{"bad', '[]']) {
      await writeFile(join(dir, 'index.json'), damaged);
      const r = await ferry(['sync', `${fx.reg.host}/sync/versions`, `oci:${dir}`]);
      expect(r.code, r.stderr).toBe(3);
      expect(r.stderr).toContain(`${dir}/index.json`);
      expect((await readdir(dir)).filter((n) => n.startsWith('.ferry-writer-'))).toEqual([]);
      expect(await readFile(join(dir, 'index.json'), 'utf8')).toBe(damaged);
    }
  });

  it('a tag deleted at the destination is copied again although the state remembers it', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const args = ['sync', '--include', '^t01[0-2]$', `${fx.proxy.host}/sync/app`, `docker://${fx.reg.host}/gone`];
    expect((await ferry(args, { env })).stdout).toContain('3 tags, 3 copied');
    // One manifest behind all three tags: deleting it (--force: distribution deletes no tag alone)
    // removes them all at the destination.
    expect((await ferry(['rm', '--force', `docker://${fx.reg.host}/gone/sync/app:t010`])).code).toBe(0);
    const left = (await ferry(['tags', `${fx.reg.host}/gone/sync/app`])).stdout.split('\n').filter(Boolean);
    const r = await ferry(args, { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`3 tags, ${3 - left.length} copied, ${left.length} unchanged`);
    expect((await ferry(['tags', `${fx.reg.host}/gone/sync/app`])).stdout.split('\n').filter(Boolean).sort()).toEqual(['t010', 't011', 't012']);
  });

  it('a sync narrowed by --platform into a registry is a no-op the second time (its digests differ from the source)', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    await publish(fx.reg.host, 'sync/multi', 'multi', ['1']);
    const args = ['sync', '--platform', 'linux/amd64', `${fx.proxy.host}/sync/multi`, `docker://${fx.reg.host}/narrow`];
    expect((await ferry(args, { env })).stdout).toContain('1 tags, 1 copied');
    const mark = fx.proxy.seen.length;
    const again = await ferry(args, { env });
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toContain('1 tags, 0 copied, 1 unchanged');
    expect(since(mark).filter((q) => q.url.includes('/blobs/') || q.method === 'GET' && q.url.includes('/manifests/'))).toEqual([]);
  });

  it('a changed --platform copies the tags again, into a registry and into a layout; the same one again is a no-op', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    await publish(fx.reg.host, 'sync/multi', 'multi', ['1']);
    const layout = join(await tempDir(), 'mirror');
    const exp = await testdataImages();
    for (const [dest, held] of [
      [`docker://${fx.reg.host}/reselect`, async () => (await ferry(['inspect', '--raw', `docker://${fx.reg.host}/reselect/sync/multi:1`])).stdout],
      [`oci:${layout}`, async () => (await ferry(['inspect', '--raw', `oci:${layout}:1`])).stdout],
    ] as const) {
      const run = (platform?: string) => ferry(['sync', ...(platform ? ['--platform', platform] : []), `${fx.proxy.host}/sync/multi`, dest], { env });
      const digestOf = async () => `sha256:${createHash('sha256').update(await held()).digest('hex')}`;
      expect((await run()).stdout, dest).toContain('1 tags, 1 copied');
      expect(await digestOf()).toBe(exp.multi.digest);
      const arm = await run('linux/arm64');
      expect(arm.stdout, `${dest}: ${arm.stderr}`).toContain('1 tags, 1 copied');
      expect(await digestOf()).toBe(exp.multi.platforms!['linux/arm64/v8']!.manifest);
      expect((await run('linux/arm64')).stdout).toContain('1 tags, 0 copied, 1 unchanged');
      expect((await run()).stdout, dest).toContain('1 tags, 1 copied');
      expect(await digestOf()).toBe(exp.multi.digest);
      expect((await run()).stdout).toContain('1 tags, 0 copied, 1 unchanged');
    }
  });

  it('after one tag changes, only that image moves', async () => {
    const s = await store;
    const exp = await testdataImages();
    await publish(fx.reg.host, 'sync/app', 'zstd', [tagName(7)]);
    const mark = fx.proxy.seen.length;
    const r = await ferry(['--store', s, 'sync', `${fx.proxy.host}/sync/app`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`1 copied, ${TAG_COUNT - 1} unchanged`);
    // The moved tag's HEAD named the old digest, and the registry answered with the new one.
    const moved = since(mark).find((q) => q.method === 'HEAD' && q.url.endsWith(`/manifests/${tagName(7)}`))!;
    expect(moved.headers['if-none-match']).toMatch(/^"sha256:/);
    expect(moved.status).toBe(200);
    const blobGets = since(mark).filter((q) => q.method === 'GET' && q.url.includes('/blobs/')).map((q) => q.url.split('/').pop());
    expect(blobGets.sort()).toEqual([exp.zstd.config as string, ...exp.zstd.layers!.map((l) => l.digest)].sort());
  });

  it('--dry-run plans the bytes and changes nothing; --prune removes a tag deleted upstream', async () => {
    const s = await store;
    await publish(fx.reg.host, 'sync/app', 'layers', [tagName(8)]);
    const before = await readFile(join(s, 'index.json'), 'utf8');
    const plan = await ferry(['--store', s, 'sync', '--dry-run', `${fx.proxy.host}/sync/app`]);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toMatch(/1 would copy/);
    expect(plan.stdout).toMatch(/blobs to move: +4 \(2\.18kB\) after deduplication/);
    expect(await readFile(join(s, 'index.json'), 'utf8')).toBe(before);

    expect((await ferry(['rm', `docker://${fx.reg.host}/sync/app:${tagName(TAG_COUNT - 1)}`])).code).toBe(0);
    const pruned = await ferry(['--store', s, 'sync', '--prune', `${fx.proxy.host}/sync/app`]);
    expect(pruned.code, pruned.stderr).toBe(0);
    expect(pruned.stdout).toContain('1 pruned');
    const names = JSON.parse((await ferry(['--store', s, 'images', '--json'])).stdout).map((i: { tag: string }) => i.tag);
    expect(names).not.toContain(tagName(TAG_COUNT - 1));
    expect(names).toContain(tagName(8));
    expect((await ferry(['--store', s, 'verify'])).code).toBe(0);

    // A name given in the store by hand is not sync's to prune (it was, and its blobs with it).
    const repo = `${fx.proxy.host}/sync/app`;
    expect((await ferry(['--store', s, 'tag', `${repo}:${tagName(8)}`, `${repo}:pinned`])).code).toBe(0);
    const kept = await ferry(['--store', s, 'sync', '--prune', repo]);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toContain('0 pruned');
    expect(kept.stderr).toContain(`${repo}:pinned: not upstream, but it has no dev.ferry.sync.platforms annotation (named by hand, or synced by an older ferry): left in place (--prune --no-state prunes it)`);
    const tags = async () => JSON.parse((await ferry(['--store', s, 'images', '--json'])).stdout).map((i: { tag: string }) => i.tag);
    expect(await tags()).toContain('pinned');
    const all = await ferry(['--store', s, 'sync', '--prune', '--no-state', repo]);
    expect(all.stdout).toContain('1 pruned');
    expect(await tags()).not.toContain('pinned');
  });

  it('--prune with --include prunes only tags the filter selects, also in --dry-run', async () => {
    const dir = join(await tempDir(), 'mirror');
    const repo = `${fx.proxy.host}/sync/scoped`;
    await publish(fx.reg.host, 'sync/scoped', 'plain', ['1.0.0']);
    await publish(fx.reg.host, 'sync/scoped', 'layers', ['1.1.0']);
    await publish(fx.reg.host, 'sync/scoped', 'zstd', ['2.0.0']);
    expect((await ferry(['sync', repo, `oci:${dir}`])).code).toBe(0);
    for (const t of ['1.1.0', '2.0.0']) expect((await ferry(['rm', `docker://${fx.reg.host}/sync/scoped:${t}`])).code).toBe(0);

    const args = ['sync', '--prune', '--include', '^1\\.', repo, `oci:${dir}`];
    const plan = await ferry([...args, '--dry-run', '--json']);
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).jobs[0].pruned).toEqual(['1.1.0']);
    const r = await ferry(args);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 tags, 0 copied, 1 unchanged, 1 pruned, 0 failed');
    // 2.0.0, gone upstream too, is outside the filter: not this run's to remove.
    const names = async () => {
      const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
      return index.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name']).sort();
    };
    expect(await names()).toEqual(['1.0.0', '2.0.0']);
    expect((await ferry(['sync', '--prune', repo, `oci:${dir}`])).stdout).toContain('1 pruned');
    expect(await names()).toEqual(['1.0.0']);
  });

  it('--prune into a layout leaves, and names on every run, an image an older ferry synced (no sync mark); --prune --no-state prunes it', async () => {
    const dir = join(await tempDir(), 'mirror');
    const repo = `${fx.proxy.host}/sync/older`;
    await publish(fx.reg.host, 'sync/older', 'plain', ['1']);
    await publish(fx.reg.host, 'sync/older', 'layers', ['2']);
    expect((await ferry(['sync', repo, `oci:${dir}`])).code).toBe(0);
    // What an older ferry wrote: the same entries, without the annotation sync now puts on its images.
    const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
    for (const m of index.manifests) delete m.annotations!['dev.ferry.sync.platforms'];
    await writeFile(join(dir, 'index.json'), JSON.stringify(index));
    expect((await ferry(['rm', `docker://${fx.reg.host}/sync/older:2`])).code).toBe(0);

    const left = `${repo}:2: not upstream, but it has no dev.ferry.sync.platforms annotation (named by hand, or synced by an older ferry): left in place (--prune --no-state prunes it)`;
    for (let run = 0; run < 2; run++) {
      const r = await ferry(['sync', '--prune', repo, `oci:${dir}`]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('0 pruned');
      expect(r.stderr).toContain(left);
    }
    const json = await ferry(['sync', '--prune', '--json', repo, `oci:${dir}`]);
    expect(JSON.parse(json.stdout).jobs[0].left).toEqual(['2']);
    const all = await ferry(['sync', '--prune', '--no-state', repo, `oci:${dir}`]);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain('1 pruned');
    expect(all.stderr).not.toContain('left in place');
    const after = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as { manifests: Array<{ annotations?: Record<string, string> }> };
    expect(after.manifests.map((m) => m.annotations?.['org.opencontainers.image.ref.name'])).toEqual(['1']);
  });

  it('filters: --include/--exclude regexes and --semver ranges', async () => {
    const s = join(await tempDir(), 'filtered');
    const inc = await ferry(['--store', s, 'sync', '--include', '^t00', '--exclude', '5$', `${fx.proxy.host}/sync/app`]);
    expect(inc.code, inc.stderr).toBe(0);
    expect(inc.stdout).toContain('9 tags, 9 copied');
    const sem = await ferry(['--store', s, 'sync', '--semver', '>=1.2 <2', `${fx.proxy.host}/sync/versions`]);
    expect(sem.code, sem.stderr).toBe(0);
    expect(sem.stdout).toContain('1 tags, 1 copied');
    const mark = fx.proxy.seen.length;
    const bad = await ferry(['--store', s, 'sync', '--include', '(', `${fx.proxy.host}/sync/versions`]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('invalid --include pattern');
    const range = await ferry(['--store', s, 'sync', '--semver', 'nonsense', `${fx.proxy.host}/sync/versions`]);
    expect(range.code).toBe(2);
    expect(range.stderr).toContain('invalid version range "nonsense"');
    // Refused as the command's mistake, before any request and without a per-image failure.
    expect(range.stderr).not.toContain('FAILED');
    expect(fx.proxy.seen.slice(mark)).toEqual([]);
    // The flag and its whole range are named, with what a range looks like: `latest` is no version.
    const latest = await ferry(['--store', s, 'sync', '--semver', '1.x || latest', `${fx.proxy.host}/sync/versions`]);
    expect(latest.code).toBe(2);
    expect(latest.stderr).toContain('--semver "1.x || latest": invalid version range "latest"');
    expect(latest.stderr).toContain('hint: a range is comparators such as ">=1.2 <2"');
  });

  it('filters that select none of the tags: a warning even with -q, exit 0', async () => {
    const s = join(await tempDir(), 'none');
    for (const filter of [['--semver', '>=5'], ['--include', '^v']]) {
      const r = await ferry(['--store', s, 'sync', '-q', ...filter, `${fx.proxy.host}/sync/versions`]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toContain(`ferry: warning: ${fx.proxy.host}/sync/versions: the filters select none of its 4 tag(s); nothing is synced`);
    }
    const some = await ferry(['--store', s, 'sync', '--semver', '>=2', `${fx.proxy.host}/sync/versions`]);
    expect(some.stderr).not.toContain('warning');
  });

  it('a YAML config syncs several repositories to a layout and to another registry prefix', async () => {
    const dir = await tempDir();
    const cfg = join(dir, 'sync.yaml');
    await writeFile(cfg, [
      `repositories:`,
      `  - source: ${fx.proxy.host}/sync/versions`,
      `    semver: "^1"`,
      `    destination: oci:${join(dir, 'layout')}`,
      `  - source: ${fx.proxy.host}/sync/versions`,
      `    include: ['^latest$']`,
      `    destination: docker://${fx.reg.host}/mirror`,
    ].join('\n'));
    const r = await ferry(['sync', '--config', cfg]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('2 tags, 2 copied');
    expect(r.stdout).toContain(`-> docker://${fx.reg.host}/mirror/sync/versions: 1 tags, 1 copied`);
    expect((await ferry(['tags', `${fx.reg.host}/mirror/sync/versions`])).stdout.trim()).toBe('latest');
    expect((await ferry(['verify', join(dir, 'layout')])).code).toBe(0);
    await writeFile(cfg, 'repositories: 5\n');
    const bad = await ferry(['sync', '--config', cfg]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('"repositories" must be a non-empty list');
  });

  it('one failing image does not stop the others; the summary and exit code say what failed', async () => {
    const s = join(await tempDir(), 'partial');
    const exp = await testdataImages();
    const zstdLayer = exp.zstd.layers![0]!.digest;
    fx.proxy.setRule((q) => (q.method === 'GET' && q.url.endsWith(`/blobs/${zstdLayer}`) ? { flipByte: 3 } : undefined));
    const r = await ferry(['--store', s, 'sync', '--include', '^t00[5-9]$', `${fx.proxy.host}/sync/app`]);
    fx.proxy.setRule(undefined);
    expect(r.code).toBe(4);
    expect(r.stdout).toContain('5 tags, 4 copied, 0 unchanged, 0 pruned, 1 failed');
    expect(r.stderr).toMatch(/sync: 1 image\(s\) failed: .*sync\/app:t007: digest mismatch/);
    const rerun = await ferry(['--store', s, 'sync', '--include', '^t00[5-9]$', `${fx.proxy.host}/sync/app`]);
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(rerun.stdout).toContain('5 tags, 1 copied, 4 unchanged');
    // A repository that fails whole is named as a repository, beside the job that worked.
    const cfg = join(await tempDir(), 'sync.yaml');
    await writeFile(cfg, `repositories:\n  - ${fx.reg.host}/sync/nope\n  - {source: ${fx.reg.host}/sync/app, include: ['^t005$']}\n`);
    const whole = await ferry(['--store', s, 'sync', '--config', cfg]);
    expect(whole.code).toBe(2);
    expect(whole.stdout).toMatch(new RegExp(`sync/app -> ${s}: 1 tags, .* 0 failed`));
    expect(whole.stderr).toContain(`${fx.reg.host}/sync/nope: FAILED: `);
    expect(whole.stderr).toContain(`sync: 1 repository failed: ${fx.reg.host}/sync/nope: `);
    expect(whole.stderr).not.toContain(':*');
  });

  it('a destination that dies mid-run: after 3 tags fail unreachable, the job\'s other tags are not tried; the next job runs', async () => {
    const env = { FERRY_STATE_DIR: await tempDir(), FERRY_RETRY_BACKOFF_MS: '1' };
    const dead = await startFaultProxy(fx.reg.host);
    try {
      // The first tag is copied whole (its tag PUT is forwarded); from then on every connection is cut.
      let down = -1;
      dead.setRule((q) => {
        if (down >= 0) return { drop: true };
        if (q.method === 'PUT' && q.url.endsWith('/manifests/t020')) down = dead.seen.length;
        return undefined;
      });
      const s = join(await tempDir(), 'store');
      const cfg = join(await tempDir(), 'sync.yaml');
      await writeFile(cfg, [
        'repositories:',
        `  - {source: ${fx.proxy.host}/sync/app, include: ['^t0[23][0-9]$'], destination: 'docker://${dead.host}/dead'}`,
        `  - {source: ${fx.proxy.host}/sync/versions, include: ['^latest$']}`,
      ].join('\n'));
      const mark = fx.proxy.seen.length;
      const r = await ferry(['--store', s, 'sync', '--config', cfg], { env });
      expect(r.code, r.stderr).toBe(6);
      // Every tag is accounted for: one copied, three failed trying, sixteen not tried.
      expect(r.stdout).toContain(`sync/app -> docker://${dead.host}/dead/sync/app: 20 tags, 1 copied, 0 unchanged, 0 pruned, 19 failed`);
      const notTried = `not tried: ${dead.host} unreachable after 3 consecutive failures`;
      for (const t of ['t021', 't022', 't023']) expect(r.stderr).toMatch(new RegExp(`sync/app:${t}: FAILED: .*cannot reach`));
      const skipped = r.stderr.split('\n').filter((l) => l.includes(notTried)).map((l) => /sync\/app:(t\d+)/.exec(l)?.[1]);
      expect(skipped).toEqual(Array.from({ length: 16 }, (_, i) => tagName(24 + i)));
      expect(r.stdout).toContain(`sync/versions -> ${s}: 1 tags, 1 copied`);
      // Only the tags tried cost requests: a copy reads its manifest at the source first.
      const gets = since(mark).filter((q) => q.method === 'GET' && q.url.startsWith('/v2/sync/app/manifests/'));
      expect(gets).toHaveLength(4);
      // At the dead registry: each of the three tags tried its requests through one retry cycle
      // (5 attempts); the sixteen others asked nothing.
      const cut = dead.seen.slice(down);
      expect(cut.length % 5).toBe(0);
      expect(cut.length).toBeLessThanOrEqual(3 * 2 * 5);
    } finally {
      await dead.stop();
    }
  });

  it('a source that dies mid-run: the same, counted at the source', async () => {
    const env = { FERRY_STATE_DIR: await tempDir(), FERRY_RETRY_BACKOFF_MS: '1' };
    const dead = await startFaultProxy(fx.reg.host);
    try {
      let down = -1;
      dead.setRule(() => (down >= 0 ? { drop: true } : undefined));
      // The first tag's tag PUT at the destination cuts the source off.
      fx.proxy.setRule((q) => {
        if (q.method === 'PUT' && q.url.endsWith('/manifests/t050')) down = dead.seen.length;
        return undefined;
      });
      const r = await ferry(['sync', '--include', '^t05[0-9]$', `${dead.host}/sync/app`, `docker://${fx.proxy.host}/fromdead`], { env });
      expect(r.code, r.stderr).toBe(6);
      expect(r.stdout).toContain('10 tags, 1 copied, 0 unchanged, 0 pruned, 9 failed');
      expect(r.stderr.split('\n').filter((l) => l.includes(`not tried: ${dead.host} unreachable after 3 consecutive failures`))).toHaveLength(6);
      // Three manifest GETs, 5 attempts each; nothing for the six tags not tried.
      expect(dead.seen.slice(down).map((q) => `${q.method} ${q.url.split('/').slice(0, 5).join('/')}`)).toEqual(Array(15).fill('GET /v2/sync/app/manifests'));
    } finally {
      fx.proxy.setRule(undefined);
      await dead.stop();
    }
  });

  it('a source down for the whole run: after 3 jobs fail unreachable, its later jobs are not tried; jobs elsewhere run', async () => {
    const env = { FERRY_STATE_DIR: await tempDir(), FERRY_RETRY_BACKOFF_MS: '1' };
    const dead = await startFaultProxy(fx.reg.host);
    try {
      dead.setRule(() => ({ drop: true }));
      const s = join(await tempDir(), 'store');
      const cfg = join(await tempDir(), 'sync.yaml');
      const repos = ['r1', 'r2', 'r3', 'r4', 'r5'];
      await writeFile(cfg, [
        'repositories:',
        ...repos.map((x) => `  - ${dead.host}/sync/${x}`),
        `  - {source: ${fx.reg.host}/sync/versions, include: ['^latest$']}`,
      ].join('\n'));
      const r = await ferry(['--store', s, 'sync', '--config', cfg], { env });
      expect(r.code, r.stderr).toBe(6);
      const notTried = `not tried: ${dead.host} unreachable after 3 consecutive failures`;
      for (const x of ['r1', 'r2', 'r3']) expect(r.stderr).toMatch(new RegExp(`${dead.host}/sync/${x}: FAILED: .*cannot reach`));
      for (const x of ['r4', 'r5']) expect(r.stderr).toContain(`${dead.host}/sync/${x}: FAILED: ${notTried}`);
      // The two jobs not tried asked the dead host nothing.
      const asked = new Set(dead.seen.map((q) => /^\/v2\/sync\/(r\d)\//.exec(q.url)?.[1]).filter(Boolean));
      expect([...asked].sort()).toEqual(['r1', 'r2', 'r3']);
      expect(r.stdout).toContain(`sync/versions -> ${s}: 1 tags, 1 copied`);
    } finally {
      await dead.stop();
    }
  });

  it('a destination that tripped one job is not tried by a later job writing to it', async () => {
    const env = { FERRY_STATE_DIR: await tempDir(), FERRY_RETRY_BACKOFF_MS: '1' };
    const dead = await startFaultProxy(fx.reg.host);
    try {
      // It answers the tag checks (nothing there yet), then cuts every upload.
      dead.setRule((q) => (q.url === '/v2/' || (q.method === 'HEAD' && q.url.includes('/manifests/')) ? undefined : { drop: true }));
      const cfg = join(await tempDir(), 'sync.yaml');
      await writeFile(cfg, [
        'repositories:',
        `  - {source: ${fx.reg.host}/sync/app, include: ['^t06[0-4]$'], destination: 'docker://${dead.host}/dead'}`,
        `  - {source: ${fx.reg.host}/sync/versions, destination: 'docker://${dead.host}/dead'}`,
      ].join('\n'));
      const r = await ferry(['sync', '--config', cfg], { env });
      expect(r.code, r.stderr).toBe(6);
      const notTried = `not tried: ${dead.host} unreachable after 3 consecutive failures`;
      expect(r.stderr).toContain(`sync/versions: FAILED: ${notTried}`);
      expect(dead.seen.some((q) => q.url.includes('/dead/sync/versions/'))).toBe(false);
    } finally {
      await dead.stop();
    }
  });

  it('a registry answering 500 for some tags is not taken for down: the tags after them are copied', async () => {
    const env = { FERRY_STATE_DIR: await tempDir(), FERRY_RETRY_BACKOFF_MS: '1' };
    fx.proxy.setRule((q) => (q.method === 'PUT' && /\/flaky\/.*\/manifests\/t04[1-4]$/.test(q.url) ? { status: 500 } : undefined));
    try {
      const r = await ferry(['sync', '--include', '^t04[0-7]$', `${fx.reg.host}/sync/app`, `docker://${fx.proxy.host}/flaky`], { env });
      expect(r.code).toBe(6);
      expect(r.stdout).toContain('8 tags, 4 copied, 0 unchanged, 0 pruned, 4 failed');
      expect(r.stderr).toContain('sync/app:t044: FAILED: ');
      expect(r.stderr).not.toContain('not tried');
      expect((await ferry(['tags', `${fx.reg.host}/flaky/sync/app`])).stdout.split('\n').filter(Boolean).sort()).toEqual(['t040', 't045', 't046', 't047']);
    } finally {
      fx.proxy.setRule(undefined);
    }
  });
});

describe.skipIf(!distribution)('sync --prune into a registry', () => {
  // The source is `ferry serve`, which deletes a single tag: "gone upstream" without touching storage.
  let dist: RunningRegistry;
  let served: Served;
  beforeAll(async () => {
    dist = await startDistribution();
    served = await startServe(join(await tempDir(), 'served'), ['-q']);
  }, 60_000);
  afterAll(async () => {
    await closeRegistryClients();
    await served?.stop();
    await dist?.stop();
  });

  const tagsOf = async (repo: string) => (await ferry(['tags', repo])).stdout.split('\n').filter(Boolean).sort();
  const untagUpstream = async (repo: string, tag: string) => {
    const res = await fetch(`${served.url}/v2/${repo}/manifests/${tag}`, { method: 'DELETE' });
    expect(res.status).toBe(202);
  };
  const digestAt = async (ref: string) => `sha256:${createHash('sha256').update((await ferry(['inspect', '--raw', `docker://${ref}`])).stdout).digest('hex')}`;

  it('distribution 2.8: a tag that shares its manifest with a kept tag is reported as not pruned, every run; a tag sync did not write is left', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const exp = await testdataImages();
    await publish(served.host, 'up/app', 'plain', ['1.0.0', 'old']);
    await publish(served.host, 'up/app', 'zstd', ['solo']);
    const mirror = `${dist.host}/mirror/up/app`;
    const args = ['sync', '--prune', `${served.host}/up/app`, `docker://${dist.host}/mirror`];
    expect((await ferry(args, { env })).stdout).toContain('3 tags, 3 copied');
    // Pushed straight to the mirror, never upstream: not sync's to remove.
    await publish(dist.host, 'mirror/up/app', 'layers', ['hotfix']);
    await untagUpstream('up/app', 'old');
    await untagUpstream('up/app', 'solo');

    const first = await ferry(args, { env });
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('1 tags, 0 copied, 1 unchanged, 1 pruned, 1 prune(s) not possible, 0 failed');
    const notPruned = `ferry: warning: ${dist.host}/mirror/up/app:old: not pruned (shares sha256:${exp.plain.digest.slice(7, 19)}… with 1.0.0; this registry deletes only by digest: a DELETE of the tag got HTTP 400 DIGEST_INVALID)`;
    expect(first.stderr).toContain(notPruned);
    // Named as in the mirror, where they are (they were named as upstream, where they are not).
    expect(first.stderr).toContain(`${dist.host}/mirror/up/app:solo: pruned`);
    expect(first.stderr).toContain(`${dist.host}/mirror/up/app:hotfix: not upstream, but not written by ferry sync: left in place`);
    expect(first.stderr).not.toContain(':old: pruned');
    // solo's manifest was deleted by digest (nothing else was on it); old and 1.0.0 share one that stays.
    expect(await tagsOf(mirror)).toEqual(['1.0.0', 'hotfix', 'old']);
    expect(await digestAt(`${mirror}:1.0.0`)).toBe(exp.plain.digest);

    // The next run says the same about old (it is still there), and no longer mentions hotfix.
    const again = await ferry([...args, '--json'], { env });
    expect(again.code, again.stderr).toBe(0);
    const job = JSON.parse(again.stdout).jobs[0];
    expect(job.pruned).toEqual([]);
    expect(job.left).toEqual([]);
    expect(job.notPruned).toEqual([{ tag: 'old', digest: exp.plain.digest, sharedWith: '1.0.0', reason: expect.stringContaining('deletes only by digest') }]);
    expect(again.stderr).toContain(notPruned);
    expect(again.stderr).not.toContain('hotfix');
    expect(await tagsOf(mirror)).toEqual(['1.0.0', 'hotfix', 'old']);

    // --no-state: every tag not upstream is sync's to remove, hotfix too (its manifest is its own).
    const all = await ferry([...args, '--no-state'], { env });
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toContain('1 pruned, 1 prune(s) not possible');
    expect(await tagsOf(mirror)).toEqual(['1.0.0', 'old']);
  });

  it('a hand-pushed tag on the manifest of a tag gone upstream keeps that manifest: the tag is not pruned', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    await publish(served.host, 'up/keep', 'plain', ['1']);
    await publish(served.host, 'up/keep', 'zstd', ['2']);
    const args = ['sync', '--prune', `${served.host}/up/keep`, `docker://${dist.host}/mirror`];
    expect((await ferry(args, { env })).code).toBe(0);
    await publish(dist.host, 'mirror/up/keep', 'zstd', ['pinned']);
    await untagUpstream('up/keep', '2');
    const r = await ferry(args, { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('0 pruned, 1 prune(s) not possible');
    expect(r.stderr).toContain(':2: not pruned (shares sha256:');
    expect(r.stderr).toContain('with pinned;');
    expect(await tagsOf(`${dist.host}/mirror/up/keep`)).toEqual(['1', '2', 'pinned']);
  });

  it('ferry serve (DELETE by tag): the tag gone upstream is removed, the tag sharing its manifest stays', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const exp = await testdataImages();
    await publish(served.host, 'up/srv', 'plain', ['1.0.0', 'old']);
    const args = ['sync', '--prune', `${served.host}/up/srv`, `docker://${served.host}/mirror`];
    expect((await ferry(args, { env })).stdout).toContain('2 tags, 2 copied');
    await publish(served.host, 'mirror/up/srv', 'layers', ['hotfix']);
    await untagUpstream('up/srv', 'old');
    const r = await ferry(args, { env });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 tags, 0 copied, 1 unchanged, 1 pruned, 0 failed');
    expect(r.stderr).not.toContain('warning');
    expect(await tagsOf(`${served.host}/mirror/up/srv`)).toEqual(['1.0.0', 'hotfix']);
    expect(await digestAt(`${served.host}/mirror/up/srv:1.0.0`)).toBe(exp.plain.digest);
    const again = await ferry(args, { env });
    expect(again.stdout).toContain('1 tags, 0 copied, 1 unchanged, 0 pruned, 0 failed');
    expect(again.stderr).not.toContain('hotfix');
  });

  it('--dry-run --prune names only the tags sync wrote', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    await publish(served.host, 'up/dry', 'plain', ['1', 'gone']);
    const args = ['sync', '--prune', `${served.host}/up/dry`, `docker://${dist.host}/mirror`];
    expect((await ferry(args, { env })).code).toBe(0);
    await publish(dist.host, 'mirror/up/dry', 'layers', ['hotfix']);
    await untagUpstream('up/dry', 'gone');
    const plan = await ferry([...args, '--dry-run', '--json'], { env });
    expect(plan.code, plan.stderr).toBe(0);
    const job = JSON.parse(plan.stdout).jobs[0];
    expect(job.pruned).toEqual(['gone']);
    expect(job.left).toEqual(['hotfix']);
    expect(await tagsOf(`${dist.host}/mirror/up/dry`)).toEqual(['1', 'gone', 'hotfix']);
  });
});

/** Adds to layout `dir` an SBOM (an OCI manifest whose subject is the image tagged `tag`) saying `text`; returns its digest. */
async function addReferrer(dir: string, tag: string, text: string): Promise<string> {
  const put = async (body: string) => {
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), body);
    return { digest, size: Buffer.byteLength(body) };
  };
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  const image = index.manifests.find((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name'] === tag);
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    artifactType: 'application/spdx+json',
    config: { mediaType: 'application/vnd.oci.empty.v1+json', ...(await put('{}')) },
    layers: [{ mediaType: 'application/spdx+json', ...(await put(JSON.stringify({ spdxVersion: 'SPDX-2.3', name: text }))) }],
    subject: { mediaType: image.mediaType, digest: image.digest, size: image.size },
  });
  const d = await put(manifest);
  index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...d });
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  return d.digest;
}

describe.skipIf(!distribution)('sync --referrers: referrers attached after a tag was mirrored', () => {
  let dist: RunningRegistry;
  let served: Served;
  let proxy: FaultProxy;
  beforeAll(async () => {
    dist = await startDistribution();
    served = await startServe(join(await tempDir(), 'served'), ['-q']);
    proxy = await startFaultProxy(served.host);
  }, 60_000);
  afterAll(async () => {
    await closeRegistryClients();
    await proxy?.stop();
    await served?.stop();
    await dist?.stop();
  });

  it('reach a layout, an archive and a registry on the next run, which costs one request per unchanged tag; the run after is a no-op', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const exp = await testdataImages();
    const dir = await tempDir();
    const layout = join(dir, 'mirror');
    const archive = join(dir, 'mirror.tar');
    const registry = `docker://${dist.host}/mirror`;
    const src = await testdataCopy();
    expect((await ferry(['copy', `oci:${src}:layers`, `docker://${served.host}/up/signed:1`])).code).toBe(0);
    expect((await ferry(['copy', `oci:${src}:plain`, `docker://${served.host}/up/signed:2`])).code).toBe(0);
    const run = (dest: string, more: string[] = []) => ferry(['sync', '--referrers', ...more, `${proxy.host}/up/signed`, dest], { env });
    for (const dest of [`oci:${layout}`, archive, registry]) {
      const first = await run(dest);
      expect(first.stdout, first.stderr).toContain('2 tags, 2 copied');
    }

    // CI attaches an SBOM to tag 1 after the mirror copied it.
    const sbom = await addReferrer(src, 'layers', 'late');
    expect((await ferry(['copy', '--referrers', `oci:${src}:layers`, `docker://${served.host}/up/signed:1`])).code).toBe(0);

    const plan = await ferry(['sync', '--referrers', '--dry-run', '--json', `${proxy.host}/up/signed`, `oci:${layout}`], { env });
    expect(plan.code, plan.stderr).toBe(0);
    expect(JSON.parse(plan.stdout).jobs[0].newReferrers).toEqual([{ tag: '1', digest: sbom }]);

    for (const dest of [`oci:${layout}`, archive, registry]) {
      const second = await run(dest);
      expect(second.code, second.stderr).toBe(0);
      expect(second.stdout).toContain('2 tags, 0 copied, 2 unchanged, 1 new referrer(s), 0 pruned, 0 failed');
      expect(second.stderr).toContain(`up/signed:1: new referrer ${sbom} copied`);
    }
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toContain(sbom);
    expect((await ferry(['verify', layout])).code).toBe(0);
    const held = await ArchiveSource.open(archive);
    expect(held.images().map((i) => i.ref)).toEqual(expect.arrayContaining([exp.layers.digest, exp.plain.digest, sbom]));
    await held.close();
    const there = await fetch(`http://${dist.host}/v2/mirror/up/signed/manifests/${sbom}`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    expect(there.status).toBe(200);

    // Nothing new: nothing moves and nothing is written; at the source, one referrers request per tag.
    const indexBytes = await readFile(join(layout, 'index.json'), 'utf8');
    const before = await stat(archive);
    for (const dest of [`oci:${layout}`, archive, registry]) {
      const mark = proxy.seen.length;
      const third = await run(dest);
      expect(third.code, third.stderr).toBe(0);
      expect(third.stdout).toContain('2 tags, 0 copied, 2 unchanged, 0 pruned, 0 failed');
      const reqs = proxy.seen.slice(mark).filter((q) => q.url !== '/v2/');
      expect(reqs.filter((q) => q.url.includes('/referrers/')).map((q) => q.url.split('/').pop()).sort(), dest).toEqual([exp.layers.digest, exp.plain.digest].sort());
      expect(reqs, dest).toHaveLength(5); // the tag list, 2 HEADs, 2 referrers lists
    }
    expect(await readFile(join(layout, 'index.json'), 'utf8')).toBe(indexBytes);
    const after = await stat(archive);
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);

    // distribution 2.8 lists the SBOM under the fallback tag sha256-<hex>, which pushing it wrote:
    // --prune neither removes it (not even with --no-state) nor calls it someone else's tag.
    const fallback = exp.layers.digest.replace(':', '-');
    const pruned = await run(registry, ['--prune', '--no-state']);
    expect(pruned.stdout, pruned.stderr).toContain('2 tags, 0 copied, 2 unchanged, 0 pruned, 0 failed');
    expect(pruned.stderr).not.toContain(fallback);
    expect((await ferry(['tags', `${dist.host}/mirror/up/signed`])).stdout.split('\n').filter(Boolean).sort()).toEqual(['1', '2', fallback]);
  });

  it('a source without the Referrers API: found through its sha256-<hex> tag, also when --exclude leaves that tag out', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const layout = join(await tempDir(), 'mirror');
    const src = await testdataCopy();
    expect((await ferry(['copy', `oci:${src}:layers`, `docker://${dist.host}/up/old:1`])).code).toBe(0);
    const run = () => ferry(['sync', '--referrers', '--exclude', '^sha256-', `${dist.host}/up/old`, `oci:${layout}`], { env });
    expect((await run()).stdout).toContain('1 tags, 1 copied');
    const sbom = await addReferrer(src, 'layers', 'fallback');
    expect((await ferry(['copy', '--referrers', `oci:${src}:layers`, `docker://${dist.host}/up/old:1`])).code).toBe(0);
    const r = await run();
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 tags, 0 copied, 1 unchanged, 1 new referrer(s)');
    expect(await readFile(join(layout, 'index.json'), 'utf8')).toContain(sbom);
    expect((await run()).stdout).toContain('1 tags, 0 copied, 1 unchanged, 0 pruned');
  });

  it('into the store, and without the flag nothing is asked', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const store = join(await tempDir(), 'store');
    const src = await testdataCopy();
    expect((await ferry(['copy', `oci:${src}:zstd`, `docker://${served.host}/up/store:1`])).code).toBe(0);
    const sync = (more: string[] = []) => ferry(['--store', store, 'sync', ...more, `${proxy.host}/up/store`], { env });
    expect((await sync(['--referrers'])).stdout).toContain('1 tags, 1 copied');
    const sbom = await addReferrer(src, 'zstd', 'store');
    expect((await ferry(['copy', '--referrers', `oci:${src}:zstd`, `docker://${served.host}/up/store:1`])).code).toBe(0);
    const mark = proxy.seen.length;
    const plain = await sync();
    expect(plain.stdout).toContain('1 tags, 0 copied, 1 unchanged, 0 pruned');
    expect(proxy.seen.slice(mark).filter((q) => q.url.includes('/referrers/'))).toEqual([]);
    const r = await sync(['--referrers']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 tags, 0 copied, 1 unchanged, 1 new referrer(s)');
    const index = JSON.parse(await readFile(join(store, 'index.json'), 'utf8'));
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toContain(sbom);
    expect((await sync(['--referrers'])).stdout).toContain('1 tags, 0 copied, 1 unchanged, 0 pruned');
  });
});

describe.skipIf(!distribution)('sync counts each blob once per run, as its --dry-run planned', () => {
  // Two new tags share a layer the destination lacks and one it already holds (from tag old).
  const BASE = 3000;
  const SHARED = 2000;
  const ONLY_A = 700;
  const ONLY_B = 500;
  let reg: RunningRegistry;
  let made: MadeImage[];
  beforeAll(async () => {
    reg = await startDistribution();
    const src = join(await tempDir(), 'src');
    const base = Buffer.alloc(BASE, 1);
    const shared = Buffer.alloc(SHARED, 2);
    made = await makeLayout(src, [
      { tag: 'old', layers: [base] },
      { tag: 'a', layers: [base, shared, Buffer.alloc(ONLY_A, 3)] },
      { tag: 'b', layers: [base, shared, Buffer.alloc(ONLY_B, 4)] },
    ]);
    const layout = await OciLayout.open(src);
    for (const repo of ['count/one', 'count/two']) {
      await copy(layout, openRepository(parseReference(`${reg.host}/${repo}`)), ['old', 'a', 'b'].map((tag) => ({ ref: tag, names: [{ tag }] })));
    }
    await layout.close();
  }, 60_000);
  afterAll(async () => {
    await closeRegistryClients();
    await reg?.stop();
  });

  /** What a tag-a-and-b run moves when the destination holds tag old: each blob once. */
  const expected = () => ({ copied: 5, bytesCopied: SHARED + ONLY_A + ONLY_B + made[1]!.config.size + made[2]!.config.size, skipped: 1, bytesSkipped: BASE });
  /** The blob counts of a run's report, or of a --dry-run's plan, in the report's shape. */
  const counts = async (args: string[], env: Record<string, string>) => {
    const r = await ferry([...args, '--json'], { env });
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(r.stdout);
    return doc.dryRun
      ? { copied: doc.blobs.count, bytesCopied: doc.blobs.bytes, skipped: doc.skipped.count, bytesSkipped: doc.skipped.bytes }
      : doc.blobs;
  };

  it('into the store, a layout and a registry: a blob two new tags share is moved once, never also already present', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const dir = await tempDir();
    const source = `${reg.host}/count/one`;
    const destinations: Array<[string, (more: string[]) => string[]]> = [
      ['the store', (more) => ['--store', join(dir, 'store'), 'sync', ...more, source]],
      ['a layout', (more) => ['sync', ...more, source, `oci:${join(dir, 'mirror')}`]],
      ['a registry', (more) => ['sync', ...more, source, `docker://${reg.host}/mirror`]],
    ];
    for (const [what, args] of destinations) {
      const first = await ferry(args(['--include', '^old$']), { env });
      expect(first.code, first.stderr).toBe(0);
      expect(await counts(args(['--dry-run']), env), what).toEqual(expected());
      const real = await ferry(args([]), { env });
      expect(real.code, real.stderr).toBe(0);
      expect(real.stdout, what).toContain('3 tags, 2 copied, 1 unchanged');
      expect(real.stdout, what).toContain(`moved 5 blob(s), ${humanSize(expected().bytesCopied)}; 1 already present`);
      // The per-blob progress lines stay: the second tag's copy still finds the shared blobs there.
      expect(real.stderr, what).toContain(`${shortDigest(made[1]!.layers[1]!.digest)}: Already exists`);
      expect(await counts(args([]), env), what).toEqual({ copied: 0, bytesCopied: 0, skipped: 0, bytesSkipped: 0 });
    }
  });

  it('jobs of one config that share a destination count a blob once for the run; registry repositories are destinations of their own', async () => {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const dir = await tempDir();
    const cfg = join(dir, 'sync.yaml');
    const config = (include?: string) => writeFile(cfg, [
      'repositories:',
      ...['one', 'two'].flatMap((r) => [`oci:${join(dir, 'mirror')}`, join(dir, 'mirror.tar'), `docker://${reg.host}/shared`].flatMap((d) => [
        `  - source: ${reg.host}/count/${r}`,
        `    destination: ${d}`,
        ...(include ? [`    include: ['${include}']`] : []),
      ])),
    ].join('\n'));
    await config('^old$');
    const first = await ferry(['sync', '--config', cfg], { env });
    expect(first.code, first.stderr).toBe(0);
    await config();
    const plan = await counts(['sync', '--config', cfg, '--dry-run'], env);
    // The layout and the archive once each; the registry once per repository (shared/count/one, shared/count/two).
    const e = expected();
    const four = { copied: 4 * e.copied, bytesCopied: 4 * e.bytesCopied, skipped: 4 * e.skipped, bytesSkipped: 4 * e.bytesSkipped };
    expect(plan).toEqual(four);
    // The library's report of a dry run carries the plan's totals, not each job's added up.
    expect((await sync(await loadSyncConfig(cfg), { dryRun: true })).blobs).toEqual(four);
    expect(await counts(['sync', '--config', cfg], env)).toEqual(four);
  });
});

describe('sync --dry-run refuses what the real run would refuse before moving data', () => {
  // The source is `ferry serve` (no distribution needed); the destinations are local.
  let served: Served;
  beforeAll(async () => {
    served = await startServe(join(await tempDir(), 'served'), ['-q']);
    await publish(served.host, 'up/app', 'plain', ['1']);
  }, 60_000);
  afterAll(async () => {
    await closeRegistryClients();
    await served?.stop();
  });
  const errors = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('ferry: '));

  /** Runs sync with --dry-run, then for real: both fail with `code` and the same error; the dry run changes nothing in `dir`. */
  async function refusedAlike(dir: string, dest: string[], code: number, message: string, store = join(dir, 'store')): Promise<void> {
    const env = { FERRY_STATE_DIR: await tempDir() };
    const args = ['--store', store, 'sync', `${served.host}/up/app`, ...dest];
    const before = await readdir(dir, { recursive: true });
    const dry = await ferry([...args, '--dry-run'], { env });
    expect(await readdir(dir, { recursive: true })).toEqual(before);
    const real = await ferry(args, { env });
    expect(real.code, real.stderr).toBe(code);
    expect(real.stderr).toContain(message);
    expect(dry.code, dry.stderr).toBe(code);
    expect(errors(dry.stderr)).toEqual(errors(real.stderr));
  }

  it('oci:DIR under a file, oci:FILE, and a layout whose index.json was lost', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'file'), 'x');
    await refusedAlike(dir, [`oci:${join(dir, 'file', 'mirror')}`], 7, `ENOTDIR: ${join(dir, 'file', 'mirror')} (not a directory)`);
    await refusedAlike(dir, [`oci:${join(dir, 'file')}`], 2, `${join(dir, 'file')} exists and is not a directory`);
    const lost = await testdataCopy();
    await rm(join(lost, 'index.json'));
    const old = new Date(Date.now() - 3_600_000);
    for (const p of ['oci-layout', 'blobs', 'blobs/sha256']) await utimes(join(lost, p), old, old);
    await refusedAlike(lost, [`oci:${lost}`], 4, `${join(lost, 'index.json')} is missing, yet`);
    // The store is a layout destination too.
    await refusedAlike(lost, [], 4, `${join(lost, 'index.json')} is missing, yet`, lost);
  });

  it('an archive (one file or volumes) in a directory that does not exist', async () => {
    const dir = await tempDir();
    const file = join(dir, 'missing', 'app.tar');
    const message = `cannot write ${file}: the directory ${join(dir, 'missing')} does not exist`;
    await refusedAlike(dir, [file], 7, message);
    await refusedAlike(dir, [file, '--volume-size', '1M'], 7, message);
  });

  it('an archive, a layout or the store under /proc (where nothing can be made, though root may write there): named as such, dry or not', async () => {
    const dir = await tempDir();
    await refusedAlike(dir, ['/proc/ferry-x.tar'], 7, 'cannot write /proc/ferry-x.tar: /proc is on procfs, where no file can be created');
    await refusedAlike(dir, ['oci:/proc/ferry-lay'], 7, 'cannot write /proc/ferry-lay: /proc is on procfs, where no file can be created');
    await refusedAlike(dir, [], 7, 'cannot write /proc/ferry-st: /proc is on procfs, where no file can be created', '/proc/ferry-st');
    // save's dry run too.
    const save = await ferry(['save', '--dry-run', `oci:${TESTDATA}:plain`, '-o', '/proc/ferry-x.tar']);
    expect(save.code, save.stderr).toBe(7);
    expect(save.stderr).toContain('cannot write /proc/ferry-x.tar: /proc is on procfs, where no file can be created');
  });

  it('a layout or archive that can be made still plans, and the dry run creates nothing', async () => {
    const dir = await tempDir();
    for (const dest of [`oci:${join(dir, 'new', 'mirror')}`, join(dir, 'app.tar')]) {
      const r = await ferry(['sync', '--dry-run', `${served.host}/up/app`, dest], { env: { FERRY_STATE_DIR: await tempDir() } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('1 would copy');
    }
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('sync configuration files', () => {
  const load = async (text: string, name = 'sync.yaml') => {
    const dir = await tempDir();
    const cfg = join(dir, name);
    await writeFile(cfg, text);
    return { dir, cfg, jobs: () => loadSyncConfig(cfg) };
  };

  it('a relative destination is taken from the file\'s directory, not the working directory', async () => {
    const { dir, jobs } = await load([
      'repositories:',
      '  - {source: a.example/x, destination: "oci:mirror"}',
      '  - {source: a.example/y, destination: backup/y.tar.zst}',
      '  - {source: a.example/z, destination: "oci-archive:z.tar"}',
      '  - {source: a.example/w, destination: "docker://mirror.internal:5000/m"}',
      '  - {source: a.example/v, destination: "oci:/abs/layout"}',
    ].join('\n'));
    expect((await jobs()).map((j) => j.destination)).toEqual([
      `oci:${join(dir, 'mirror')}`,
      join(dir, 'backup/y.tar.zst'),
      `oci-archive:${join(dir, 'z.tar')}`,
      'docker://mirror.internal:5000/m',
      'oci:/abs/layout',
    ]);
  });

  it('YAML merge keys share settings between entries', async () => {
    const { jobs } = await load([
      'repositories:',
      '  - &nightly {source: a.example/x, semver: ">=2", prune: true}',
      '  - <<: *nightly',
      '    source: a.example/y',
    ].join('\n'));
    expect((await jobs()).map((j) => [j.source, j.semver, j.prune])).toEqual([['a.example/x', '>=2', true], ['a.example/y', '>=2', true]]);
  });

  it('a hundred entries and more share one anchor through merge keys (yaml stopped at 100 as an alias bomb); a real bomb is a usage error naming the file', async () => {
    const entries = Array.from({ length: 300 }, (_, i) => `  - <<: *nightly\n    source: a.example/r${i}`);
    const { jobs } = await load(['x-nightly: &nightly {semver: ">=1", prune: false}', 'repositories:', ...entries].join('\n'));
    expect((await jobs()).map((j) => j.semver)).toEqual(Array(300).fill('>=1'));
    const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 8; i++) bomb.push(`${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(10).fill(`*${String.fromCharCode(96 + i)}`).join(',')}]`);
    const b = await load([...bomb.map((l) => `x-${l}`), 'repositories: [a.example/x]'].join('\n'));
    await expect(b.jobs()).rejects.toThrow(new RegExp(`^${b.cfg}: not a valid configuration: Excessive alias count`));
    await expect(b.jobs()).rejects.toMatchObject({ code: 'USAGE' });
  });

  it('an alias to no anchor, a merge of a scalar, two documents, a directory, standard input: usage errors naming the file', async () => {
    const cases: Array<[string, RegExp]> = [
      ['repositories:\n  - <<: *nope\n    source: a.example/x\n', /: not a valid configuration: Merge sources must be map/],
      ['repositories:\n  - source: *nope\n', /: not a valid configuration: Unresolved alias .*: nope/],
      ['repositories:\n  - <<: 5\n    source: a.example/x\n', /: not a valid configuration: Merge sources must be map/],
      ['repositories: [a.example/x]\n---\nrepositories: [a.example/y]\n', /:2:1: not valid YAML or JSON: the file holds more than one YAML document/],
    ];
    for (const [text, message] of cases) {
      const { cfg, jobs } = await load(text);
      const e = await jobs().then(() => undefined, (x: unknown) => x as { code: string; message: string });
      expect(e?.code, text).toBe('USAGE');
      expect(e?.message.startsWith(cfg), e?.message).toBe(true);
      expect(e?.message).toMatch(message);
    }
    const dir = await tempDir();
    await expect(loadSyncConfig(dir)).rejects.toThrow(`sync configuration ${dir} is a directory, not a file`);
    await expect(loadSyncConfig('-')).rejects.toThrow('read from a file, not from standard input');
    // End to end: exit 2, no stack.
    const r = await ferry(['sync', '--config', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('the same job twice is refused, naming both; the same source with other settings is not', async () => {
    const twice = await load('repositories:\n  - a.example/x\n  - a.example/y\n  - {source: a.example/x}\n');
    await expect(twice.jobs()).rejects.toThrow(`${twice.cfg}:4:5: repositories[2] repeats repositories[0] (the same source, destination and settings)`);
    const other = await load('repositories:\n  - {source: a.example/x, include: ["^v1"]}\n  - {source: a.example/x, semver: ">=2"}\n');
    expect(await other.jobs()).toHaveLength(2);
  });

  it('an empty destination is refused (it meant the store without saying so); a directory named like an archive is no archive destination', async () => {
    const { cfg, jobs } = await load('repositories:\n  - {source: a.example/x, destination: ""}\n');
    await expect(jobs()).rejects.toThrow(`${cfg}:2:40: repositories[0].destination is empty: leave it out to sync into the store`);
    const dir = join(await tempDir(), 'adir.tar');
    await (await import('node:fs/promises')).mkdir(dir);
    const r = await ferry(['sync', '--dry-run', 'a.example/x', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`sync destination ${dir} is a directory, not an archive file`);
    expect(r.stderr).toContain(`hint: an archive is one file; to mirror into a directory as an OCI layout, write oci:${dir}`);
  });

  it('a byte-order mark is no column; a source that is no repository is named by its place', async () => {
    const { cfg, jobs } = await load('\uFEFFprnue: true\nrepositories: [a.example/x]\n');
    await expect(jobs()).rejects.toThrow(`${cfg}:1:1: unknown key "prnue"`);
    const src = await load('repositories:\n  - source: not a repo!\n');
    await expect(src.jobs()).rejects.toThrow(new RegExp(`^${src.cfg}:2:13: repositories\\[0\\]\\.source: .*whitespace`));
    const ftp = await load('repositories:\n  - {source: a.example/x, destination: "ftp://x"}\n');
    await expect(ftp.jobs()).rejects.toThrow(`${ftp.cfg}:2:40: repositories[0].destination "ftp://x" must be oci:DIR, docker://REGISTRY[/PREFIX] or an archive file`);
    const pattern = await load('destination: "x*.tar"\nrepositories: [a.example/x]\n');
    await expect(pattern.jobs()).rejects.toThrow(`${pattern.cfg}:1:14: the top-level "destination" "x*.tar": x*.tar is a pattern`);
  });

  it('an empty file and a misspelt key are named as such', async () => {
    const empty = await load('');
    await expect(empty.jobs()).rejects.toThrow(`${empty.cfg}: the file is empty: expected a mapping with a "repositories" list`);
    const typo = await load('repositories:\n  - source: a.example/x\n    platfrom: linux/amd64\n');
    await expect(typo.jobs()).rejects.toThrow(`${typo.cfg}:3:5: repositories[0]: unknown key "platfrom" (did you mean "platform"?)`);
    const top = await load('prnue: true\nrepositories: [a.example/x]\n');
    await expect(top.jobs()).rejects.toThrow(`${top.cfg}:1:1: unknown key "prnue" (did you mean "prune"?)`);
    const far = await load('colour: red\nrepositories: [a.example/x]\n');
    await expect(far.jobs()).rejects.toThrow(/unknown key "colour"$/);
  });

  /** `line:column` of the first `needle` in `text`, counted as an editor does (both from 1). */
  const placeOf = (text: string, needle: string) => {
    const before = text.slice(0, text.indexOf(needle)).split('\n');
    return `${before.length}:${before.at(-1)!.length + 1}`;
  };

  it('a mistake is named by its line and column: the key when it is unknown, the value when it is wrong; in YAML and in JSON', async () => {
    /** A file with one line changed, as YAML and as JSON (one job per line). */
    const files = (top: string, job: string) => ({
      yaml: [top, 'repositories:', '  - source: a.example/x', `  - {source: a.example/y, ${job}}`].join('\n'),
      json: ['{', `  ${top.replace(/^([\w-]+):/, '"$1":')},`, '  "repositories": [', '    {"source": "a.example/x"},', `    {"source": "a.example/y", ${job.replace(/^([\w-]+):/, '"$1":')}}`, '  ]', '}'].join('\n'),
    });
    // [top line, job key, where the mistake is, the message after the place]
    const cases: Array<[string, string, string, string]> = [
      ['prnue: true', 'include: ["x"]', 'prnue', 'unknown key "prnue" (did you mean "prune"?)'],
      ['prune: true', 'incldue: ["x"]', 'incldue', 'repositories[1]: unknown key "incldue" (did you mean "include"?)'],
      ['prune: true', 'include: 3', '3', 'repositories[1].include must be a list of strings'],
      ['prune: true', 'referrers: "no"', '"no"', 'repositories[1].referrers must be true or false, not "no" (YAML 1.2 reads no as text)'],
      ['prune: true', 'include: ["t1["]', '["t1["]', 'repositories[1].include: invalid pattern "t1["'],
      ['exclude: ["("]', 'prune: true', '["("]', 'the top-level "exclude": invalid pattern "("'],
    ];
    for (const [topLine, job, node, message] of cases) {
      for (const [kind, text] of Object.entries(files(topLine, job))) {
        // JSON's keys are quoted; the place is the quote.
        const needle = kind === 'json' && /^[a-z]+$/.test(node) ? `"${node}"` : node;
        const { cfg, jobs } = await load(text, `sync.${kind}`);
        await expect(jobs(), `${kind}: ${message}`).rejects.toThrow(`${cfg}:${placeOf(text, needle)}: ${message}`);
      }
    }
    // Literal places, so that the helper above is not the only judge.
    const json = files('prune: true', 'incldue: ["x"]').json;
    const one = await load(json, 'sync.json');
    await expect(one.jobs()).rejects.toThrow(`${one.cfg}:5:31: repositories[1]: unknown key "incldue"`);
    const yaml = files('prune: true', 'include: 3').yaml;
    const two = await load(yaml, 'sync.yaml');
    await expect(two.jobs()).rejects.toThrow(`${two.cfg}:4:36: repositories[1].include must be a list of strings`);
    // A syntax error is placed the same way.
    const broken = await load('repositories:\n  - source: a/b\n   include: [x\n');
    const syntax = await broken.jobs().then(() => 'no error', (e: Error) => e.message);
    expect(syntax).toMatch(/: not valid YAML or JSON: [^\n]+[^:\n]$/);
    expect(syntax.startsWith(`${broken.cfg}:3:1: not valid YAML or JSON: `)).toBe(true);
    expect(syntax).not.toContain('at line');
  });

  it('a value an entry takes through a merge key is placed at that entry: the anchor may serve many', async () => {
    const text = ['x-defaults: &defaults {semver: ">=2", prune: "yes"}', 'repositories:', '  - source: a.example/x', '  - <<: *defaults', '    source: a.example/y'].join('\n');
    const { cfg, jobs } = await load(text);
    await expect(jobs()).rejects.toThrow(`${cfg}:4:5: repositories[1].prune must be true or false, not "yes"`);
    // Entries written short: a flow mapping, and what is neither a mapping nor a name.
    const short = await load('repositories:\n  - a.example/x\n  - {source: a.example/y, platfrom: linux/amd64}\n');
    await expect(short.jobs()).rejects.toThrow(`${short.cfg}:3:27: repositories[1]: unknown key "platfrom"`);
    const number = await load('repositories:\n  - a.example/x\n  - 3\n');
    await expect(number.jobs()).rejects.toThrow(`${number.cfg}:3:5: repositories[1] must be a mapping or a repository name`);
  });

  it('top-level keys starting x- hold anchors and are otherwise ignored; any other unknown top-level key is refused', async () => {
    const { jobs } = await load([
      'x-defaults: &defaults {semver: ">=2", prune: true}',
      'x-notes: [anything, {at: all}]',
      'repositories:',
      '  - <<: *defaults',
      '    source: a.example/x',
      '  - {<<: *defaults, source: a.example/y, prune: false}',
      '  - a.example/z',
    ].join('\n'));
    expect((await jobs()).map((j) => [j.source, j.semver, j.prune])).toEqual([
      ['a.example/x', '>=2', true],
      ['a.example/y', '>=2', false],
      ['a.example/z', undefined, undefined],
    ]);
    const other = await load('defaults: &defaults {prune: true}\nrepositories:\n  - <<: *defaults\n    source: a.example/x\n');
    await expect(other.jobs()).rejects.toThrow(`${other.cfg}:1:1: unknown key "defaults"`);
    const capital = await load('X-defaults: &d {prune: true}\nrepositories: [a.example/x]\n');
    await expect(capital.jobs()).rejects.toThrow(`${capital.cfg}:1:1: unknown key "X-defaults"`);
  });
});

describe.skipIf(!distribution || !hasTool('strace'))('sync into a layout writes index.json in batches, not once per tag', () => {
  const TAGS = 30;
  const tags = Array.from({ length: TAGS }, (_, i) => tagName(i));
  const fx = proxiedRegistry((host) => publish(host, 'batch/app', 'plain', tags));

  /** Runs ferry under strace; returns the result and how many times index.json was renamed into `dir`. */
  async function countIndexWrites(args: string[], dir: string) {
    const trace = join(await tempDir(), 'trace');
    const res = await ferry(args, { wrap: ['strace', '-f', '-qq', '-e', 'trace=rename,renameat,renameat2', '-o', trace] });
    const lines = (await readFile(trace, 'utf8')).split('\n');
    return { res, writes: lines.filter((l) => l.includes(`"${join(dir, 'index.json')}"`)).length };
  }

  it(`a sync of ${TAGS} tags into the store renames index.json a few times, and names every tag`, async () => {
    const store = join(await tempDir(), 'store');
    const { res, writes } = await countIndexWrites(['--store', store, 'sync', '--json', `${fx.reg.host}/batch/app`], store);
    expect(res.code, res.stderr).toBe(0);
    // Was one write per tag (30); now at the end, and every 2 s on a slow run.
    expect(writes).toBeGreaterThanOrEqual(1);
    expect(writes).toBeLessThanOrEqual(3);
    const names = (await (await OciLayout.open(store)).entries()).map((e) => e.name).sort();
    expect(names).toEqual(tags.map((t) => `${fx.reg.host}/batch/app:${t}`));
    // Tags copied several at once are still reported in tag order.
    expect(JSON.parse(res.stdout).jobs[0].copied).toEqual(tags);
  });

  it(`a sync of ${TAGS} tags into an archive stages them with a few index.json writes`, async () => {
    const dir = await tempDir();
    const stage = join(dir, '.out.tar.ferry-sync');
    const { res, writes } = await countIndexWrites(['sync', '-q', `${fx.reg.host}/batch/app`, join(dir, 'out.tar')], stage);
    expect(res.code, res.stderr).toBe(0);
    expect(writes).toBeLessThanOrEqual(4);
    const archive = await ArchiveSource.open(join(dir, 'out.tar'));
    expect(archive.images().flatMap((i) => i.names.map((n) => n.tag)).sort()).toEqual(tags);
    await archive.close();
  });
});

describe.skipIf(!distribution)('an index\'s platform manifests are read at once, not one round trip each', () => {
  const fx = proxiedRegistry((host) => publish(host, 'idx/app', 'multi', ['m']));

  it('a pull of a 3-manifest index asks for every child before the first answer arrives; a sync too', async () => {
    const arrivals: number[] = [];
    const DELAY = 300;
    // The index is fetched by tag; its children by digest, each held DELAY ms: read one by one,
    // they would arrive at least DELAY ms apart.
    fx.proxy.setRule((q) => {
      if (q.method !== 'GET' || !/\/manifests\/sha256:/.test(q.url)) return undefined;
      arrivals.push(Date.now());
      return { delayMs: DELAY };
    });
    try {
      const dir = await tempDir();
      const pull = await ferry(['copy', '-q', `docker://${fx.proxy.host}/idx/app:m`, `oci:${join(dir, 'pulled')}:m`]);
      expect(pull.code, pull.stderr).toBe(0);
      expect(arrivals).toHaveLength(3);
      expect(Math.max(...arrivals) - Math.min(...arrivals)).toBeLessThan(DELAY / 2);
      arrivals.length = 0;
      const synced = await ferry(['--store', join(dir, 'store'), 'sync', '-q', `${fx.proxy.host}/idx/app`]);
      expect(synced.code, synced.stderr).toBe(0);
      // The sync GETs the index by digest too, then its 3 children at once.
      expect(arrivals).toHaveLength(4);
      expect(Math.max(...arrivals.slice(1)) - Math.min(...arrivals.slice(1))).toBeLessThan(DELAY / 2);
    } finally {
      fx.proxy.setRule(undefined);
    }
  });
});
