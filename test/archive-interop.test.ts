import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry, type RunResult } from './helpers/cli.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { indexEntries, mustRun, TAGS, testdataImages, type ImageInfo, type Tag } from './helpers/expected-images.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const skopeo = hasTool('skopeo');
const umoci = hasTool('umoci');
const registryTool = hasTool('docker-registry');
const REPO = 'example.com/ferry/testdata';
const SINGLE = ['layers', 'docker', 'plain', 'zstd'] as const;
/** skopeo's oci: transport skips index entries with Docker media types (the `docker` image). */
const OCI_TYPED = ['layers', 'multi', 'plain', 'zstd'] as const;

let images: Record<Tag, ImageInfo>;
let noStore: string;
let store: string;
let archive: string;
let registry: RunningRegistry | undefined;

function run(args: string[], s?: string): Promise<RunResult> {
  return ferry(s ? ['--store', s, ...args] : args, { env: { FERRY_STORE: noStore } });
}

async function ok(args: string[], s?: string): Promise<RunResult> {
  const r = await run(args, s);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

async function named(s: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await indexEntries(s)) out[e.annotations?.['io.containerd.image.name'] ?? e.annotations?.['org.opencontainers.image.ref.name'] ?? e.digest] = e.digest;
  return out;
}

beforeAll(async () => {
  images = await testdataImages();
  noStore = join(await tempDir(), 'no-default-store');
  store = join(await tempDir(), 'store');
  for (const t of TAGS) await ok(['copy', '-q', `oci:${TESTDATA}:${t}`, `${REPO}:${t}`], store);
  archive = join(await tempDir(), 'all.tar');
  await ok(['save', '-q', ...TAGS.map((t) => `${REPO}:${t}`), '-o', archive], store);
  if (registryTool) registry = await startDistribution();
});

afterAll(async () => {
  await registry?.stop();
});

describe.skipIf(!skopeo)('skopeo reads ferry archives', () => {
  it('docker-archive: skopeo sees each image with layers = diff_ids (docker load semantics) and copies it out', async () => {
    const out = await tempDir();
    for (const t of SINGLE) {
      const info = JSON.parse((await mustRun('skopeo', ['inspect', `docker-archive:${archive}:${REPO}:${t}`])).stdout.toString()) as { Layers: string[] };
      expect(info.Layers, t).toEqual(images[t].layers!.map((l) => l.diffId));
      const dir = join(out, t);
      await mustRun('skopeo', ['copy', '-q', `docker-archive:${archive}:${REPO}:${t}`, `oci:${dir}:x`]);
      expect((await ok(['verify', dir])).stdout).toContain('0 problem(s)');
    }
  });

  it('oci-archive: skopeo inspect gives the original digests; skopeo copy --all keeps them (index included)', async () => {
    const out = await tempDir();
    for (const t of OCI_TYPED) {
      const dir = join(out, t);
      await mustRun('skopeo', ['copy', '-q', '--all', '--preserve-digests', `oci-archive:${archive}:${t}`, `oci:${dir}:${t}`]);
      expect((await indexEntries(dir))[0]!.digest, t).toBe(images[t].digest);
      if (t !== 'multi') {
        const info = JSON.parse((await mustRun('skopeo', ['inspect', `oci-archive:${archive}:${t}`])).stdout.toString()) as { Digest: string };
        expect(info.Digest, t).toBe(images[t].digest);
      }
    }
  });

  it.skipIf(!registryTool)('skopeo copies a ferry archive into a registry, and ferry pulls the same digests back', async () => {
    const host = registry!.host;
    for (const t of ['layers', 'multi'] as const) {
      await mustRun('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', `oci-archive:${archive}:${t}`, `docker://${host}/skopeo/${t}:1`]);
      const s = join(await tempDir(), 'store');
      await ok(['pull', '-q', '--platform', 'all', `${host}/skopeo/${t}:1`], s);
      expect((await named(s))[`${host}/skopeo/${t}:1`], t).toBe(images[t].digest);
    }
  });
});

