// Huge inputs, kept out of `npm test`: run with `npm run test:soak` (SOAK_WRITE=1 to record the
// figures in docs/BENCHMARKS.md). Sizes shrink for a quick try: SOAK_LAYER_GB, SOAK_FILES,
// SOAK_MANIFESTS, SOAK_TAGS, SOAK_LAYERS.
import { execFileSync } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '../helpers/fs.js';
import { makeLayout } from '../helpers/images.js';
import { makeTarLayout, sha256, tarOf, writeTarBlob, type TEntry } from '../helpers/layers.js';
import { startDistribution, type RunningRegistry } from '../helpers/registry.js';
import { hasTool } from '../helpers/tools.js';
import { measureFerry, writeSoakTable, type Measured, type SoakRow } from './measure.js';

const LAYER_GB = Number(process.env.SOAK_LAYER_GB ?? 8);
const FILES = Number(process.env.SOAK_FILES ?? 1_000_000);
const MANIFESTS = Number(process.env.SOAK_MANIFESTS ?? 1000);
const TAGS = Number(process.env.SOAK_TAGS ?? 1000);
const LAYERS = Number(process.env.SOAK_LAYERS ?? 500);
/** The bound for streaming a huge layer through any verb. */
const HUGE_RSS_MIB = 150;
const HOUR = 3_600_000;

const haveRegistry = hasTool('docker-registry');
const rows: SoakRow[] = [];
let work: string;
let reg: RunningRegistry;

beforeAll(async () => {
  work = await tempDir('ferry-soak-');
  if (haveRegistry) reg = await startDistribution();
}, 60_000);

afterAll(async () => {
  await reg?.stop();
  await rm(work, { recursive: true, force: true });
  if (process.env.SOAK_WRITE === '1' && rows.length > 0) {
    await writeSoakTable(rows, `${cpus().length} x ${cpus()[0]?.model.trim()}, ${Math.round(totalmem() / 2 ** 30)} GiB, node ${process.versions.node}`);
  }
  for (const r of rows) console.log(`soak: ${r.workload}: ${r.seconds.toFixed(1)} s, peak RSS ${r.peakRssMiB.toFixed(0)} MiB`);
});

/** Runs ferry, expects success, records the row. */
async function step(workload: string, args: string[], o: { limitMiB?: number; discardStdout?: boolean; pipeTo?: string[] } = {}): Promise<Measured> {
  const m = await measureFerry(args, { discardStdout: o.discardStdout, pipeTo: o.pipeTo });
  expect(m.code, `${workload}: ferry ${args.join(' ')}\n${m.stderr}`).toBe(0);
  rows.push({ workload, seconds: m.seconds, peakRssMiB: m.peakRssMiB, limitMiB: o.limitMiB });
  if (o.limitMiB) expect(m.peakRssMiB, `${workload}: peak RSS`).toBeLessThanOrEqual(o.limitMiB);
  return m;
}

