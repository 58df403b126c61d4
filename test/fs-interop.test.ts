import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry, type RunResult } from './helpers/cli.js';
import { mustRun, testdataImages } from './helpers/expected-images.js';
import { tempDir, testdataCopy } from './helpers/fs.js';
import { dir, file, hardlink, makeTarLayout, symlink, tarOf } from './helpers/layers.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { listTar, scanTree, treeFromTar, type TreeEntry } from './helpers/tar-list.js';
import { hasTool, isRoot } from './helpers/tools.js';

const umoci = hasTool('umoci');
const distribution = hasTool('docker-registry');

let noStore: string;
beforeAll(async () => {
  noStore = join(await tempDir(), 'no-default-store');
});

async function ok(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const r = await ferry(args, { env: { FERRY_STORE: noStore, ...env } });
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

/** `umoci unpack` of LAYOUT:TAG; returns the rootfs (rootless mode when not root). */
async function umociUnpack(layout: string, tag: string): Promise<string> {
  const bundle = join(await tempDir(), 'bundle');
  await mustRun('umoci', ['unpack', ...(isRoot() ? [] : ['--rootless']), '--image', `${layout}:${tag}`, bundle]);
  return join(bundle, 'rootfs');
}

/** Symlink modes are meaningless on Linux; umoci and tar agree on everything else. */
const comparable = (t: TreeEntry[]) => t.map((e) => (e.type === 'symlink' ? { ...e, mode: undefined } : e));

/** A generated image with the tricky cases: write through a symlink, opaque dir, whiteouts, replacements, links to deleted files. */
async function trickyLayout(): Promise<string> {
  const d = join(await tempDir(), 'tricky');
  await makeTarLayout(d, [
    {
      tag: 'tricky',
      layers: [
        tarOf([
          dir('etc/'),
          file('etc/conf', 'v1'),
          hardlink('etc/conf-link', 'etc/conf'),
          dir('data/'),
          file('data/keep', 'keep'),
          file('data/lower', 'lower'),
          symlink('escape', '/outside/here'),
          dir('swap/'),
          file('swap/child', 'c'),
          file('fileToDir', 'f'),
        ]),
        tarOf([
          file('etc/.wh.conf', ''),
          dir('data/'),
          file('data/.wh..wh..opq', ''),
          file('data/upper', 'upper'),
          file('escape/x', 'through the symlink'),
          file('.wh.swap', ''),
          file('swap', 'now a file'),
          dir('fileToDir/'),
          file('fileToDir/inner', 'i', { mode: 0o600, uid: 1000, gid: 1000 }),
        ]),
        tarOf([file('etc/conf', 'v3'), file('suid', '#!', { mode: 0o4755 })]),
      ],
    },
  ]);
  return d;
}

describe.skipIf(!umoci).concurrent('export matches umoci unpack entry by entry', () => {
  for (const [what, make, tag] of [
    ['testdata "layers" (whiteouts, opaque dir, file<->dir, hardlinks across layers)', () => testdataCopy(), 'layers'],
    ['a generated image (write through a symlink, links to deleted targets, setuid, owners)', () => trickyLayout(), 'tricky'],
  ] as const) {
    it(`--dir: ${what}`, async () => {
      const layout = await make();
      const reference = await scanTree(await umociUnpack(layout, tag));
      const d = join(await tempDir(), 'rootfs');
      await ok(['export', `oci:${layout}:${tag}`, '--dir', d]);
      expect(comparable(await scanTree(d))).toEqual(comparable(reference));
    });

    it(`-o x.tar extracted with GNU tar: ${what}`, async () => {
      const layout = await make();
      const reference = await scanTree(await umociUnpack(layout, tag));
      const tarPath = join(await tempDir(), 'x.tar');
      await ok(['export', `oci:${layout}:${tag}`, '-o', tarPath]);
      const d = join(await tempDir(), 'extracted');
      await mkdir(d);
      await mustRun('tar', ['-xpf', tarPath, '-C', d, ...(isRoot() ? ['--same-owner'] : [])]);
      expect(comparable(await scanTree(d))).toEqual(comparable(reference));
      // and the listing itself describes the same tree (owners as recorded, whatever the extractor)
      const listed = treeFromTar(await listTar(tarPath));
      expect(listed.map((e) => e.path)).toEqual(reference.map((e) => e.path));
    });
  }

  it('xattrs: the tar carries security.capability exactly as the testdata generator wrote it (Node cannot read xattrs from disk)', async () => {
    const images = await testdataImages();
    const tarPath = join(await tempDir(), 'x.tar');
    await ok(['export', `oci:${await testdataCopy()}:layers`, '-o', tarPath]);
    const listing = await listTar(tarPath);
    for (const want of images.layers.flattened!.filter((f) => f.xattrs)) {
      expect(listing.find((e) => e.name === want.path)?.xattrs).toEqual(want.xattrs);
    }
  });
});

describe('export through other transports', () => {
  it('oci-archive: gives the same tar as the oci: layout it was made from', async () => {
    const layout = await testdataCopy();
    const archive = join(await tempDir(), 'image.tar');
    await mustRun('tar', ['-C', layout, '-cf', archive, '.']);
    const a = join(await tempDir(), 'a.tar');
    const b = join(await tempDir(), 'b.tar');
    await ok(['export', `oci:${layout}:layers`, '-o', a]);
    await ok(['export', `oci-archive:${archive}:layers`, '-o', b]);
    expect((await readFile(b)).equals(await readFile(a))).toBe(true);
  });
});

describe.skipIf(!distribution)('import, push, pull, export through the distribution registry', () => {
  let reg: RunningRegistry;
  beforeAll(async () => {
    reg = await startDistribution();
  });
  afterAll(async () => reg?.stop());

  it('an imported image is pushed and pulled unchanged, and exports the same from docker:// as from the store', async () => {
    const st = join(await tempDir(), 'store');
    const env = { FERRY_STORE: st, SOURCE_DATE_EPOCH: '1700000000' };
    const src = join(await tempDir(), 'rootfs.tar');
    await ok(['export', `oci:${await testdataCopy()}:layers`, '-o', src]);
    const name = `${reg.host}/fs/imported:1`;
    const imported = JSON.parse((await ok(['import', src, name, '--json', '-c', 'CMD ["/bin/tool"]'], env)).stdout) as { digest: string };
    await ok(['push', name], env);
    const other = join(await tempDir(), 'store2');
    await ok(['pull', name], { FERRY_STORE: other });
    const pulled = JSON.parse((await ok(['inspect', name], { FERRY_STORE: other })).stdout) as { digest: string };
    expect(pulled.digest).toBe(imported.digest);
    const fromStore = join(await tempDir(), 'a.tar');
    const fromRegistry = join(await tempDir(), 'b.tar');
    await ok(['export', name, '-o', fromStore], { FERRY_STORE: other });
    await ok(['export', `docker://${name}`, '-o', fromRegistry]);
    expect((await readFile(fromRegistry)).equals(await readFile(fromStore))).toBe(true);
    expect((await readFile(fromStore)).equals(await readFile(src))).toBe(true);
  });
});
