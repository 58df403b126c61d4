import { createHash } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { readdir, readFile, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copy } from '../src/copy.js';
import { OciLayout } from '../src/locations/layout.js';
import { closeRegistryClients, registryClient } from '../src/locations/registry/pool.js';
import { RegistryRepository } from '../src/locations/registry/repository.js';
import { RegistryClient } from '../src/locations/registry/client.js';
import { Http } from '../src/locations/registry/http.js';
import { finish, ferry, start } from './helpers/cli.js';
import { startConnectProxy } from './helpers/connect-proxy.js';
import { testdataImages } from './helpers/expected-images.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { flipByte, TESTDATA, tempDir, tempFilesIn } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { dockerConfigWith, PASSWORD, startDistribution, USER, type RunningRegistry, type TokenServer } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry');
const FAST = { FERRY_RETRY_BACKOFF_MS: '20' };
const NO_PROXY_ENV = { http_proxy: undefined, https_proxy: undefined, HTTP_PROXY: undefined, HTTPS_PROXY: undefined, no_proxy: undefined, NO_PROXY: undefined };

describe.skipIf(!distribution)('lying registries and hostile networks (catalogue C, D)', () => {
  let reg: RunningRegistry & { dataDir: string };
  let proxy: FaultProxy;
  let big: { layer: string; size: number };
  const exp = testdataImages();

  beforeAll(async () => {
    reg = await startDistribution();
    proxy = await startFaultProxy(reg.host);
    const store = join(await tempDir(), 'seed');
    for (const tag of ['layers', 'multi'] as const) {
      expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:${tag}`, `${reg.host}/faults/${tag}:1`])).code).toBe(0);
      expect((await ferry(['--store', store, 'push', `${reg.host}/faults/${tag}:1`])).code).toBe(0);
    }
    const src = join(await tempDir(), 'big');
    const [img] = await makeLayout(src, [{ tag: 'big', layers: [8 << 20] }]);
    big = { layer: img!.layers[0]!.digest, size: img!.layers[0]!.size };
    expect((await ferry(['copy', `oci:${src}:big`, `docker://${reg.host}/faults/big:1`])).code).toBe(0);
  });
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  const pull = async (ref: string, extra: string[] = []) => {
    const store = join(await tempDir(), 'store');
    const r = await ferry(['--store', store, 'pull', ...extra, `${proxy.host}/${ref}`], { env: FAST });
    return { ...r, store };
  };
  const isBlob = (url: string, digest?: string) => url.includes('/blobs/') && !url.includes('/uploads/') && (!digest || url.endsWith(digest));

  it('C1: blob bytes that do not match the digest are retried once, then exit 4; nothing is published', async () => {
    const layer = (await exp).layers.layers![0]!.digest;
    proxy.setRule((q) => (q.method === 'GET' && isBlob(q.url, layer) ? { flipByte: 5 } : undefined));
    const mark = proxy.seen.length;
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`expected ${layer}, got sha256:`);
    // Once, then once more: not the network's five attempts.
    expect(proxy.seen.slice(mark).filter((q) => q.method === 'GET' && isBlob(q.url, layer)).length).toBe(2);
    const blobs = await readFile(join(r.store, 'index.json'), 'utf8');
    expect(JSON.parse(blobs).manifests).toEqual([]);
    expect(await tempFilesIn(r.store)).toEqual([]);
  });

  it('C2a: a blob body longer than its descriptor size is cut at size+1, not read on: exit 4, nothing published', async () => {
    const layer = (await exp).layers.layers![0]!;
    proxy.setRule((q) => (q.method === 'GET' && isBlob(q.url, layer.digest) ? { trailing: Infinity } : undefined));
    const before = proxy.seen.length;
    const t0 = Date.now();
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`size mismatch for blob ${layer.digest}: more than the expected ${layer.size} bytes`);
    expect(Date.now() - t0).toBeLessThan(15_000);
    // The proxy never stops sending: what it got out is what ferry (and the socket buffers) took.
    const gets = proxy.seen.slice(before).filter((q) => isBlob(q.url, layer.digest));
    expect(gets.length).toBeGreaterThanOrEqual(1);
    expect(gets.length).toBeLessThanOrEqual(2);
    for (const q of gets) expect(q.down).toBeLessThan(layer.size + (16 << 20));
    expect(JSON.parse(await readFile(join(r.store, 'index.json'), 'utf8')).manifests).toEqual([]);
    await expect(stat(join(r.store, 'blobs', 'sha256', layer.digest.slice(7)))).rejects.toThrow();
    expect(await tempFilesIn(r.store)).toEqual([]);
  });

  it('C2b: a blob body that ends cleanly but short resumes with Range from the verified offset', async () => {
    const cut = 3 << 20;
    proxy.setRule((q) => (q.method === 'GET' && isBlob(q.url, big.layer) && !q.headers.range ? { truncate: cut } : undefined));
    const before = proxy.seen.length;
    const r = await pull('faults/big:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(0);
    const gets = proxy.seen.slice(before).filter((q) => isBlob(q.url, big.layer));
    expect(gets.map((q) => q.headers.range)).toEqual([undefined, `bytes=${cut}-`]);
    expect(gets[0]!.down).toBe(cut);
    expect(gets[1]!.down).toBe(big.size - cut);
    const blob = await readFile(join(r.store, 'blobs', 'sha256', big.layer.slice(7)));
    expect(`sha256:${createHash('sha256').update(blob).digest('hex')}`).toBe(big.layer);
    expect((await ferry(['--store', r.store, 'verify'])).code).toBe(0);
    expect(await tempFilesIn(r.store)).toEqual([]);
  });

  it('C2c: a blob truncated in the registry\'s storage (416 on the resume) is a size mismatch naming both sizes: exit 4, one retry, nothing published', async () => {
    const src = join(await tempDir(), 'short');
    const [img] = await makeLayout(src, [{ tag: 'short', layers: [92] }]);
    const layer = img!.layers[0]!;
    expect((await ferry(['copy', `oci:${src}:short`, `docker://${reg.host}/faults/short:1`])).code).toBe(0);
    const hex = layer.digest.slice(7);
    await truncate(join(reg.dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data'), 8);
    const before = proxy.seen.length;
    const r = await pull('faults/short:1');
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`size mismatch for blob ${layer.digest}: the registry has only 8 bytes, the manifest says ${layer.size}`);
    expect(r.stderr).not.toMatch(/upload|HTTP 416/);
    const gets = proxy.seen.slice(before).filter((q) => q.method === 'GET' && isBlob(q.url, layer.digest));
    // Read, resume refused; once more, then it is an integrity failure (not the network's five attempts).
    expect(gets.map((q) => q.headers.range)).toEqual([undefined, 'bytes=8-', undefined, 'bytes=8-']);
    expect(gets.map((q) => q.status)).toEqual([200, 416, 200, 416]);
    expect(JSON.parse(await readFile(join(r.store, 'index.json'), 'utf8')).manifests).toEqual([]);
    await expect(stat(join(r.store, 'blobs', 'sha256', hex))).rejects.toThrow();
    expect(await tempFilesIn(r.store)).toEqual([]);
  });

  it('C3: a manifest fetched by digest whose bytes differ is refused with exit 4', async () => {
    const e = await exp;
    const other = await readFile(join(TESTDATA, 'blobs', 'sha256', e.multi.digest.slice(7)));
    proxy.setRule((q) => (q.url.includes(`/manifests/${e.layers.digest}`) ? { replaceBody: other, setHeaders: { 'docker-content-digest': e.layers.digest } } : undefined));
    const r = await pull(`faults/layers@${e.layers.digest}`);
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/digest mismatch/);
  });

  it('C4: a tag pull whose Docker-Content-Digest disagrees with the bytes exits 4', async () => {
    proxy.setRule((q) => (q.url.endsWith('/manifests/1') ? { setHeaders: { 'docker-content-digest': `sha256:${'0'.repeat(64)}` } } : undefined));
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain('Docker-Content-Digest');
  });

  it('C4b: a tag pull without Docker-Content-Digest succeeds and records the digest computed from the bytes', async () => {
    const e = await exp;
    proxy.setRule((q) => (q.url.endsWith('/faults/layers/manifests/1') ? { dropResponseHeaders: ['docker-content-digest'] } : undefined));
    const before = proxy.seen.length;
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(0);
    expect(proxy.seen.slice(before).some((q) => q.method === 'GET' && q.url.endsWith('/faults/layers/manifests/1') && q.status === 200)).toBe(true);
    const index = JSON.parse(await readFile(join(r.store, 'index.json'), 'utf8'));
    expect(index.manifests.map((m: { digest: string }) => m.digest)).toEqual([e.layers.digest]);
    const images = JSON.parse((await ferry(['--store', r.store, 'images', '--json'])).stdout) as Array<{ name: string; tag: string; digest: string }>;
    expect(images).toEqual([expect.objectContaining({ name: `${proxy.host}/faults/layers:1`, tag: '1', digest: e.layers.digest })]);
  });

  it('C5: a wrong size in a manifest-list entry exits 4', async () => {
    const e = await exp;
    const index = JSON.parse(await readFile(join(TESTDATA, 'blobs', 'sha256', e.multi.digest.slice(7)), 'utf8'));
    index.manifests[0].size += 1;
    const lying = Buffer.from(JSON.stringify(index));
    proxy.setRule((q) => (q.method === 'GET' && q.url.endsWith('/faults/multi/manifests/1') ? { replaceBody: lying, setHeaders: { 'docker-content-digest': '' } } : undefined));
    const r = await pull('faults/multi:1', ['--platform', 'linux/amd64']);
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(/size mismatch/);
  });

  it('C6: a connection reset at 60% resumes with Range and the whole digest is verified', async () => {
    let resets = 0;
    proxy.setRule((q) => (q.method === 'GET' && isBlob(q.url, big.layer) && !q.headers.range && resets++ === 0 ? { resetAfter: Math.floor(big.size * 0.6) } : undefined));
    const before = proxy.seen.length;
    const r = await pull('faults/big:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(0);
    const ranged = proxy.seen.slice(before).filter((q) => isBlob(q.url, big.layer) && q.headers.range);
    expect(ranged.length).toBe(1);
    expect(ranged[0]!.headers.range).toMatch(/^bytes=\d+-$/);
    expect((await ferry(['--store', r.store, 'verify'])).code).toBe(0);
  });

  it('C7: a server that ignores Range (200) is handled by skipping the bytes already verified', async () => {
    let resets = 0;
    proxy.setRule((q) => {
      if (q.method !== 'GET' || !isBlob(q.url, big.layer)) return undefined;
      if (q.headers.range) return { dropRequestHeaders: ['range'] };
      return resets++ === 0 ? { resetAfter: Math.floor(big.size / 3) } : undefined;
    });
    const r = await pull('faults/big:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(0);
    expect((await ferry(['--store', r.store, 'verify'])).code).toBe(0);
  });

  it('C8: 503 twice, then success: backoff, retries logged, exit 0', async () => {
    proxy.setRule((q, n) => (q.url.endsWith('/manifests/1') && n < 2 ? { status: 503 } : undefined));
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.match(/retrying .* \(HTTP 503/g)).toHaveLength(2);
  });

  it('C9: a persistent 500 exits 6 naming the URL and the status', async () => {
    proxy.setRule((q) => (q.url.includes('/manifests/') ? { status: 500, body: '{"errors":[{"code":"UNKNOWN","message":"boom"}]}' } : undefined));
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain('HTTP 500');
    expect(r.stderr).toContain('faults/layers');
  });

  it('C10: 429 with Retry-After: 2 (seconds, or as an HTTP date) is waited for; Retry-After: 3600 is over the cap, exit 6', async () => {
    proxy.setRule((q, n) => (q.url.endsWith('/manifests/1') && n === 0 ? { status: 429, headers: { 'retry-after': '2' } } : undefined));
    const t0 = Date.now();
    const ok = await pull('faults/layers:1');
    expect(ok.code, ok.stderr).toBe(0);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(2000);
    // HTTP dates have whole seconds: 2.5 s ahead is at least 1.5 s of waiting.
    const date = new Date(Date.now() + 2500).toUTCString();
    proxy.setRule((q, n) => (q.url.endsWith('/manifests/1') && n === 0 ? { status: 429, headers: { 'retry-after': date } } : undefined));
    const t2 = Date.now();
    expect((await pull('faults/layers:1')).code).toBe(0);
    expect(Date.now() - t2).toBeGreaterThanOrEqual(1400);
    proxy.setRule((q) => (q.url.endsWith('/manifests/1') ? { status: 429, headers: { 'retry-after': '3600' } } : undefined));
    const t1 = Date.now();
    const capped = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(capped.code).toBe(6);
    expect(capped.stderr).toMatch(/retry after 3600 s/);
    expect(Date.now() - t1).toBeLessThan(10_000);
  });

  it('C12: a manifest body that never ends is cut at 4 MiB (ferry stops reading), exit 3', async () => {
    proxy.setRule((q) => (q.method === 'GET' && q.url.endsWith('/manifests/1') ? { status: 200, headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body: '{"a":"', trailing: Infinity } : undefined));
    const before = proxy.seen.length;
    const t0 = Date.now();
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toMatch(/manifest .*faults\/layers:1: more than 4194304 bytes, exceeds limit/);
    expect(Date.now() - t0).toBeLessThan(15_000);
    // Not retried (a limit is no network failure), and what the proxy got out stayed near the cap.
    const gets = proxy.seen.slice(before).filter((q) => q.method === 'GET' && q.url.endsWith('/manifests/1'));
    expect(gets).toHaveLength(1);
    expect(gets[0]!.down).toBeGreaterThan(4 << 20);
    expect(gets[0]!.down).toBeLessThan(16 << 20);
  });

  it('C13: an HTML page where a manifest should be (captive portal) exits 3', async () => {
    proxy.setRule((q) => (q.url.includes('/manifests/') ? { status: 200, headers: { 'content-type': 'text/html' }, body: '<html>login</html>' } : undefined));
    const r = await pull('faults/layers:1');
    proxy.setRule(undefined);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).toContain('unexpected content type text/html');
  });

  it('C14: pagination follows relative Links with commas in the cursor; a self-loop exits 6', async () => {
    const pages: Record<string, { tags: string[]; next?: string }> = {
      '': { tags: ['a', 'b'], next: '/v2/faults/paged/tags/list?n=2&last=b%2Cc' },
      'b,c': { tags: ['c', 'd'], next: 'list?n=2&last=d' },
      d: { tags: ['e'] },
    };
    proxy.setRule((q) => {
      if (!q.url.startsWith('/v2/faults/paged/tags/list')) return undefined;
      const last = new URL(q.url, 'http://x').searchParams.get('last') ?? '';
      const p = pages[last]!;
      return { status: 200, headers: { 'content-type': 'application/json', ...(p.next ? { link: `<${p.next}>; rel="next"` } : {}) }, body: JSON.stringify({ name: 'faults/paged', tags: p.tags }) };
    });
    const r = await ferry(['tags', `${proxy.host}/faults/paged`], { env: FAST });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.trim().split('\n')).toEqual(['a', 'b', 'c', 'd', 'e']);
    proxy.setRule((q) => (q.url.startsWith('/v2/faults/loop/tags/list') ? { status: 200, headers: { 'content-type': 'application/json', link: '</v2/faults/loop/tags/list>; rel="next"' }, body: '{"tags":["x"]}' } : undefined));
    const loop = await ferry(['tags', `${proxy.host}/faults/loop`], { env: FAST });
    proxy.setRule(undefined);
    expect(loop.code).toBe(6);
    expect(loop.stderr).toMatch(/loops/);
  });

  it('H5/C15: a chunked upload that fails mid-way resumes from the registry offset with the right digest', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 't', layers: [3 << 20] }]);
    let patches = 0;
    proxy.setRule((q) => (q.method === 'PATCH' && ++patches === 3 ? { status: 500 } : undefined));
    try {
      const repo = new RegistryRepository(registryClient(proxy.host), 'faults/chunked', { monolithicMax: 1 << 20, chunkSize: 512 << 10 });
      const r = await copy(await OciLayout.open(src), repo, [{ ref: 't', names: [{ tag: '1' }] }]);
      expect(r.images[0]!.digest).toBe(img!.manifest.digest);
    } finally {
      proxy.setRule(undefined);
      await closeRegistryClients();
    }
    expect(patches).toBeGreaterThan(6);
    const back = join(await tempDir(), 'back');
    const pulled = await ferry(['copy', `docker://${reg.host}/faults/chunked:1`, `oci:${back}:x`]);
    expect(pulled.code, pulled.stderr).toBe(0);
    expect((await ferry(['verify', back])).code).toBe(0);
  });

  it('a chunked push of a blob damaged in the source is refused before the closing PUT, with and without a resumed chunk', async () => {
    for (const failOne of [false, true]) {
      const src = join(await tempDir(), 'src');
      const [img] = await makeLayout(src, [{ tag: 't', layers: [3 << 20] }]);
      const layer = img!.layers[0]!;
      await flipByte(join(src, 'blobs', 'sha256', layer.digest.slice(7)), (2 << 20) + 5);
      let patches = 0;
      const finals: string[] = [];
      proxy.setRule((q) => {
        if (q.method === 'PUT' && q.url.includes('/blobs/uploads/')) finals.push(q.url);
        return failOne && q.method === 'PATCH' && ++patches === 2 ? { status: 500 } : undefined;
      });
      const repo = new RegistryRepository(registryClient(proxy.host), `faults/damaged-${failOne}`, { monolithicMax: 1 << 20, chunkSize: 512 << 10 });
      try {
        await expect(copy(await OciLayout.open(src), repo, [{ ref: 't', names: [{ tag: '1' }] }])).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
        expect(await repo.has(layer)).toBe(false);
      } finally {
        proxy.setRule(undefined);
        await closeRegistryClients();
      }
      expect(finals.filter((u) => u.includes(layer.digest.slice(7)))).toEqual([]);
      if (failOne) expect(patches).toBeGreaterThan(2);
    }
  });

  it('C15: a PATCH answered 416 makes ferry ask the registry for its offset and resume from there', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 't', layers: [3 << 20] }]);
    let patches = 0;
    proxy.setRule((q) => (q.method === 'PATCH' && ++patches === 3 ? { status: 416, headers: { range: '0-0' } } : undefined));
    try {
      const repo = new RegistryRepository(registryClient(proxy.host), 'faults/c15-416', { monolithicMax: 1 << 20, chunkSize: 512 << 10 });
      const r = await copy(await OciLayout.open(src), repo, [{ ref: 't', names: [{ tag: '1' }] }]);
      expect(r.images[0]!.digest).toBe(img!.manifest.digest);
    } finally {
      proxy.setRule(undefined);
      await closeRegistryClients();
    }
    // The refused chunk was followed by a status GET of the upload, then the chunk again.
    const afterRefusal = proxy.seen.filter((q) => q.url.includes('/faults/c15-416/blobs/uploads/'));
    expect(afterRefusal.some((q) => q.method === 'GET')).toBe(true);
    const back = join(await tempDir(), 'back');
    expect((await ferry(['copy', `docker://${reg.host}/faults/c15-416:1`, `oci:${back}:x`])).code).toBe(0);
    expect((await ferry(['verify', back])).code).toBe(0);
  });

  it('C15: an upload the registry refuses with DIGEST_INVALID exits 4 and tags nothing', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 't', layers: [64 << 10] }]);
    const invalid = JSON.stringify({ errors: [{ code: 'DIGEST_INVALID', message: 'provided digest did not match uploaded content' }] });
    proxy.setRule((q) => (q.method === 'PUT' && q.url.includes('/blobs/uploads/') ? { status: 400, headers: { 'content-type': 'application/json' }, body: invalid } : undefined));
    try {
      const r = await ferry(['copy', `oci:${src}:t`, `docker://${proxy.host}/faults/c15-invalid:1`], { env: FAST });
      expect(r.code, r.stderr).toBe(4);
      expect(r.stderr).toContain('does not match its digest');
    } finally {
      proxy.setRule(undefined);
    }
    const tags = await ferry(['tags', `${reg.host}/faults/c15-invalid`]);
    expect(tags.stdout.trim()).toBe('');
  });

  it('F1: SIGINT during a pull exits 130 within 2 s; no temp files, index.json unchanged, only verified blobs stay', async () => {
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'pull', `${proxy.host}/faults/layers:1`], { env: FAST })).code).toBe(0);
    const index = await readFile(join(store, 'index.json'));
    const before = proxy.seen.length;
    proxy.setRate(1 << 20);
    let r: Awaited<ReturnType<typeof finish>>;
    let elapsed: number;
    try {
      const child = start(['--store', store, 'pull', `${proxy.host}/faults/big:1`], { env: FAST });
      const done = finish(child);
      // Interrupt once the big layer is under way: 2 of its 8 MiB through, a partial file on disk.
      const started = async () => proxy.seen.slice(before).some((q) => isBlob(q.url, big.layer) && q.down > 2 << 20) && (await tempFilesIn(store)).length > 0;
      for (let i = 0; i < 1000 && !(await started()); i++) await new Promise((res) => setTimeout(res, 10));
      expect(await started()).toBe(true);
      const t0 = Date.now();
      child.kill('SIGINT');
      r = await done;
      elapsed = Date.now() - t0;
    } finally {
      proxy.setRate(undefined);
    }
    expect(r.code, r.stderr).toBe(130);
    expect(elapsed).toBeLessThan(2000);
    expect(await tempFilesIn(store)).toEqual([]);
    expect((await readdir(store)).sort()).toEqual(['blobs', 'index.json', 'oci-layout']);
    expect((await readFile(join(store, 'index.json'))).equals(index)).toBe(true);
    const left = await readdir(join(store, 'blobs', 'sha256'), { withFileTypes: true });
    expect(left.filter((e) => !e.isFile() || e.name.startsWith('.')).map((e) => e.name)).toEqual([]);
    for (const e of left) expect(createHash('sha256').update(await readFile(join(e.parentPath, e.name))).digest('hex')).toBe(e.name);
    expect(left.map((e) => e.name)).not.toContain(big.layer.slice(7));
    expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
  });

  it('F4: a push interrupted by SIGINT exits 130; the rerun skips the blobs already there and pushes the manifest last', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'f4', layers: [24 << 20, 24 << 20, 24 << 20] }]);
    const child = start(['copy', `oci:${src}:f4`, `docker://${proxy.host}/faults/f4:1`]);
    const done = finish(child);
    const t0 = proxy.seen.length;
    for (let i = 0; i < 400 && !proxy.seen.slice(t0).some((q) => q.method === 'PUT' && q.url.includes('/uploads/')); i++) await new Promise((r) => setTimeout(r, 10));
    child.kill('SIGINT');
    const first = await done;
    expect([0, 130], first.stderr).toContain(first.code);
    const t1 = proxy.seen.length;
    const rerun = await ferry(['copy', `oci:${src}:f4`, `docker://${proxy.host}/faults/f4:1`]);
    expect(rerun.code, rerun.stderr).toBe(0);
    const later = proxy.seen.slice(t1);
    const lastPut = later.map((q, i) => ({ q, i })).filter(({ q }) => q.method === 'PUT').pop()!;
    expect(lastPut.q.url).toMatch(/\/manifests\/1$/);
    if (first.code === 130) expect(rerun.stderr).toMatch(/already present/);
  });
});