describe.skipIf(!skopeo)('ferry loads what skopeo wrote', () => {
  it('docker-archive written by skopeo (layer digests become the diff_ids, nothing recompressed)', async () => {
    const dir = await tempDir();
    // skopeo refuses zstd layers in docker archives.
    for (const t of ['layers', 'plain'] as const) {
      const file = join(dir, `${t}.tar`);
      await mustRun('skopeo', ['copy', '-q', `oci:${TESTDATA}:${t}`, `docker-archive:${file}:example.com/a:${t}`]);
      const s = join(dir, `store-${t}`);
      const r = await ok(['load', '-i', file], s);
      expect(r.stdout.trim()).toBe(`Loaded image: example.com/a:${t}`);
      const m = JSON.parse((await ok(['inspect', '--raw', `example.com/a:${t}`], s)).stdout) as { layers: Array<{ digest: string }>; config: { digest: string } };
      expect(m.layers.map((l) => l.digest), t).toEqual(images[t].layers!.map((l) => l.diffId));
      expect(m.config.digest).toBe(images[t].config);
      expect((await ok(['verify'], s)).stdout).toContain('0 problem(s)');
    }
  });

  it('an image of a skopeo docker-archive picked by NAME:TAG keeps that name through save and copy (it was saved unnamed)', async () => {
    const dir = await tempDir();
    const file = join(dir, 'sk.tar');
    await mustRun('skopeo', ['copy', '-q', `oci:${TESTDATA}:layers`, `docker-archive:${file}:example.com/a:1`]);
    await ok(['save', '-q', `docker-archive:${file}:example.com/a:1`, '-o', join(dir, 'saved.tar')]);
    await ok(['copy', '-q', `docker-archive:${file}:example.com/a:1`, `oci-archive:${join(dir, 'copied.tar')}`]);
    for (const out of ['saved.tar', 'copied.tar']) {
      const s = join(dir, `store-${out}`);
      const r = await ok(['load', '-i', join(dir, out)], s);
      expect(r.stdout.trim(), out).toBe('Loaded image: example.com/a:1');
    }
  });

  it('oci-archive written by skopeo loads with the original digests (index with --all)', async () => {
    const dir = await tempDir();
    for (const t of ['layers', 'multi'] as const) {
      const file = join(dir, `${t}.tar`);
      await mustRun('skopeo', ['copy', '-q', '--all', `oci:${TESTDATA}:${t}`, `oci-archive:${file}:${t}`]);
      const s = join(dir, `store-${t}`);
      await ok(['load', '-q', '-i', file, '--tag', `example.com/b:${t}`], s);
      expect((await named(s))[`example.com/b:${t}`], t).toBe(images[t].digest);
    }
  });
});

describe.skipIf(!umoci)('umoci reads ferry archives', () => {
  it('an extracted ferry archive is an OCI layout umoci lists and unpacks', async () => {
    const dir = join(await tempDir(), 'layout');
    await mkdir(dir);
    await mustRun('tar', ['-C', dir, '-xf', archive]);
    const tags = (await mustRun('umoci', ['ls', '--layout', dir])).stdout.toString().trim().split('\n').sort();
    expect(tags).toEqual([...TAGS].sort());
    const bundle = join(await tempDir(), 'bundle');
    await mustRun('umoci', ['unpack', '--rootless', '--image', `${dir}:plain`, bundle]);
    expect((await readFile(join(bundle, 'config.json'), 'utf8')).length).toBeGreaterThan(0);
  });
});

