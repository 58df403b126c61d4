import { lstat, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ferry, type RunResult } from './helpers/cli.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { hasTool, isRoot } from './helpers/tools.js';
import {
  blobDigests,
  blobFile,
  indexEntries,
  mustRun,
  sha256,
  testdataImages,
  type ImageInfo,
  type Tag,
} from './helpers/expected-images.js';

const skopeo = hasTool('skopeo');
const umoci = hasTool('umoci');

let images: Record<Tag, ImageInfo>;
let noStore: string;

beforeAll(async () => {
  images = await testdataImages();
  noStore = join(await tempDir(), 'no-default-store');
});

function run(args: string[]): Promise<RunResult> {
  return ferry(args, { env: { FERRY_STORE: noStore } });
}

async function ok(args: string[]): Promise<RunResult> {
  const r = await run(args);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

async function ferryLayout(tag: Tag, destTag: string, extra: string[] = []): Promise<string> {
  const dir = join(await tempDir(), 'ferry-layout');
  await ok(['copy', '-q', ...extra, `oci:${TESTDATA}:${tag}`, `oci:${dir}:${destTag}`]);
  return dir;
}

interface SkopeoInspect {
  Digest: string;
  Architecture: string;
  Os: string;
  Layers: string[];
}

async function skopeoInspect(ref: string): Promise<SkopeoInspect> {
  return JSON.parse((await mustRun('skopeo', ['inspect', ref])).stdout.toString()) as SkopeoInspect;
}

/** Every path under `root`, relative and sorted, without following symlinks. */
async function treePaths(root: string): Promise<string[]> {
  const entries = await readdir(root, { recursive: true, withFileTypes: true });
  return entries.map((e) => relative(root, join(e.parentPath, e.name))).sort();
}

describe.skipIf(!skopeo).concurrent('skopeo 1.9 reads layouts ferry wrote', () => {
  it('skopeo inspect accepts a ferry-written layout and reports the expected digest', async () => {
    const dir = await ferryLayout('layers', 't1');
    const info = await skopeoInspect(`oci:${dir}:t1`);
    expect(info.Digest).toBe(images.layers.digest);
    expect(info.Layers).toEqual(images.layers.layers!.map((l) => l.digest));
    expect(`${info.Os}/${info.Architecture}`).toBe('linux/amd64');
  });

  it('skopeo inspect --raw returns bytes that hash to the manifest digest', async () => {
    const dir = await ferryLayout('layers', 't1');
    const raw = await mustRun('skopeo', ['inspect', '--raw', `oci:${dir}:t1`]);
    expect(raw.stdout.byteLength).toBe(images.layers.size);
    expect(sha256(raw.stdout)).toBe(images.layers.digest);
  });

  it('skopeo copy of ferry-written "layers" verifies every blob and keeps the digest', async () => {
    const dir = await ferryLayout('layers', 't1');
    const other = join(await tempDir(), 'skopeo-out');
    await mustRun('skopeo', ['copy', '-q', `oci:${dir}:t1`, `oci:${other}:t2`]);
    const [entry] = await indexEntries(other);
    expect(entry!.digest).toBe(images.layers.digest);
    expect(entry!.annotations?.['org.opencontainers.image.ref.name']).toBe('t2');
    await ok(['verify', other]);
  });

  it('skopeo copy of ferry-written "plain" succeeds (skopeo gzips the uncompressed layer; ferry verifies the result)', async () => {
    const dir = await ferryLayout('plain', 't1');
    const other = join(await tempDir(), 'skopeo-out');
    await mustRun('skopeo', ['copy', '-q', `oci:${dir}:t1`, `oci:${other}:t2`]);
    const manifest = JSON.parse((await mustRun('skopeo', ['inspect', '--raw', `oci:${other}:t2`])).stdout.toString()) as {
      config: { digest: string };
      layers: Array<{ mediaType: string }>;
    };
    expect(manifest.config.digest).toBe(images.plain.config);
    expect(manifest.layers.map((l) => l.mediaType)).toEqual(['application/vnd.oci.image.layer.v1.tar+gzip']);
    await ok(['verify', other]);
  });

  it('skopeo copy --preserve-digests of ferry-written "plain" keeps the uncompressed layer and digest', async () => {
    const dir = await ferryLayout('plain', 't1');
    const other = join(await tempDir(), 'skopeo-out');
    await mustRun('skopeo', ['copy', '-q', '--preserve-digests', `oci:${dir}:t1`, `oci:${other}:t2`]);
    expect((await indexEntries(other))[0]!.digest).toBe(images.plain.digest);
  });

  it('skopeo copy --all copies the ferry-written multi-platform index unchanged', async () => {
    const dir = await ferryLayout('multi', 'm');
    const other = join(await tempDir(), 'skopeo-out');
    await mustRun('skopeo', ['copy', '-q', '--all', `oci:${dir}:m`, `oci:${other}:m2`]);
    expect((await indexEntries(other))[0]!.digest).toBe(images.multi.digest);
    const want = [
      images.multi.digest,
      ...Object.values(images.multi.platforms!).flatMap((p) => [p.manifest, p.config, ...p.layers.map((l) => l.digest)]),
      images.multi.attestation!.manifest,
      ...images.multi.attestation!.layers.map((l) => l.digest),
    ];
    expect(await blobDigests(other)).toEqual(expect.arrayContaining(want));
    await ok(['verify', other]);
  });

  it('ferry copy --platform linux/arm64 of "multi" is an image skopeo inspects as arm64', async () => {
    const dir = await ferryLayout('multi', 'arm', ['--platform', 'linux/arm64']);
    const info = await skopeoInspect(`oci:${dir}:arm`);
    expect(info.Architecture).toBe('arm64');
    expect(info.Digest).toBe(images.multi.platforms!['linux/arm64/v8']!.manifest);
    expect(info.Layers).toEqual(images.multi.platforms!['linux/arm64/v8']!.layers.map((l) => l.digest));
  });

  it('ferry copy --platform linux/amd64,linux/arm64 of "multi" is an index skopeo resolves per architecture', async () => {
    const dir = await ferryLayout('multi', 'two', ['--platform', 'linux/amd64,linux/arm64']);
    for (const arch of ['amd64', 'arm64']) {
      const r = await mustRun('skopeo', ['--override-arch', arch, 'inspect', `oci:${dir}:two`]);
      expect((JSON.parse(r.stdout.toString()) as SkopeoInspect).Architecture).toBe(arch);
    }
  });
});

describe.skipIf(!umoci).concurrent('umoci 0.4 unpacks layouts ferry wrote', () => {
  it('umoci unpack of "layers" gives the expected flattened rootfs', async () => {
    const dir = await ferryLayout('layers', 't1');
    const bundle = join(await tempDir(), 'bundle');
    await mustRun('umoci', ['unpack', ...(isRoot() ? [] : ['--rootless']), '--image', `${dir}:t1`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    const layers = images.layers;
    expect(await treePaths(rootfs)).toEqual(layers.flattenedPaths);

    for (const e of layers.flattened!) {
      const p = join(rootfs, e.path);
      const st = await lstat(p);
      const where = e.path;
      if (e.type === 'symlink') {
        expect(st.isSymbolicLink(), where).toBe(true);
        expect(await readlink(p), where).toBe(e.target);
        continue;
      }
      expect(e.type === 'dir' ? st.isDirectory() : st.isFile(), where).toBe(true);
      if (isRoot()) {
        expect((st.mode & 0o7777).toString(8), where).toBe(parseInt(e.mode!, 8).toString(8));
        expect([st.uid, st.gid], where).toEqual([e.uid, e.gid]);
      }
      if (e.type === 'file') {
        const bytes = await readFile(p);
        expect(bytes.byteLength, where).toBe(e.size);
        expect(sha256(bytes), where).toBe(`sha256:${e.sha256}`);
      }
    }

    const tool = await readFile(join(rootfs, 'bin/tool'));
    const toolLink = await readFile(join(rootfs, 'bin/tool-link'));
    expect(toolLink.equals(tool)).toBe(false);
    expect(toolLink.toString()).toContain('v1');
    expect((await lstat(join(rootfs, 'bin/tool-link'))).ino).not.toBe((await lstat(join(rootfs, 'bin/tool'))).ino);
    expect((await lstat(join(rootfs, 'usr/share/linked2.txt'))).ino).toBe((await lstat(join(rootfs, 'usr/share/linked.txt'))).ino);
  });
});

describe.skipIf(!skopeo).concurrent('ferry reads layouts skopeo wrote', () => {
  async function skopeoLayout(): Promise<string> {
    const dir = join(await tempDir(), 'skopeo-layout');
    await mustRun('skopeo', ['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${dir}:s1`]);
    return dir;
  }

  it('ferry verify accepts a layout skopeo wrote', async () => {
    const dir = await skopeoLayout();
    const r = await ok(['verify', dir]);
    expect(r.stdout).toContain('0 problem(s)');
  });

  it('ferry copy from a skopeo-written layout keeps every digest of expected.json', async () => {
    const dir = await skopeoLayout();
    const out = join(await tempDir(), 'ferry-out');
    const r = await ok(['copy', `oci:${dir}:s1`, `oci:${out}:x`]);
    expect(r.stdout).toContain(`Digest: ${images.layers.digest}`);
    const entries = await indexEntries(out);
    expect(entries.map((e) => [e.digest, e.annotations?.['org.opencontainers.image.ref.name']])).toEqual([[images.layers.digest, 'x']]);
    expect(await blobDigests(out)).toEqual(
      [images.layers.digest, images.layers.config!, ...images.layers.layers!.map((l) => l.digest)].sort(),
    );
    await ok(['verify', out]);
  });

  it('ferry copies a skopeo-written layout into the store and images lists it', async () => {
    const dir = await skopeoLayout();
    const store = join(await tempDir(), 'store');
    await ok(['--store', store, 'copy', `oci:${dir}:s1`, 'example.com/x:1']);
    const list = JSON.parse((await ok(['--store', store, 'images', '--json'])).stdout) as Array<{ name: string; digest: string }>;
    expect(list.map((i) => [i.name, i.digest])).toEqual([['example.com/x:1', images.layers.digest]]);
    const table = (await ok(['--store', store, 'images'])).stdout;
    expect(table).toMatch(/example\.com\/x\s+1\s+3b52f2bbd32a\s+linux\/amd64/);
  });
});

describe.skipIf(!umoci).concurrent('ferry reads layouts umoci wrote', () => {
  async function umociLayout(): Promise<string> {
    const work = await tempDir();
    const dir = join(work, 'umoci-layout');
    const file = join(work, 'somefile');
    await writeFile(file, 'written by the ferry interop test\n');
    await mustRun('umoci', ['init', '--layout', dir]);
    await mustRun('umoci', ['new', '--image', `${dir}:base`]);
    await mustRun('umoci', ['insert', ...(isRoot() ? [] : ['--rootless']), '--image', `${dir}:base`, file, '/etc/somefile']);
    return dir;
  }

  it('ferry verify accepts a layout umoci built (init, new, insert)', async () => {
    const dir = await umociLayout();
    const r = await ok(['verify', dir]);
    expect(r.stdout).toContain('0 problem(s)');
  });

  it('ferry copy from a umoci layout keeps the digest and umoci unpacks the copy', async () => {
    const dir = await umociLayout();
    const [base] = await indexEntries(dir);
    const out = join(await tempDir(), 'ferry-out');
    await ok(['copy', `oci:${dir}:base`, `oci:${out}:b`]);
    expect((await indexEntries(out))[0]!.digest).toBe(base!.digest);
    const bundle = join(await tempDir(), 'bundle');
    await mustRun('umoci', ['unpack', ...(isRoot() ? [] : ['--rootless']), '--image', `${out}:b`, bundle]);
    expect(await readFile(join(bundle, 'rootfs/etc/somefile'), 'utf8')).toBe('written by the ferry interop test\n');
  });

  it.skipIf(!skopeo)('skopeo inspects the ferry copy of a umoci layout', async () => {
    const dir = await umociLayout();
    const [base] = await indexEntries(dir);
    const out = join(await tempDir(), 'ferry-out');
    await ok(['copy', `oci:${dir}:base`, `oci:${out}:b`]);
    const info = await skopeoInspect(`oci:${out}:b`);
    expect(info.Digest).toBe(base!.digest);
    expect(info.Layers).toHaveLength(1);
    expect(await readFile(blobFile(out, info.Layers[0]!)).then(sha256)).toBe(info.Layers[0]);
  });
});
