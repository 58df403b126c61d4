#!/usr/bin/env node
// ferry benchmarks: each workload side by side with a peer when one is installed, in one run.
// Prints medians, ratios and peak RSS; `npm run bench -- --write` also rewrites docs/BENCHMARKS.md.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..');
const FERRY = join(ROOT, 'bin', 'ferry');
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const LAYER_MB = Number(process.env.BENCH_LAYER_MB ?? 256);
const LAYERS = Number(process.env.BENCH_LAYERS ?? 3);

// Node 24 strips the types of this test helper, so the bench builds images exactly as the tests do.
const { makeLayout } = await import('../test/helpers/images.ts');

const has = (tool) => spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;

/** Runs a command under /usr/bin/time; returns wall seconds and peak RSS in MiB. */
function measure(cmd, args) {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', cmd, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed:\n${r.stderr}`);
  const [secs, kb] = r.stderr.trim().split('\n').pop().split(' ').map(Number);
  return { secs, rssMiB: kb / 1024 };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function workload(name, prepare, tools) {
  const results = [];
  for (const [tool, run] of tools) {
    const times = [];
    const rss = [];
    for (let i = 0; i <= RUNS; i++) {
      const args = await prepare();
      const m = measure(...run(args));
      if (i > 0) { times.push(m.secs); rss.push(m.rssMiB); } // run 0 warms the page cache
    }
    results.push({ workload: name, tool, median: median(times), rss: Math.max(...rss) });
  }
  return results;
}

/** Push to and pull from Debian's distribution registry, ferry beside skopeo. */
async function registryWorkloads(src, totalMB) {
  const { startDistribution } = await import('../test/helpers/registry.ts');
  const reg = await startDistribution();
  const rows = [];
  try {
    let n = 0;
    // skopeo's blob-info cache would let it mount blobs it saw before: compare cold runs.
    const cold = () => rm('/var/lib/containers/cache/blob-info-cache-v1.boltdb', { force: true });
    const repo = async () => {
      await cold();
      return `${reg.host}/bench/r${n++}`;
    };
    const pushTools = [['ferry', (r) => [FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${r}:1`]]]];
    if (has('skopeo')) pushTools.push(['skopeo', (r) => ['skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${src}:bench`, `docker://${r}:1`]]]);
    rows.push(...(await workload(`push oci -> registry (${totalMB} MiB)`, repo, pushTools)));
    const seeded = `${reg.host}/bench/seed:1`;
    execFileSync(FERRY, ['copy', '-q', `oci:${src}:bench`, `docker://${seeded}`]);
    const pullTools = [['ferry', (dst) => [FERRY, ['copy', '-q', `docker://${seeded}`, `oci:${dst}:bench`]]]];
    if (has('skopeo')) pullTools.push(['skopeo', (dst) => ['skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${seeded}`, `oci:${dst}:bench`]]]);
    rows.push(...(await workload(`pull registry -> oci (${totalMB} MiB)`, async () => {
      await cold();
      return join(work, `pull-${n++}`);
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
  const store = join(work, 'sync-store');
  const dir = join(work, 'sync-dir');
  const tools = [['ferry', () => [FERRY, ['--store', store, 'sync', '-q', `${host}/bench/tags`]]]];
  if (has('skopeo')) tools.push(['skopeo', () => ['skopeo', ['sync', '-q', '--src', 'docker', '--dest', 'dir', '--src-tls-verify=false', `${host}/bench/tags`, dir]]]);
  // The first run of each tool populates; workload() discards it as the warm-up.
  return (await workload(`no-op sync of ${tags} tags`, async () => undefined, tools)).map((r) => ({ ...r, noThroughput: true }));
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
        const m = measure('skopeo', ['copy', '-q', '--preserve-digests', '--dest-tls-verify=false', `oci:${src}:bench`, `docker://${server.host}/bench/r${i}:1`]);
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

const work = await mkdtemp(join(tmpdir(), 'ferry-bench-'));
try {
  const src = join(work, 'src');
  await makeLayout(src, [{ tag: 'bench', layers: Array.from({ length: LAYERS }, () => LAYER_MB << 20) }]);
  const totalMB = LAYERS * LAYER_MB;
  let n = 0;
  const freshDst = async () => join(work, `dst-${n++}`);
  const rows = [];
  const copyTools = [['ferry', (dst) => [FERRY, ['copy', '-q', `oci:${src}:bench`, `oci:${dst}:bench`]]]];
  if (has('skopeo')) copyTools.push(['skopeo', (dst) => ['skopeo', ['copy', '-q', `oci:${src}:bench`, `oci:${dst}:bench`]]]);
  rows.push(...(await workload(`copy oci -> oci (${LAYERS} x ${LAYER_MB} MiB)`, freshDst, copyTools)));
  rows.push(...(await workload(`verify layout (${totalMB} MiB)`, async () => src, [['ferry', (dir) => [FERRY, ['verify', dir]]]])));
  if (has('docker-registry')) rows.push(...(await registryWorkloads(src, totalMB)));
  if (has('docker-registry') && has('skopeo') && !process.argv.includes('--no-serve')) rows.push(...(await serverWorkloads()));

  const machine = `${cpus().length} x ${cpus()[0]?.model ?? 'cpu'}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, node ${execFileSync(join(ROOT, 'node_modules', '.bin', 'node'), ['--version']).toString().trim()}`;
  const lines = [
    `| workload | tool | median s | MiB/s | vs ferry | peak RSS MiB |`,
    `| --- | --- | ---: | ---: | ---: | ---: |`,
  ];
  for (const r of rows) {
    const base = rows.find((x) => x.workload === r.workload && x.tool === 'ferry');
    lines.push(`| ${r.workload} | ${r.tool} | ${r.median.toFixed(2)} | ${r.noThroughput ? '–' : ((r.mb ?? totalMB) / r.median).toFixed(0)} | ${(r.median / base.median).toFixed(2)}x | ${r.rss.toFixed(0)} |`);
  }
  const table = lines.join('\n');
  console.log(`\nmachine: ${machine}; ${RUNS} runs after one warm-up, medians\n\n${table}\n`);
  if (process.argv.includes('--write')) {
    const doc = `# Benchmarks\n\nLatest run of \`npm run bench\` (${new Date().toISOString().slice(0, 10)}).\n\nMachine: ${machine}. ${RUNS} runs after one warm-up; medians; peak RSS is the largest of the runs (\`/usr/bin/time\`). "vs ferry" is the peer's time divided by ferry's: above 1 means ferry is faster.\n\n${table}\n`;
    await writeFile(join(ROOT, 'docs', 'BENCHMARKS.md'), doc);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