describe.runIf(haveRegistry)(`a ${LAYER_GB} GiB layer, streamed through every verb`, () => {
  it('push, pull, export, save, load and verify keep peak RSS flat', async () => {
    const gib = `${LAYER_GB} GiB layer`;
    const src = join(work, 'huge-src');
    // A little over the size: from 8 GiB on, a tar header needs a PAX size record (catalogue H3).
    const fileSize = Math.round(LAYER_GB * 2 ** 30) + 1536;
    const blob = await writeTarBlob(src, [{ name: 'huge.bin', bigFile: fileSize }]);
    await makeTarLayout(src, [{ tag: 'soak', layers: [{ file: blob, mediaType: 'application/vnd.oci.image.layer.v1.tar' }] }]);
    const remote = `docker://${reg.host}/soak/huge:1`;
    await step(`push ${gib} (oci -> registry)`, ['copy', '-q', `oci:${src}:soak`, remote], { limitMiB: HUGE_RSS_MIB });
    await rm(src, { recursive: true, force: true });

    const pulled = join(work, 'huge-pulled');
    await step(`pull ${gib} (registry -> oci)`, ['copy', '-q', remote, `oci:${pulled}:soak`], { limitMiB: HUGE_RSS_MIB });
    // Streamed into GNU tar, which must read the whole file back at its exact size.
    const listed = await step(`export ${gib} (-o -, into tar -tv)`, ['export', '-q', `oci:${pulled}:soak`, '-o', '-'], { limitMiB: HUGE_RSS_MIB, pipeTo: ['tar', '-tvf', '-'] });
    expect(listed.stdout).toMatch(new RegExp(`\\s${fileSize}\\s.*huge\\.bin`));

    const archive = join(work, 'huge.tar');
    await step(`save ${gib} (docker-loadable .tar)`, ['save', '-q', `oci:${pulled}:soak`, '-o', archive], { limitMiB: HUGE_RSS_MIB });
    await rm(pulled, { recursive: true, force: true });

    const store = join(work, 'huge-store');
    await step(`load ${gib} (.tar -> store)`, ['--store', store, 'load', '-q', '-i', archive], { limitMiB: HUGE_RSS_MIB });
    await rm(archive, { force: true });
    await step(`verify ${gib} (store)`, ['--store', store, 'verify', '-q'], { limitMiB: HUGE_RSS_MIB });
    await rm(store, { recursive: true, force: true });
  }, 4 * HOUR);
});

describe(`a layer of ${FILES} files`, () => {
  it('exports to a tar and imports back', async () => {
    const src = join(work, 'files-src');
    function* entries(): Generator<TEntry> {
      for (let i = 0; i < FILES; i++) {
        if (i % 1000 === 0) yield { name: `d${i / 1000}/`, type: 'dir' };
        yield { name: `d${Math.floor(i / 1000)}/f${i}`, type: 'file', content: '' };
      }
    }
    const blob = await writeTarBlob(src, entries());
    await makeTarLayout(src, [{ tag: 'soak', layers: [{ file: blob, mediaType: 'application/vnd.oci.image.layer.v1.tar' }] }]);
    const flat = join(work, 'files.tar');
    await step(`export a layer of ${FILES} files (-o tar)`, ['export', '-q', `oci:${src}:soak`, '-o', flat]);
    const listed = execFileSync('sh', ['-c', `tar -tf ${flat} | grep -c '/f'`]).toString().trim();
    expect(Number(listed)).toBe(FILES);
    await rm(src, { recursive: true, force: true });
    const store = join(work, 'files-store');
    await step(`import a tar of ${FILES} files`, ['--store', store, 'import', '-q', '--compress', 'none', flat, 'soak/files:1']);
    await rm(flat, { force: true });
    await rm(store, { recursive: true, force: true });
  }, 2 * HOUR);
});

describe.runIf(haveRegistry)(`an index of ${MANIFESTS} manifests`, () => {
  it('copies to the registry and back, every manifest kept', async () => {
    const src = join(work, 'index-src');
    const made = await makeLayout(src, Array.from({ length: MANIFESTS }, (_, i) => ({ tag: `m${i}`, layers: [Buffer.from(`layer ${i}\n`)] })));
    const manifests = made.map((m, i) => ({ ...m.manifest, platform: { os: 'linux', architecture: 'amd64', variant: `v${i}` } }));
    const index = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests });
    const digest = sha256(index);
    await writeFile(join(src, 'blobs', 'sha256', digest.slice(7)), index);
    await writeFile(join(src, 'index.json'), JSON.stringify({
      schemaVersion: 2,
      manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest, size: Buffer.byteLength(index), annotations: { 'org.opencontainers.image.ref.name': 'multi' } }],
    }));
    const remote = `docker://${reg.host}/soak/multi:1`;
    await step(`push an index of ${MANIFESTS} manifests`, ['copy', '-q', '--platform', 'all', `oci:${src}:multi`, remote]);
    const back = join(work, 'index-back');
    await step(`pull an index of ${MANIFESTS} manifests`, ['copy', '-q', '--platform', 'all', remote, `oci:${back}:multi`]);
    await step(`verify an index of ${MANIFESTS} manifests`, ['verify', '-q', back]);
    const top = JSON.parse(await readFile(join(back, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string }> };
    expect(top.manifests[0]!.digest).toBe(digest);
    await rm(src, { recursive: true, force: true });
    await rm(back, { recursive: true, force: true });
  }, HOUR);
});

