#!/usr/bin/env node
// ferry benchmarks: each workload side by side with a peer when one is installed, in one run.
// Prints medians, ratios and peak RSS; `npm run bench -- --write` also rewrites docs/BENCHMARKS.md.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const FERRY = process.env.BENCH_FERRY ?? join(ROOT, 'bin', 'ferry');
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const LAYER_MB = Number(process.env.BENCH_LAYER_MB ?? 256);
const LAYERS = Number(process.env.BENCH_LAYERS ?? 3);

// Node 24 strips the types of this test helper, so the bench builds images exactly as the tests do.
const { makeLayout } = await import('../test/helpers/images.ts');

const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/**
 * Runs a command under /usr/bin/time; returns wall seconds and peak RSS in MiB. Asynchronous on
 * purpose: the registries of these workloads are children of this process, and a blocked event
 * loop stops draining their log pipes, so a chatty registry (404s during a sync) would stall.
 */
async function measure(cmd, args, timeoutMs = 15 * 60_000) {
  const child = spawn('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (c) => (stderr += c));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const status = await new Promise((resolve) => child.once('close', (code, signal) => resolve(code ?? signal)));
  clearTimeout(timer);
  if (status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${status}):\n${stderr.slice(-2000)}`);
  const [secs, kb] = stderr.trim().split('\n').pop().split(' ').map(Number);
  return { secs, rssMiB: kb / 1024 };
}

/** execFileSync's job without blocking the event loop (see measure). */
function runAsync(cmd, args) {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (c) => (stderr += c));
    child.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}):\n${stderr}`))));
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * A new output directory per run, the previous one deleted first. Kept outputs made every run
 * write to never-used disk blocks, which this VM's disk serves far slower than reused ones: a
 * 1 GiB copy took 2.4 s into freed space and 5.7 s once earlier outputs were kept, and the
 * penalty hit the tool that fsyncs (ferry) hardest.
 */
function freshDirs(prefix) {
  let n = 0;
  let last;
  return async () => {
    if (last) await rm(last, { recursive: true, force: true });
    last = join(work, `${prefix}-${n++}`);
    return last;
  };
}

/** freshDirs for runs that write a file beside the path (`PATH.tar`): the last run's file goes too. */
function freshWithFile(prefix, suffix) {
  const next = freshDirs(prefix);
  let last;
  return async () => {
    if (last) await rm(`${last}${suffix}`, { force: true });
    last = await next();
    return last;
  };
}

async function workload(name, prepare, tools) {
  const results = [];
  for (const [tool, run] of tools) {
    try {
      results.push(await measureTool(name, tool, prepare, run));
    } catch (e) {
      console.error(`${name} / ${tool}: ${e.message.split('\n')[0]}`);
    }
  }
  return results;
}

async function measureTool(name, tool, prepare, run) {
  const times = [];
  const rss = [];
  for (let i = 0; i <= RUNS; i++) {
    const args = await prepare();
    // Start every run with no dirty pages: ferry fsyncs its output, most peers do not, and the
    // previous run's write-back would otherwise land on whichever run comes next.
    await runAsync('sync', []);
    const m = await measure(...run(args));
    if (i > 0) { times.push(m.secs); rss.push(m.rssMiB); } // run 0 warms the page cache
  }
  return { workload: name, tool, median: median(times), rss: Math.max(...rss) };
}

/** skopeo's blob-info cache would let it mount blobs it saw before: runs compare cold. */
const coldSkopeo = () => rm('/var/lib/containers/cache/blob-info-cache-v1.boltdb', { force: true });

/** A new repository per run (`HOST/PREFIX/rN`), skopeo's cache emptied first. */
function freshRepos(host, prefix) {
  let n = 0;
  return async () => {
    await coldSkopeo();
    return `${host}/${prefix}/r${n++}`;
  };
}