describe.skipIf(!registryTool)('archives and a registry', () => {
  it('save -> load -> push -> pull keeps every manifest digest identical (all five, the index included); save from docker:// too', async () => {
    const host = registry!.host;
    const loaded = join(await tempDir(), 'loaded');
    await ok(['load', '-q', '-i', archive], loaded);
    for (const t of TAGS) await ok(['push', '-q', `${REPO}:${t}`, `${host}/rt/testdata:${t}`], loaded);
    const pulled = join(await tempDir(), 'pulled');
    for (const t of TAGS) await ok(['pull', '-q', '--platform', 'all', `${host}/rt/testdata:${t}`], pulled);
    const n = await named(pulled);
    for (const t of TAGS) expect(n[`${host}/rt/testdata:${t}`], t).toBe(images[t].digest);
    // save straight from the registry (the store is not touched), then load: same digests again.
    const file = join(await tempDir(), 'from-registry.tar.zst');
    await ok(['save', '-q', ...TAGS.map((t) => `docker://${host}/rt/testdata:${t}`), '-o', file]);
    const again = join(await tempDir(), 'again');
    const l = await ok(['load', '-i', file], again);
    expect(l.stdout).toContain(`Loaded image: ${host}/rt/testdata:multi`);
    const m = await named(again);
    for (const t of TAGS) expect(m[`${host}/rt/testdata:${t}`], t).toBe(images[t].digest);
  });

  it('ingestArchive streams a compressed archive into one registry repository in a single pass', async () => {
    const { ingestArchive } = await import('../src/archive/ingest.js');
    const { openRepository, closeRegistryClients } = await import('../src/locations/registry/pool.js');
    const { parseReference } = await import('../src/oci/reference.js');
    const host = registry!.host;
    const zst = join(await tempDir(), 'all.tar.zst');
    await ok(['save', '-q', ...TAGS.map((t) => `${REPO}:${t}`), '-o', zst], store);
    const repo = openRepository(parseReference(`${host}/ingest/testdata:x`));
    try {
      const r = await ingestArchive({ inputs: [zst], sink: repo, rename: (root) => root.names.map((n) => ({ tag: n.tag, name: `${host}/ingest/testdata:${n.tag}` })) });
      expect(r.images.map((i) => i.digest)).toEqual(TAGS.map((t) => images[t].digest));
    } finally {
      await closeRegistryClients();
    }
    const s = join(await tempDir(), 'store');
    for (const t of TAGS) await ok(['pull', '-q', '--platform', 'all', `${host}/ingest/testdata:${t}`], s);
    const n = await named(s);
    for (const t of TAGS) expect(n[`${host}/ingest/testdata:${t}`], t).toBe(images[t].digest);
  });

  it('push --from FILE PREFIX pushes every image of an archive (plain and compressed) without loading it', async () => {
    const host = registry!.host;
    const gz = join(await tempDir(), 'all.tar.gz');
    await ok(['save', '-q', ...TAGS.map((t) => `${REPO}:${t}`), '-o', gz], store);
    for (const [file, prefix] of [[archive, `${host}/mirror`], [gz, `${host}/gz`]] as const) {
      const r = await ok(['push', '--from', file, prefix]);
      for (const t of TAGS) expect(r.stdout).toContain(`${prefix}/ferry/testdata:${t}: digest: ${images[t].digest}`);
    }
    const s = join(await tempDir(), 'store');
    await ok(['pull', '-q', '--platform', 'all', `${host}/mirror/ferry/testdata:multi`], s);
    expect((await named(s))[`${host}/mirror/ferry/testdata:multi`]).toBe(images.multi.digest);
    // A legacy docker archive made by skopeo: its images get Docker 25-style manifests.
    if (skopeo) {
      const legacy = join(await tempDir(), 'legacy.tar');
      await mustRun('skopeo', ['copy', '-q', `oci:${TESTDATA}:layers`, `docker-archive:${legacy}:example.com/legacy/app:1`]);
      const p = await ok(['push', '--from', legacy, `${host}/old`]);
      expect(p.stdout).toMatch(new RegExp(`${host}/old/legacy/app:1: digest: sha256:[0-9a-f]{64}`));
    }
  });
});