describe.skipIf(!distribution)('credentials on the wire (catalogue D)', () => {
  let reg: RunningRegistry & { tokenServer?: TokenServer };
  let basicReg: RunningRegistry;
  let proxy: FaultProxy;
  let basicProxy: FaultProxy;
  let cdn: { host: string; seen: IncomingHttpHeaders[]; stop(): Promise<void> };
  const exp = testdataImages();

  beforeAll(async () => {
    [reg, basicReg] = await Promise.all([startDistribution({ auth: 'token' }), startDistribution({ auth: 'htpasswd' })]);
    [proxy, basicProxy] = await Promise.all([startFaultProxy(reg.host), startFaultProxy(basicReg.host)]);
    for (const r of [reg, basicReg]) {
      const env = { DOCKER_CONFIG: await dockerConfigWith(r.host) };
      expect((await ferry(['copy', `oci:${TESTDATA}:layers`, `docker://${r.host}/creds/layers:1`], { env })).code).toBe(0);
    }
    const layer = (await exp).layers.layers![0]!;
    const bytes = await readFile(join(TESTDATA, 'blobs', 'sha256', layer.digest.slice(7)));
    const seen: IncomingHttpHeaders[] = [];
    const server = createServer((req, res) => {
      seen.push(req.headers);
      res.writeHead(200, { 'content-length': String(bytes.byteLength) }).end(bytes);
    });
    const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
    cdn = { host: `127.0.0.1:${port}`, seen, stop: () => new Promise((r) => server.close(() => r())) };
  });
  afterAll(async () => {
    await Promise.all([proxy?.stop(), basicProxy?.stop(), cdn?.stop()]);
    await Promise.all([reg?.stop(), basicReg?.stop()]);
  });

  it('D1: a blob redirected to another host (S3 style) is fetched without Authorization', async () => {
    const layer = (await exp).layers.layers![0]!.digest;
    for (const [p, r] of [[proxy, reg], [basicProxy, basicReg]] as const) {
      p.setRule((q) => (q.method === 'GET' && q.url.endsWith(`/blobs/${layer}`) ? { redirect: `http://${cdn.host}/bucket/${layer.slice(7)}?X-Amz-Signature=abc` } : undefined));
      const env = { DOCKER_CONFIG: await dockerConfigWith(p.host) };
      const before = cdn.seen.length;
      const res = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${p.host}/creds/layers:1`], { env });
      p.setRule(undefined);
      expect(res.code, res.stderr).toBe(0);
      const cdnSaw = cdn.seen.slice(before);
      expect(cdnSaw.length).toBe(1);
      expect(cdnSaw[0]!.authorization).toBeUndefined();
      expect(cdnSaw[0]!['proxy-authorization']).toBeUndefined();
      // The registry itself did get credentials.
      expect(p.seen.some((q) => q.headers.authorization)).toBe(true);
      void r;
    }
  });

  it('D6: a token refused mid-pull is renewed once and the pull continues', async () => {
    const layer = (await exp).layers.layers![1]!.digest;
    const challenge = `Bearer realm="${reg.tokenServer!.realm}",service="${reg.tokenServer!.service}",scope="repository:creds/layers:pull"`;
    proxy.setRule((q, n) => (q.method === 'GET' && q.url.endsWith(`/blobs/${layer}`) && n === 0 ? { status: 401, headers: { 'www-authenticate': challenge } } : undefined));
    const before = reg.tokenServer!.requests.length;
    const env = { DOCKER_CONFIG: await dockerConfigWith(proxy.host) };
    const res = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${proxy.host}/creds/layers:1`], { env });
    proxy.setRule(undefined);
    expect(res.code, res.stderr).toBe(0);
    expect(reg.tokenServer!.requests.length - before).toBeGreaterThanOrEqual(2);
  });

  it('D6b: a token refused mid-push (on a blob upload) is renewed once and the push completes', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 't', layers: [256 << 10, 256 << 10, 256 << 10] }]);
    const challenge = `Bearer realm="${reg.tokenServer!.realm}",service="${reg.tokenServer!.service}",scope="repository:creds/d6b:pull,push"`;
    let tokensAtRefusal: number | undefined;
    proxy.setRule((q, n) => {
      if (q.method !== 'PUT' || !q.url.includes('/creds/d6b/blobs/uploads/') || n > 0) return undefined;
      tokensAtRefusal = reg.tokenServer!.requests.length;
      return { status: 401, headers: { 'www-authenticate': challenge } };
    });
    const env = { DOCKER_CONFIG: await dockerConfigWith(proxy.host) };
    const res = await ferry(['copy', `oci:${src}:t`, `docker://${proxy.host}/creds/d6b:1`], { env });
    proxy.setRule(undefined);
    expect(res.code, res.stderr).toBe(0);
    expect(tokensAtRefusal).toBeDefined();
    expect(reg.tokenServer!.requests.length - tokensAtRefusal!).toBe(1);
    const back = join(await tempDir(), 'back');
    const pulled = await ferry(['copy', `docker://${reg.host}/creds/d6b:1`, `oci:${back}:x`], { env: { DOCKER_CONFIG: await dockerConfigWith(reg.host) } });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect(JSON.parse(await readFile(join(back, 'index.json'), 'utf8')).manifests[0].digest).toBe(img!.manifest.digest);
  });

  it('D6b: a token refused on one chunk of a chunked push is renewed once and the upload resumes from the registry offset', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 't', layers: [3 << 20] }]);
    const challenge = `Bearer realm="${reg.tokenServer!.realm}",service="${reg.tokenServer!.service}",scope="repository:creds/d6b-chunked:pull,push"`;
    let patches = 0;
    let tokensAtRefusal: number | undefined;
    proxy.setRule((q) => {
      if (q.method !== 'PATCH' || !q.url.includes('/creds/d6b-chunked/blobs/uploads/') || ++patches !== 3) return undefined;
      tokensAtRefusal = reg.tokenServer!.requests.length;
      return { status: 401, headers: { 'www-authenticate': challenge } };
    });
    const before = proxy.seen.length;
    const http = new Http({ backoffMs: 20 });
    try {
      const client = new RegistryClient({ domain: proxy.host, http, credential: { username: USER, secret: PASSWORD } });
      const repo = new RegistryRepository(client, 'creds/d6b-chunked', { monolithicMax: 1 << 20, chunkSize: 512 << 10 });
      const r = await copy(await OciLayout.open(src), repo, [{ ref: 't', names: [{ tag: '1' }] }]);
      expect(r.images[0]!.digest).toBe(img!.manifest.digest);
    } finally {
      proxy.setRule(undefined);
      await http.close();
    }
    expect(tokensAtRefusal).toBeDefined();
    expect(reg.tokenServer!.requests.length - tokensAtRefusal!).toBe(1);
    // Six chunks and the refused one sent again; the upload was asked for its offset, not restarted.
    expect(patches).toBe(7);
    const uploads = proxy.seen.slice(before).filter((q) => q.url.includes('/creds/d6b-chunked/blobs/uploads/'));
    expect(uploads.filter((q) => q.method === 'GET')).toHaveLength(1);
    const back = join(await tempDir(), 'back');
    const pulled = await ferry(['copy', `docker://${reg.host}/creds/d6b-chunked:1`, `oci:${back}:x`], { env: { DOCKER_CONFIG: await dockerConfigWith(reg.host) } });
    expect(pulled.code, pulled.stderr).toBe(0);
    expect((await ferry(['verify', back])).code).toBe(0);
  });

  it('D3: a bearer realm pointing at link-local metadata is refused without sending credentials (exit 5)', async () => {
    proxy.setRule((q) => (q.url === '/v2/' || q.url.includes('/manifests/') ? { status: 401, headers: { 'www-authenticate': 'Bearer realm="http://169.254.169.254/latest/meta-data",service="x"' } } : undefined));
    const env = { DOCKER_CONFIG: await dockerConfigWith(proxy.host) };
    const res = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${proxy.host}/creds/layers:1`], { env });
    proxy.setRule(undefined);
    expect(res.code, res.stderr).toBe(5);
    expect(res.stderr).toContain('refusing the token realm http://169.254.169.254');
  });

  /** A listener standing where a refused realm points: it must never hear from ferry at all. */
  const realmListener = async (host: string) => {
    const requests: IncomingHttpHeaders[] = [];
    let connections = 0;
    const server = createServer((req, res) => {
      requests.push(req.headers);
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"token":"t"}');
    });
    server.on('connection', () => connections++);
    const port = await new Promise<number>((r) => server.listen(0, host, () => r((server.address() as { port: number }).port)));
    return { port, requests, connections: () => connections, stop: () => new Promise<void>((r) => server.close(() => r())) };
  };

  it('D3: a bearer realm over plain http on another host (127.0.0.2, localhost) is refused before any request (exit 5)', async () => {
    for (const [bind, name] of [['127.0.0.2', '127.0.0.2'], ['127.0.0.1', 'localhost']] as const) {
      const listener = await realmListener(bind);
      const realm = `http://${name}:${listener.port}`;
      try {
        proxy.setRule((q) => (q.url === '/v2/' || q.url.includes('/manifests/') ? { status: 401, headers: { 'www-authenticate': `Bearer realm="${realm}/token",service="x"` } } : undefined));
        const env = { DOCKER_CONFIG: await dockerConfigWith(proxy.host) };
        const res = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${proxy.host}/creds/layers:1`], { env });
        proxy.setRule(undefined);
        expect(res.code, res.stderr).toBe(5);
        expect(res.stderr).toContain(`refusing the token realm ${realm} offered by ${proxy.host}`);
        expect(listener.requests).toEqual([]);
        expect(listener.connections()).toBe(0);
      } finally {
        proxy.setRule(undefined);
        await listener.stop();
      }
    }
  });

  it('D3: a registry that is not on loopback may not point its realm at loopback, even over https (exit 5)', async () => {
    const listener = await realmListener('127.0.0.1');
    const name = `d3.registry.test:${proxy.host.split(':')[1]}`;
    const forward = await startConnectProxy({ hosts: { [name]: proxy.host } });
    const realm = `https://127.0.0.1:${listener.port}`;
    try {
      proxy.setRule((q) => (q.url === '/v2/' || q.url.includes('/manifests/') ? { status: 401, headers: { 'www-authenticate': `Bearer realm="${realm}/token",service="x"` } } : undefined));
      const env = { ...NO_PROXY_ENV, HTTP_PROXY: forward.url, DOCKER_CONFIG: await dockerConfigWith(name) };
      const res = await ferry(['--plain-http', '--store', join(await tempDir(), 's'), 'pull', `${name}/creds/layers:1`], { env });
      expect(res.code, res.stderr).toBe(5);
      expect(res.stderr).toContain(`refusing the token realm ${realm} offered by ${name}`);
      // The registry was reached (through the forwarding proxy); the realm never was.
      expect(forward.forwarded.some((u) => u.startsWith(`http://${name}/v2/`))).toBe(true);
      expect(listener.connections()).toBe(0);
    } finally {
      proxy.setRule(undefined);
      await forward.stop();
      await listener.stop();
    }
  });

  it('D5: a 403 to a pull with valid credentials exits 5 after at most one retry of the resource', async () => {
    for (const p of [proxy, basicProxy]) {
      const manifest = '/v2/creds/layers/manifests/1';
      const denied = JSON.stringify({ errors: [{ code: 'DENIED', message: 'requested access to the resource is denied' }] });
      // Without credentials the registry's own 401 comes through; with them, 403.
      p.setRule((q) => (q.url === manifest && q.headers.authorization ? { status: 403, headers: { 'content-type': 'application/json' }, body: denied } : undefined));
      const before = p.seen.length;
      const env = { DOCKER_CONFIG: await dockerConfigWith(p.host) };
      const res = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${p.host}/creds/layers:1`], { env });
      p.setRule(undefined);
      expect(res.code, res.stderr).toBe(5);
      expect(res.stderr).toContain(`access denied for http://${p.host}${manifest}: DENIED requested access to the resource is denied`);
      const asked = p.seen.slice(before).filter((q) => q.url === manifest);
      expect(asked.length).toBeLessThanOrEqual(2);
      expect(asked.filter((q) => q.headers.authorization).length).toBe(1);
    }
  });

  it('D5: a wrong password exits 5 after at most one retry (basic auth registry and token server)', async () => {
    const manifest = '/v2/creds/layers/manifests/1';
    const before = basicProxy.seen.length;
    const basicCfg = await dockerConfigWith(basicProxy.host, USER, 'wrong-password');
    const basic = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${basicProxy.host}/creds/layers:1`], { env: { DOCKER_CONFIG: basicCfg } });
    expect(basic.code, basic.stderr).toBe(5);
    expect(basic.stderr).toContain(`http://${basicProxy.host}${manifest} refused the saved credentials for ${basicProxy.host} (from ${join(basicCfg, 'config.json')}) (HTTP 401`);
    expect(basic.stderr).not.toContain('wrong-password');
    const asked = basicProxy.seen.slice(before).filter((q) => q.url === manifest);
    expect(asked.length).toBeLessThanOrEqual(2);
    expect(asked.filter((q) => q.headers.authorization).length).toBe(1);

    const tokens = reg.tokenServer!.requests.length;
    const tokenCfg = await dockerConfigWith(proxy.host, USER, 'wrong-password');
    const token = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${proxy.host}/creds/layers:1`], { env: { DOCKER_CONFIG: tokenCfg } });
    expect(token.code, token.stderr).toBe(5);
    expect(token.stderr).toContain(`the token server ${new URL(reg.tokenServer!.realm).origin} refused the saved credentials for ${proxy.host} (from ${join(tokenCfg, 'config.json')}) (HTTP 401)`);
    expect(reg.tokenServer!.requests.length - tokens).toBeLessThanOrEqual(2);
  });
});