/** Push to and pull from Debian's distribution registry, ferry beside skopeo. */
async function registryWorkloads(src, totalMB) {
  const { startDistribution } = await import('../test/helpers/registry.ts');
  const reg = await startDistribution();
  const rows = [];
  try {
    const cold = coldSkopeo;
    const repo = freshRepos(reg.host, 'bench');
    const pushTools = [['ferry', (r) => [FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${r}:1`]]]];
    if (has('skopeo')) pushTools.push(['skopeo', (r) => ['skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${src}:bench`, `docker://${r}:1`]]]);
    rows.push(...(await workload(`push oci -> registry (${totalMB} MiB)`, repo, pushTools)));
    const seeded = `${reg.host}/bench/seed:1`;
    await runAsync(FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${seeded}`]);
    const pullTools = [['ferry', (dst) => [FERRY, ['copy', '-q', `docker://${seeded}`, `oci:${dst}:bench`]]]];
    if (has('skopeo')) pullTools.push(['skopeo', (dst) => ['skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${seeded}`, `oci:${dst}:bench`]]]);
    const pullDst = freshDirs('pull');
    rows.push(...(await workload(`pull registry -> oci (${totalMB} MiB)`, async () => {
      await cold();
      return pullDst();
    }, pullTools)));
    rows.push(...(await syncWorkload(reg.host)));
  } finally {
    await reg.stop();
  }
  return rows;
}

/** A no-op sync of a 200-tag repository (second run), ferry beside `skopeo sync`. */
async function syncWorkload(host) {
  const tags = 200;
  const { copy } = await import('../dist/copy.js');
  const { OciLayout } = await import('../dist/locations/layout.js');
  const { openRepository, closeRegistryClients } = await import('../dist/locations/registry/pool.js');
  const { parseReference } = await import('../dist/oci/reference.js');
  const testdata = await OciLayout.open(join(ROOT, 'testdata', 'layout'));
  const names = Array.from({ length: tags }, (_, i) => ({ tag: `t${i}` }));
  await copy(testdata, openRepository(parseReference(`${host}/bench/tags`)), [{ ref: 'plain', names }]);
  await closeRegistryClients();
  // Registry to registry for both: skopeo sync cannot re-run into a dir: destination.
  const tools = [['ferry', () => [FERRY, ['sync', '-q', `${host}/bench/tags`, `docker://${host}/mirror-ferry`]]]];
  if (has('skopeo')) tools.push(['skopeo', () => ['skopeo', ['sync', '--src', 'docker', '--dest', 'docker', '--src-tls-verify=false', '--dest-tls-verify=false', `${host}/bench/tags`, `${host}/mirror-skopeo`]]]);
  return (await workload(`no-op sync of ${tags} tags`, async () => undefined, tools)).map((r) => ({ ...r, noThroughput: true }));
}

/** A TCP proxy that holds every chunk `ms` in each direction: a link with 2 x `ms` of round trip. */
async function startDelayProxy(upstream, ms) {
  const { createServer, connect } = await import('node:net');
  const [host, port] = upstream.split(':');
  const server = createServer((client) => {
    const up = connect(Number(port), host);
    const relay = (from, to) => {
      from.on('data', (c) => setTimeout(() => to.write(c), ms));
      from.on('end', () => setTimeout(() => to.end(), ms));
      from.on('error', () => to.destroy());
    };
    relay(client, up);
    relay(up, client);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { host: `127.0.0.1:${server.address().port}`, stop: () => new Promise((r) => server.close(r)) };
}

/**
 * A pull from distribution over https through a 40 ms round trip, as from a registry across a
 * WAN. Loopback hides what round trips and HTTP/2 flow-control windows cost; this row does not
 * (over h2, ferry took 10.5 s here instead of 1.1 s).
 */
async function wanWorkload() {
  const { startDistribution } = await import('../test/helpers/registry.ts');
  const reg = await startDistribution({ tls: true });
  const delay = await startDelayProxy(reg.host, 20);
  const mb = 64;
  const saved = process.env.NODE_EXTRA_CA_CERTS;
  try {
    // ferry (Node) trusts the registry's certificate through this; skopeo through --src-cert-dir.
    process.env.NODE_EXTRA_CA_CERTS = reg.caPath;
    const certs = join(work, 'wan-certs');
    await mkdir(certs);
    await copyFile(reg.caPath, join(certs, 'ca.crt'));
    const src = join(work, 'wan-src');
    await makeLayout(src, [{ tag: 'bench', layers: [(mb / 2) << 20, (mb / 2) << 20] }]);
    await runAsync(FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${reg.host}/wan/app:1`]);
    const ref = `docker://${delay.host}/wan/app:1`;
    const tools = [['ferry', (dst) => [FERRY, ['copy', '-q', ref, `oci:${dst}:bench`]]]];
    if (has('skopeo')) tools.push(['skopeo', (dst) => ['skopeo', ['copy', '-q', '--src-cert-dir', certs, ref, `oci:${dst}:bench`]]]);
    return (await workload(`pull over https, 40 ms round trip (${mb} MiB)`, freshDirs('wan'), tools)).map((r) => ({ ...r, mb }));
  } finally {
    if (saved === undefined) delete process.env.NODE_EXTRA_CA_CERTS;
    else process.env.NODE_EXTRA_CA_CERTS = saved;
    await delay.stop();
    await reg.stop();
  }
}

/** Peak RSS (VmHWM) in MiB of the process listening on a loopback port. */
async function serverPeakRss(port) {
  const pid = /pid=(\d+)/.exec(execFileSync('ss', ['-ltnpH', `sport = :${port}`]).toString())?.[1];
  const status = pid ? await readFile(`/proc/${pid}/status`, 'utf8') : '';
  return Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? NaN) / 1024;
}

/** skopeo pushes a fresh image (new digests each run; layers sent as they are) into ferry serve and into distribution. */
async function serverWorkloads() {
  const layerMB = Number(process.env.BENCH_SERVE_LAYER_MB ?? 64);
  const mb = LAYERS * layerMB;
  const name = `skopeo push oci -> server (${LAYERS} x ${layerMB} MiB; RSS: server)`;
  const { startServe } = await import('../test/helpers/serve.ts');
  const { startDistribution } = await import('../test/helpers/registry.ts');
  const servers = [
    ['ferry', async () => { const s = await startServe(join(work, 'serve-store'), ['-q']); return { host: s.host, stop: () => s.stop() }; }],
    ['docker-registry', () => startDistribution()],
  ];
  const rows = [];
  for (const [tool, startServer] of servers) {
    const server = await startServer();
    try {
      const times = [];
      for (let i = 0; i <= RUNS; i++) {
        const src = join(work, `serve-src-${tool}-${i}`);
        await makeLayout(src, [{ tag: 'bench', layers: Array.from({ length: LAYERS }, () => layerMB << 20) }]);
        await rm('/var/lib/containers/cache/blob-info-cache-v1.boltdb', { force: true });
        const m = await measure('skopeo', ['copy', '-q', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:bench`, `docker://${server.host}/bench/r${i}:1`]);
        if (i > 0) times.push(m.secs);
        await rm(src, { recursive: true, force: true });
      }
      rows.push({ workload: name, tool, median: median(times), rss: await serverPeakRss(server.host.split(':')[1]), mb });
    } finally {
      await server.stop();
    }
  }
  return rows;
}

/**
 * Flattening a 3-layer image (~22k small files, 3 x 64 MiB files, whiteouts, an opaque directory,
 * overwrites; gzip layers): ferry export -o (streams the result) beside umoci unpack + tar -c
 * (writes the tree to disk first), and ferry export --dir beside umoci unpack alone.
 */
async function exportWorkloads() {
  const { makeTarLayout, writeTarBlob, dir, file } = await import('../test/helpers/layers.ts');
  const layout = join(work, 'fs-src');
  const small = (i, j, v = 'v1') => file(`srv/d${i}/f${j}.txt`, `${v} ${i}/${j} `.repeat(1 + ((i * 7 + j) % 60)));
  function* l1() {
    yield dir('srv/');
    for (let i = 0; i < 200; i++) {
      yield dir(`srv/d${i}/`);
      for (let j = 0; j < 100; j++) yield small(i, j);
    }
    yield dir('big/');
    yield { name: 'big/a.bin', bigFile: 64 << 20, seed: 1 };
    yield { name: 'big/b.bin', bigFile: 64 << 20, seed: 2 };
  }
  function* l2() {
    for (let i = 0; i < 20; i++) yield file(`srv/d${i}/.wh..wh..opq`, '');
    for (let i = 20; i < 40; i++) for (let j = 0; j < 50; j++) yield small(i, j, 'v2');
    yield file('big/.wh.a.bin', '');
    yield { name: 'big/c.bin', bigFile: 64 << 20, seed: 3 };
  }
  function* l3() {
    yield dir('etc/');
    for (let j = 0; j < 2000; j++) yield file(`etc/conf${j}`, `setting=${j}\n`);
  }
  const layers = [];
  for (const gen of [l1, l2, l3]) {
    const blob = await writeTarBlob(layout, gen(), { gzip: true });
    layers.push({ file: blob, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' });
  }
  await makeTarLayout(layout, [{ tag: 'bench', layers }]);
  const mb = 192;
  let n = 0;
  const fresh = async () => {
    if (n > 0) await rm(join(work, `fs-out-${n - 1}`), { recursive: true, force: true }).then(() => rm(join(work, `fs-out-${n - 1}.tar`), { force: true }));
    return join(work, `fs-out-${n++}`);
  };
  const rows = [];
  const tarTools = [['ferry', (out) => [FERRY, ['export', '-q', `oci:${layout}:bench`, '-o', `${out}.tar`]]]];
  if (has('umoci')) tarTools.push(['umoci unpack + tar -c', (out) => ['sh', ['-c', `umoci unpack --image ${layout}:bench ${out} >/dev/null && tar -C ${out}/rootfs -cf ${out}.tar .`]]]);
  rows.push(...(await workload('export 3 layers, 22k files + 3 x 64 MiB -> tar', fresh, tarTools)).map((r) => ({ ...r, mb })));
  const dirTools = [['ferry', (out) => [FERRY, ['export', '-q', `oci:${layout}:bench`, '--dir', out]]]];
  if (has('umoci')) dirTools.push(['umoci unpack', (out) => ['sh', ['-c', `umoci unpack --image ${layout}:bench ${out} >/dev/null`]]]);
  rows.push(...(await workload('export 3 layers, 22k files + 3 x 64 MiB -> directory', fresh, dirTools)).map((r) => ({ ...r, mb })));
  await fresh();
  await rm(layout, { recursive: true, force: true });
  return rows;
}

/**
 * A layout with one gzip layer of `mb` MiB uncompressed, built by streaming. `random` data does not
 * compress; `mixed` (each MiB: 256 KiB random + 768 KiB of repetitive text) compresses about 3:1,
 * like real layers.
 */
async function makeGzipLayout(dir, mb, data = 'mixed') {
  const { createHash, randomBytes } = await import('node:crypto');
  const { createWriteStream } = await import('node:fs');
  const { mkdir, rename } = await import('node:fs/promises');
  const { once } = await import('node:events');
  const zlib = await import('node:zlib');
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  const tmp = join(dir, 'blobs', 'sha256', 'incoming');
  const out = createWriteStream(tmp);
  const gz = zlib.createGzip({ level: 1 });
  const outer = createHash('sha256');
  const inner = createHash('sha256');
  let size = 0;
  gz.on('data', (c) => { outer.update(c); size += c.length; if (!out.write(c)) { gz.pause(); out.once('drain', () => gz.resume()); } });
  const block = randomBytes(1 << 20);
  const text = Buffer.from(Array.from({ length: 40000 }, (_, i) => `line ${i % 977} of /usr/lib/x86_64-linux-gnu/lib${i % 31}.so.${i % 7}\n`).join(''));
  for (let i = 0; i < mb; i++) {
    if (data === 'mixed') {
      randomBytes(1 << 18).copy(block, 0);
      text.copy(block, 1 << 18, (i * 4099) % (text.length - (3 << 18)), (i * 4099) % (text.length - (3 << 18)) + (3 << 18));
    }
    block.writeUInt32LE(i, 0);
    inner.update(block);
    if (!gz.write(Buffer.from(block))) await once(gz, 'drain');
  }
  gz.end();
  await once(gz, 'end');
  out.end();
  await once(out, 'finish');
  const layer = { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: `sha256:${outer.digest('hex')}`, size };
  await rename(tmp, join(dir, 'blobs', 'sha256', layer.digest.slice(7)));
  const put = async (body) => {
    const digest = `sha256:${createHash('sha256').update(body).digest('hex')}`;
    await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), body);
    return { digest, size: Buffer.byteLength(body) };
  };
  const config = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${inner.digest('hex')}`] } }))) };
  const manifest = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await put(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers: [layer] }))) };
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': 'bench' } }] }));
  return size;
}

/**
 * Archives (one gzip layer of BENCH_ARCHIVE_LAYER_MB, default 512 MiB): save to an OCI archive and
 * to a docker-loadable one beside skopeo, load of a legacy (skopeo-written) docker archive beside
 * skopeo copying it to a layout, and a .tar.zst save beside `zstd -T2` compressing the same tar.
 */
async function archiveWorkloads() {
  const mb = Number(process.env.BENCH_ARCHIVE_LAYER_MB ?? 512);
  const data = process.env.BENCH_ARCHIVE_DATA ?? 'mixed';
  const src = join(work, 'archive-src');
  const gzMB = Math.round((await makeGzipLayout(src, mb, data)) / 2 ** 20);
  let n = 0;
  let last;
  const fresh = (suffix) => async () => {
    if (last) await rm(last, { recursive: true, force: true });
    // ferry fsyncs what it writes, skopeo does not: write back the last run's pages now, or the
    // next run (often ferry's) waits for them.
    execFileSync('sync');
    last = join(work, `arch-${n++}${suffix}`);
    return last;
  };
  const rows = [];
  // MiB/s: of the archive's bytes for saves (the gzip layer), of the uncompressed layer for the load.
  const label = `1 gzip layer: ${mb} MiB, ${gzMB} MiB gzipped, ${data} data`;
  const oci = [['ferry', (out) => [FERRY, ['save', '-q', '--format', 'oci', `oci:${src}:bench`, '-o', out]]]];
  if (has('skopeo')) oci.push(['skopeo', (out) => ['skopeo', ['copy', '-q', `oci:${src}:bench`, `oci-archive:${out}:bench`]]]);
  rows.push(...(await workload(`save -> OCI archive (${label})`, fresh('.tar'), oci)).map((r) => ({ ...r, mb: gzMB })));
  const docker = [['ferry', (out) => [FERRY, ['save', '-q', `oci:${src}:bench`, '-o', out]]]];
  if (has('skopeo')) docker.push(['skopeo', (out) => ['skopeo', ['copy', '-q', `oci:${src}:bench`, `docker-archive:${out}:bench/x:1`]]]);
  rows.push(...(await workload(`save -> docker-loadable archive (${label})`, fresh('.tar'), docker)).map((r) => ({ ...r, mb: gzMB })));
  if (has('skopeo')) {
    const legacy = join(work, 'legacy.tar');
    execFileSync('skopeo', ['copy', '-q', `oci:${src}:bench`, `docker-archive:${legacy}:bench/x:1`]);
    const load = [
      ['ferry', (dst) => [FERRY, ['--store', dst, 'load', '-q', '-i', legacy]]],
      ['skopeo', (dst) => ['skopeo', ['copy', '-q', `docker-archive:${legacy}`, `oci:${dst}:bench`]]],
    ];
    rows.push(...(await workload(`load legacy docker archive -> store/layout (${mb} MiB uncompressed)`, fresh(''), load)).map((r) => ({ ...r, mb })));
    await rm(legacy, { force: true });
  }
  const zst = [['ferry', (out) => [FERRY, ['save', '-q', `oci:${src}:bench`, '-o', out]]]];
  if (has('zstd')) {
    const plain = join(work, 'plain.tar');
    execFileSync(FERRY, ['save', '-q', `oci:${src}:bench`, '-o', plain]);
    zst.push(['zstd -T2 (of the same tar)', (out) => ['zstd', ['-q', '-T2', '-f', plain, '-o', out]]]);
    // ferry's output is on disk when it exits (fsync before rename); zstd's is in the page cache.
    // This row adds the write-back, so both are measured to the same point: safe to unplug.
    zst.push(['zstd -T2, then sync FILE', (out) => ['sh', ['-c', 'zstd -q -T2 -f "$1" -o "$2" && sync "$2"', 'sh', plain, out]]]);
  }
  // ferry stores gzip layers as they are; zstd compresses the whole tar: say what each one wrote.
  const sizes = new Map();
  for (const [tool, run] of zst) {
    const out = await fresh('.tar.zst')();
    await runAsync(...run(out));
    sizes.set(tool, Math.round((await stat(out)).size / 2 ** 20));
  }
  const zstRows = await workload(`save -> .tar.zst (${label})`, fresh('.tar.zst'), zst);
  rows.push(...zstRows.map((r) => ({ ...r, note: `${sizes.get(r.tool)} MiB written`, mb: gzMB })));
  await rm(join(work, 'plain.tar'), { force: true });
  if (last) await rm(last, { recursive: true, force: true });
  await rm(src, { recursive: true, force: true });
  return rows;
}

/**
 * Latency- and count-bound work (`--only-many`): a pull of 60 layers of 100 KiB-2 MiB, and a sync
 * of a 100-tag repository (3 small layers each, one shared) into an empty store and an archive,
 * beside skopeo (a pull; a sync into a dir:).
 */
async function manyWorkloads() {
  const { startDistribution } = await import('../test/helpers/registry.ts');
  const { copy } = await import('../dist/copy.js');
  const { OciLayout } = await import('../dist/locations/layout.js');
  const { openRepository, closeRegistryClients } = await import('../dist/locations/registry/pool.js');
  const { parseReference } = await import('../dist/oci/reference.js');
  const reg = await startDistribution();
  const rows = [];
  try {
    const src = join(work, 'many-layers');
    const sizes = Array.from({ length: 60 }, (_, i) => (100 << 10) + Math.floor((((i * 7919) % 60) / 60) * (1948 << 10)));
    await makeLayout(src, [{ tag: 'bench', layers: sizes }]);
    const mb = sizes.reduce((a, b) => a + b, 0) / 2 ** 20;
    await runAsync(FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${reg.host}/many/layers:1`]);
    const ref = `docker://${reg.host}/many/layers:1`;
    const pull = [['ferry', (dst) => [FERRY, ['copy', '-q', ref, `oci:${dst}:bench`]]]];
    if (has('skopeo')) pull.push(['skopeo', (dst) => ['skopeo', ['copy', '-q', '--src-tls-verify=false', ref, `oci:${dst}:bench`]]]);
    rows.push(...(await workload(`pull 60 layers of 0.1-2 MiB`, freshDirs('many-pull'), pull)).map((r) => ({ ...r, mb })));
    const images = join(work, 'many-images');
    const base = Buffer.alloc(300 << 10, 1);
    await makeLayout(images, Array.from({ length: 100 }, (_, i) => ({ tag: `t${i}`, layers: [base, 50 << 10, 20 << 10] })));
    const layout = await OciLayout.open(images);
    for (let i = 0; i < 100; i++) await copy(layout, openRepository(parseReference(`${reg.host}/many/app`)), [{ ref: `t${i}`, names: [{ tag: `t${i}` }] }]);
    await closeRegistryClients();
    const repo = `${reg.host}/many/app`;
    const store = [['ferry', (dst) => [FERRY, ['--store', dst, 'sync', '-q', repo]]]];
    if (has('skopeo')) store.push(['skopeo (dir:)', (dst) => ['skopeo', ['sync', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', repo, dst]]]);
    rows.push(...(await workload('sync 100 small tags into an empty store', freshDirs('many-store'), store)).map((r) => ({ ...r, noThroughput: true })));
    const archive = [['ferry', (dst) => [FERRY, ['sync', '-q', '--no-state', repo, `${dst}.tar`]]]];
    rows.push(...(await workload('sync 100 small tags into a new archive', freshWithFile('many-archive', '.tar'), archive)).map((r) => ({ ...r, noThroughput: true })));
  } finally {
    await reg.stop();
  }
  return rows;
}

/**
 * What no client can beat (`--only-floors`): curl pushing the layer blob in one monolithic PUT and
 * pulling it (then `sync FILE`), nothing hashed, beside ferry and skopeo on the same registry. On
 * 2 shared cores the push floor is distribution's: session 15 measured curl at 0.66-0.77x skopeo.
 */
async function floorWorkloads() {
  if (!has('docker-registry') || !has('curl')) return [];
  const { startDistribution } = await import('../test/helpers/registry.ts');
  const src = join(work, 'floor-src');
  const [img] = await makeLayout(src, [{ tag: 'bench', layers: [LAYER_MB << 20] }]);
  const layer = img.layers[0];
  const blob = join(src, 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
  const reg = await startDistribution();
  const rows = [];
  try {
    const cold = coldSkopeo;
    const repo = freshRepos(reg.host, 'floor');
    // POST for an upload, then the whole blob in the closing PUT.
    const curlPush = 'loc=$(curl -sf -D - -o /dev/null -X POST "http://$1/v2/$2/blobs/uploads/" | tr -d "\\r" | sed -n "s/^[Ll]ocation: //p"); case "$loc" in http*) ;; *) loc="http://$1$loc";; esac; curl -sf -o /dev/null -X PUT -H "content-type: application/octet-stream" -T "$3" "$loc&digest=$4"';
    const push = [
      ['curl (one PUT, no hashing)', (r) => ['sh', ['-c', curlPush, 'sh', reg.host, r.slice(reg.host.length + 1), blob, layer.digest]]],
      ['ferry', (r) => [FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${r}:1`]]],
    ];
    if (has('skopeo')) push.push(['skopeo', (r) => ['skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${src}:bench`, `docker://${r}:1`]]]);
    rows.push(...(await workload(`floor: push (${LAYER_MB} MiB)`, repo, push)).map((r) => ({ ...r, mb: LAYER_MB })));
    const seeded = `${reg.host}/floor/seed`;
    await runAsync(FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${seeded}:1`]);
    const out = freshWithFile('floor-pull', '.blob');
    const pull = [
      ['curl, then sync FILE', (d) => ['sh', ['-c', 'curl -sf -o "$1" "http://$2/v2/floor/seed/blobs/$3" && sync "$1"', 'sh', `${d}.blob`, reg.host, layer.digest]]],
      ['ferry', (d) => [FERRY, ['copy', '-q', `docker://${seeded}:1`, `oci:${d}:bench`]]],
    ];
    if (has('skopeo')) pull.push(['skopeo', (d) => ['skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${seeded}:1`, `oci:${d}:bench`]]]);
    rows.push(...(await workload(`floor: pull (${LAYER_MB} MiB)`, async () => (await cold(), out()), pull)).map((r) => ({ ...r, mb: LAYER_MB })));
  } finally {
    await reg.stop();
  }
  return rows;
}

const work = await mkdtemp(join(tmpdir(), 'ferry-bench-'));
try {
  const rows = [];
  const onlyArchive = process.argv.includes('--only-archive');
  const onlySync = process.argv.includes('--only-sync');
  const onlyWan = process.argv.includes('--only-wan');
  const onlyExport = process.argv.includes('--only-export') || onlyArchive;
  const totalMB = LAYERS * LAYER_MB;
  const onlyMany = process.argv.includes('--only-many');
  const onlyFloors = process.argv.includes('--only-floors');
  if (onlyFloors) {
    rows.push(...(await floorWorkloads()));
  } else if (onlyMany) {
    rows.push(...(await manyWorkloads()));
  } else if (onlyWan) {
    rows.push(...(await wanWorkload()));
  } else if (onlySync) {
    const { startDistribution } = await import('../test/helpers/registry.ts');
    const reg = await startDistribution();
    try {
      rows.push(...(await syncWorkload(reg.host)));
    } finally {
      await reg.stop();
    }
  } else if (!onlyExport) {
    const src = join(work, 'src');
    await makeLayout(src, [{ tag: 'bench', layers: Array.from({ length: LAYERS }, () => LAYER_MB << 20) }]);
    const freshDst = freshDirs('dst');
    const copyTools = [['ferry', (dst) => [FERRY, ['copy', '-q', `oci:${src}:bench`, `oci:${dst}:bench`]]]];
    if (has('skopeo')) copyTools.push(['skopeo', (dst) => ['skopeo', ['copy', '-q', `oci:${src}:bench`, `oci:${dst}:bench`]]]);
    rows.push(...(await workload(`copy oci -> oci (${LAYERS} x ${LAYER_MB} MiB)`, freshDst, copyTools)));
    rows.push(...(await workload(`verify layout (${totalMB} MiB)`, async () => src, [['ferry', (dir) => [FERRY, ['verify', dir]]]])));
    if (has('docker-registry')) rows.push(...(await registryWorkloads(src, totalMB)));
    if (has('docker-registry') && has('openssl')) rows.push(...(await wanWorkload()));
    if (has('docker-registry') && has('skopeo') && !process.argv.includes('--no-serve')) rows.push(...(await serverWorkloads()));
  }
  if (!process.argv.includes('--no-export') && !onlyArchive && !onlySync && !onlyWan && !onlyMany && !onlyFloors) rows.push(...(await exportWorkloads()));
  if (!process.argv.includes('--no-archive') && !onlySync && !onlyWan && !onlyMany && !onlyFloors && (onlyArchive || !process.argv.includes('--only-export'))) rows.push(...(await archiveWorkloads()));

  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${execFileSync(join(ROOT, 'node_modules', '.bin', 'node'), ['--version']).toString().trim()}`;
  const lines = [
    `| workload | tool | median s | MiB/s | vs ferry | peak RSS MiB |`,
    `| --- | --- | ---: | ---: | ---: | ---: |`,
  ];
  for (const r of rows) {
    const base = rows.find((x) => x.workload === r.workload && x.tool === 'ferry');
    lines.push(`| ${r.workload} | ${r.tool}${r.note ? ` (${r.note})` : ''} | ${r.median.toFixed(2)} | ${r.noThroughput ? '–' : ((r.mb ?? totalMB) / r.median).toFixed(0)} | ${base ? (r.median / base.median).toFixed(2) + "x" : "–"} | ${r.rss.toFixed(0)} |`);
  }
  const table = lines.join('\n');
  console.log(`\nmachine: ${machine}; ${RUNS} runs after one warm-up, medians\n\n${table}\n`);
  if (process.argv.includes('--write')) {
    // Only the marked block is rewritten: the targets table, the notes and the soak figures stay.
    const block = `<!-- bench:start -->\nLatest run of \`npm run bench\` (${new Date().toISOString().slice(0, 10)}).\n\nMachine: ${machine}. ${RUNS} runs after one warm-up; medians; peak RSS is the largest of the runs (\`/usr/bin/time\`). "vs ferry" is the peer's time divided by ferry's: above 1 means ferry is faster.\n\n${table}\n<!-- bench:end -->`;
    const path = join(ROOT, 'docs', 'BENCHMARKS.md');
    const old = await readFile(path, 'utf8').catch(() => '# Benchmarks\n\n<!-- bench:start --><!-- bench:end -->\n');
    const [i, j] = [old.indexOf('<!-- bench:start -->'), old.indexOf('<!-- bench:end -->')];
    const doc = i >= 0 && j > i ? old.slice(0, i) + block + old.slice(j + '<!-- bench:end -->'.length) : `${old.trimEnd()}\n\n${block}\n`;
    await writeFile(path, doc);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