describe.runIf(haveRegistry)(`an image of ${LAYERS} layers`, () => {
  it('pushes, pulls, saves, loads and exports', async () => {
    const src = join(work, 'layers-src');
    const layers = Array.from({ length: LAYERS }, (_, i) => tarOf([{ name: `l${i}/file`, type: 'file', content: `layer ${i}\n` }]));
    await makeTarLayout(src, [{ tag: 'soak', layers }]);
    const remote = `docker://${reg.host}/soak/layers:1`;
    await step(`push an image of ${LAYERS} layers`, ['copy', '-q', `oci:${src}:soak`, remote]);
    const back = join(work, 'layers-back');
    await step(`pull an image of ${LAYERS} layers`, ['copy', '-q', remote, `oci:${back}:soak`]);
    const archive = join(work, 'layers.tar');
    await step(`save an image of ${LAYERS} layers`, ['save', '-q', `oci:${back}:soak`, '-o', archive]);
    await step(`load an image of ${LAYERS} layers`, ['--store', join(work, 'layers-store'), 'load', '-q', '-i', archive]);
    const flat = await step(`export an image of ${LAYERS} layers`, ['export', '-q', `oci:${back}:soak`, '-o', '-'], { pipeTo: ['tar', '-tf', '-'] });
    expect(flat.stdout.split('\n').filter((l) => l.endsWith('/file'))).toHaveLength(LAYERS);
    for (const d of [src, back, archive, join(work, 'layers-store')]) await rm(d, { recursive: true, force: true });
  }, HOUR);
});

describe.runIf(haveRegistry)(`a repository of ${TAGS} tags`, () => {
  it('lists every page and syncs, then syncs again moving nothing', async () => {
    const src = join(work, 'tags-src');
    await makeLayout(src, [{ tag: 'base', layers: [Buffer.from('one small layer\n')] }]);
    const repo = `${reg.host}/soak/tags`;
    expect((await measureFerry(['copy', '-q', `oci:${src}:base`, `docker://${repo}:t0`])).code).toBe(0);
    const manifest = await fetch(`http://${repo.replace('/soak/tags', '')}/v2/soak/tags/manifests/t0`, { headers: { accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const body = Buffer.from(await manifest.arrayBuffer());
    for (let i = 1; i < TAGS; i++) {
      const put = await fetch(`http://${reg.host}/v2/soak/tags/manifests/t${i}`, { method: 'PUT', headers: { 'content-type': 'application/vnd.oci.image.manifest.v1+json' }, body });
      expect(put.status).toBe(201);
    }
    const listed = await step(`tags: ${TAGS} tags, pages of 100`, ['tags', '--page-size', '100', repo]);
    expect(listed.stdout.trim().split('\n')).toHaveLength(TAGS);
    const mirror = join(work, 'tags-mirror');
    await step(`sync ${TAGS} tags into a layout`, ['sync', '-q', repo, `oci:${mirror}`]);
    await step(`sync ${TAGS} tags again (nothing changed)`, ['sync', '-q', repo, `oci:${mirror}`]);
    const tags = JSON.parse(await readFile(join(mirror, 'index.json'), 'utf8')) as { manifests: unknown[] };
    expect(tags.manifests).toHaveLength(TAGS);
    await rm(src, { recursive: true, force: true });
    await rm(mirror, { recursive: true, force: true });
  }, HOUR);
});
