import { spawn } from 'node:child_process';
import { lstat, mkdir, readdir, readFile, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { exitCodeFor, toFerryError } from '../src/errors.js';
import { exportImage, type ExportTarOptions } from '../src/fs/export.js';
import { decompressBudget as layerBudget } from '../src/blob/compression.js';
import { ferry, type RunResult } from './helpers/cli.js';
import { blobFile, mustRun, testdataImages, type ImageInfo, type Tag } from './helpers/expected-images.js';
import { flipByte, TESTDATA, tempDir } from './helpers/fs.js';
import { dir, file, hardlink, makeTarLayout, symlink, tarOf, writeTarBlob, type LayerSpec, type TEntry } from './helpers/layers.js';
import { listTar, scanTree, treeFromTar, type Listed, type TreeEntry } from './helpers/tar-list.js';
import { isRoot } from './helpers/tools.js';

let images: Record<Tag, ImageInfo>;
let noStore: string;

beforeAll(async () => {
  images = await testdataImages();
  noStore = join(await tempDir(), 'no-default-store');
});

function run(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  return ferry(args, { env: { FERRY_STORE: noStore, ...env } });
}

async function ok(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const r = await run(args, env);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

/** A layout with one image `t` built from the given layers. */
async function image(layers: LayerSpec[], o: { diffIdCount?: number } = {}): Promise<string> {
  const d = join(await tempDir(), 'layout');
  await makeTarLayout(d, [{ tag: 't', layers, diffIdCount: o.diffIdCount }]);
  return d;
}

/**
 * Exports oci:LAYOUT:t to a tar in a fresh directory, in-process through the library (the CLI
 * maps errors to exit codes with the same exitCodeFor); returns the exit code, the message and
 * the listing.
 */
async function exportTar(layout: string, o: Partial<ExportTarOptions> = {}) {
  const outDir = await tempDir();
  const out = join(outDir, 'out.tar');
  let r: { code: number; stderr: string };
  try {
    await exportImage({ image: `oci:${layout}:t`, storeDir: noStore, output: out, ...o });
    r = { code: 0, stderr: '' };
  } catch (e) {
    const err = toFerryError(e);
    r = { code: exitCodeFor(err), stderr: err.message };
  }
  const listing = r.code === 0 ? await listTar(out) : undefined;
  return { r, out, outDir, listing };
}

/** Asserts a refusal: exit code, message, and that no output (or temp file) was left. */
async function refused(layers: LayerSpec[], code: number, message: RegExp, o: { diffIdCount?: number } = {}): Promise<void> {
  const layout = await image(layers, { diffIdCount: o.diffIdCount });
  const { r, outDir } = await exportTar(layout);
  expect(r.code, r.stderr).toBe(code);
  expect(r.stderr).toMatch(message);
  expect(await readdir(outDir)).toEqual([]);
}

/** The same through the real CLI: exit status, message on stderr, no stack trace, nothing left. */
async function refusedByCli(layers: LayerSpec[], code: number, message: RegExp, env: Record<string, string> = {}): Promise<void> {
  const layout = await image(layers);
  const outDir = await tempDir();
  const r = await run(['export', `oci:${layout}:t`, '-o', join(outDir, 'out.tar')], env);
  expect(r.code, r.stderr).toBe(code);
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/\n\s+at /);
  expect(await readdir(outDir)).toEqual([]);
}

const names = (l: Listed[]) => l.map((e) => e.name.replace(/\/$/, ''));
const byName = (l: Listed[], n: string) => l.find((e) => e.name.replace(/\/$/, '') === n);

function expectedTree(info: ImageInfo): TreeEntry[] {
  return info.flattened!.map((f) => {
    const t: TreeEntry = { path: f.path, type: f.type, mode: parseInt(f.mode ?? '0', 8).toString(8).padStart(4, '0'), uid: f.uid ?? 0, gid: f.gid ?? 0 };
    if (f.type === 'symlink') {
      t.target = f.target;
      delete (t as Partial<TreeEntry>).mode;
    }
    if (f.sha256) t.sha256 = f.sha256;
    const group = info.flattened!.filter((g) => g.hardlinkOf === f.path || f.hardlinkOf === g.path || (f.hardlinkOf && g.hardlinkOf === f.hardlinkOf));
    if (group.length > 0) t.links = [f.path, ...group.map((g) => g.path)].filter((v, i, a) => a.indexOf(v) === i).sort();
    return t;
  });
}

describe.concurrent('ferry export: the testdata images', () => {
  it('flattens "layers" exactly as expected.json says (whiteouts, opaque dir, file<->dir replacement, hardlinks, xattr, setuid)', async () => {
    const out = join(await tempDir(), 'layers.tar');
    await ok(['export', `oci:${TESTDATA}:layers`, '-o', out]);
    const listing = await listTar(out);
    expect(treeFromTar(listing)).toEqual(expectedTree(images.layers));
    expect(names(listing).filter((n) => n.includes('.wh.'))).toEqual([]);
    expect(byName(listing, 'usr/share/cap')!.xattrs).toEqual({ 'security.capability': 'AQAAAgAEAAAAAAAAAAAAAAAAAAA=' });
    // every path once; parents before children
    expect(new Set(names(listing)).size).toBe(listing.length);
    const seen = new Set<string>();
    for (const n of names(listing)) {
      const parent = n.includes('/') ? n.slice(0, n.lastIndexOf('/')) : '';
      if (parent) expect(seen.has(parent), `${n} before its parent`).toBe(true);
      seen.add(n);
    }
  });

  it('A8: bin/tool-link keeps the layer-1 content after layer 3 replaces bin/tool; no dangling hardlink', async () => {
    const out = join(await tempDir(), 'layers.tar');
    await ok(['export', `oci:${TESTDATA}:layers`, '-o', out]);
    const listing = await listTar(out);
    const link = byName(listing, 'bin/tool-link')!;
    expect(link.type).toBe('file');
    expect(link.sha256).toBe(images.layers.flattened!.find((f) => f.path === 'bin/tool-link')!.sha256);
    expect(byName(listing, 'bin/tool')!.sha256).not.toBe(link.sha256);
    for (const h of listing.filter((e) => e.type === 'hardlink')) {
      const i = listing.indexOf(h);
      expect(listing.slice(0, i).some((e) => e.name === h.linkname && e.type === 'file'), `${h.name} -> ${h.linkname}`).toBe(true);
    }
  });

  it('--dir extracts the same tree', async () => {
    const d = join(await tempDir(), 'rootfs');
    await ok(['export', `oci:${TESTDATA}:layers`, '--dir', d]);
    const tree = await scanTree(d);
    const want = expectedTree(images.layers).map((t) => (isRoot() ? t : { ...t, uid: process.getuid!(), gid: process.getgid!() }));
    expect(tree.map((t) => (t.type === 'symlink' ? { ...t, uid: want.find((w) => w.path === t.path)!.uid, gid: want.find((w) => w.path === t.path)!.gid } : t))).toEqual(want);
  });

  it('compresses by suffix (.tar.gz, .tar.zst), and writes plain tar to stdout', async () => {
    const d = await tempDir();
    const plain = join(d, 'x.tar');
    await ok(['export', `oci:${TESTDATA}:layers`, '-o', plain]);
    const want = await listTar(plain);
    for (const [name, magic] of [
      ['x.tar.gz', '1f8b'],
      ['x.tar.zst', '28b52ffd'],
    ] as const) {
      await ok(['export', `oci:${TESTDATA}:layers`, '-o', join(d, name)]);
      expect((await readFile(join(d, name))).subarray(0, magic.length / 2).toString('hex')).toBe(magic);
      expect(await listTar(join(d, name))).toEqual(want);
    }
    const child = spawn(join(import.meta.dirname, '..', 'bin', 'ferry'), ['export', `oci:${TESTDATA}:layers`], { env: { ...process.env, FERRY_STORE: noStore } });
    const chunks: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => chunks.push(c));
    const code = await new Promise((r) => child.on('close', r));
    expect(code).toBe(0);
    expect(Buffer.concat(chunks).equals(await readFile(plain))).toBe(true);
  });

  it('is deterministic: two exports are byte-identical', async () => {
    const d = await tempDir();
    await ok(['export', `oci:${TESTDATA}:layers`, '-o', join(d, 'a.tar')]);
    await ok(['export', `oci:${TESTDATA}:layers`, '-o', join(d, 'b.tar')]);
    expect((await readFile(join(d, 'a.tar'))).equals(await readFile(join(d, 'b.tar')))).toBe(true);
  });

  it('refuses to replace an existing -o file without --force, then replaces it with --force', async () => {
    const d = await tempDir();
    const out = join(d, 'x.tar');
    await writeFile(out, 'keep me');
    const r = await run(['export', `oci:${TESTDATA}:layers`, '-o', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/x\.tar already exists/);
    expect(await readFile(out, 'utf8')).toBe('keep me');
    await ok(['export', `oci:${TESTDATA}:layers`, '-o', out, '--force']);
    expect((await listTar(out)).length).toBeGreaterThan(10);
    expect(await readdir(d)).toEqual(['x.tar']);
  });

  it('picks the host platform from an index by default, another with --platform', async () => {
    const d = await tempDir();
    await ok(['export', `oci:${TESTDATA}:multi`, '--platform', 'linux/arm64', '-o', join(d, 'arm.tar')]);
    await ok(['export', `oci:${TESTDATA}:multi`, '--platform', 'linux/amd64', '-o', join(d, 'amd.tar')]);
    const arm = await listTar(join(d, 'arm.tar'));
    const amd = await listTar(join(d, 'amd.tar'));
    expect(byName(arm, 'etc/arch')!.sha256).not.toBe(byName(amd, 'etc/arch')!.sha256);
    const r = await run(['export', `oci:${TESTDATA}:multi`, '--platform', 'linux/s390x', '-o', join(d, 'no.tar')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/no image for platform linux\/s390x \(available: linux\/amd64, linux\/arm64\)/);
    // export flattens one image: the hint does not offer --platform all, which it refuses.
    expect(r.stderr).toContain('hint: choose one of those with --platform OS/ARCH');
    expect(r.stderr).not.toContain('--platform all');
    const single = await exportTar(TESTDATA, { image: `oci:${TESTDATA}:layers`, platform: { os: 'linux', architecture: 'arm64' } });
    expect(single.r.code).toBe(2);
    expect(single.r.stderr).toMatch(/is a single-platform image for linux\/amd64, not linux\/arm64/);
  });

  it('exports docker-schema2, uncompressed and zstd images too', async () => {
    for (const tag of ['docker', 'plain', 'zstd'] as const) {
      const out = join(await tempDir(), `${tag}.tar`);
      await ok(['export', `oci:${TESTDATA}:${tag}`, '-o', out]);
      expect(names(await listTar(out))).toEqual(expect.arrayContaining(images[tag].flattenedPaths ?? []));
    }
  });

  it('exports a store image by name', async () => {
    const store = join(await tempDir(), 'store');
    await ferry(['copy', `oci:${TESTDATA}:layers`, 'example.com/x:1'], { env: { FERRY_STORE: store } });
    const out = join(await tempDir(), 'x.tar');
    const r = await ferry(['export', 'example.com/x:1', '-o', out], { env: { FERRY_STORE: store } });
    expect(r.code, r.stderr).toBe(0);
    expect(treeFromTar(await listTar(out))).toEqual(expectedTree(images.layers));
  });
});

describe.concurrent('ferry export: malicious and malformed layers (catalogue A)', () => {
  it('A4: an entry "../evil" is refused with exit 3 and nothing is written', async () => {
    await Promise.all([
      refusedByCli([tarOf([file('../evil', 'x')])], 3, /entry "\.\.\/evil" escapes the root/),
      refused([tarOf([file('a/../../evil', 'x')])], 3, /escapes the root/),
    ]);
  });

  it('A4: an absolute entry "/abs" is refused with exit 3', async () => {
    await refusedByCli([tarOf([file('/abs', 'x')])], 3, /entry "\/abs" has an absolute path/);
  });

  it('A5: a symlink then a write through it in the same layer resolves inside the root, like a chroot', async () => {
    const outside = join(await tempDir(), 'outside');
    await mkdir(outside);
    const layout = await image([tarOf([symlink('pwn', outside), file('pwn/x', 'gotcha')])]);
    const { r, listing } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(0);
    const inRoot = outside.slice(1) + '/x';
    expect(byName(listing!, inRoot)?.sha256).toBeDefined();
    expect(byName(listing!, 'pwn')).toMatchObject({ type: 'symlink', linkname: outside });
    expect(names(listing!)).not.toContain('pwn/x');
    const d = join(await tempDir(), 'rootfs');
    await ok(['export', `oci:${layout}:t`, '--dir', d]);
    expect(await readdir(outside)).toEqual([]);
    expect(await readFile(join(d, inRoot), 'utf8')).toBe('gotcha');
  });

  it('A5: a symlink in one layer and a write through it in a later layer stays inside', async () => {
    const outside = join(await tempDir(), 'outside');
    await mkdir(outside);
    const layout = await image([tarOf([symlink('pwn', '../../../../../../..' + outside)]), tarOf([dir('pwn/'), file('pwn/y', 'later')])]);
    const { r, listing } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(0);
    // the later layer's directory entry replaces the symlink; nothing goes through it
    expect(byName(listing!, 'pwn')!.type).toBe('dir');
    expect(byName(listing!, 'pwn/y')!.type).toBe('file');
    const layout2 = await image([tarOf([symlink('pwn', outside)]), tarOf([file('pwn/y', 'later')])]);
    const two = await exportTar(layout2);
    expect(byName(two.listing!, outside.slice(1) + '/y')?.type).toBe('file');
    const d = join(await tempDir(), 'rootfs');
    await ok(['export', `oci:${layout2}:t`, '--dir', d]);
    expect(await readdir(outside)).toEqual([]);
  });

  it('A6: a symlink named "." or "/" is refused with exit 3', async () => {
    await Promise.all([
      refusedByCli([tarOf([symlink('.', '/tmp')])], 3, /entry "\." would replace the root directory with a symlink/),
      refused([tarOf([symlink('/', '/tmp')])], 3, /absolute path|would replace the root/),
      refused([tarOf([symlink('./', '/tmp')])], 3, /would replace the root directory/),
      refused([tarOf([file('a/..', 'x')])], 3, /would replace the root directory with a file/),
    ]);
  });

  it('A7: a hardlink to ../../etc/shadow is refused naming the entry', async () => {
    await refusedByCli([tarOf([hardlink('shadow', '../../etc/shadow')])], 3, /hardlink "shadow" points outside the root \("\.\.\/\.\.\/etc\/shadow"\)/);
  });

  it('A7: a hardlink to an absolute path resolves inside the root', async () => {
    const layout = await image([tarOf([dir('etc/'), file('etc/passwd', 'root:x:0:0\n'), hardlink('copy', '/etc/passwd')])]);
    const { r, listing } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(0);
    // one inode, two names: the first in tree order carries the content
    expect(byName(listing!, 'copy')).toMatchObject({ type: 'file', size: 11 });
    expect(byName(listing!, 'etc/passwd')).toMatchObject({ type: 'hardlink', linkname: 'copy' });
  });

  it('A7: a hardlink to a missing target is refused naming the entry', async () => {
    await Promise.all([
      refused([tarOf([hardlink('ghost', 'nowhere/file')])], 3, /hardlink "ghost" points at "nowhere\/file", which does not exist/),
      refused([tarOf([dir('d/'), hardlink('dl', 'd')])], 3, /points at the directory "d"/),
    ]);
  });

  it('A8: a hardlink whose target a later layer deletes keeps its content', async () => {
    const layout = await image([tarOf([file('a', 'original'), hardlink('b', 'a')]), tarOf([file('.wh.a', '')])]);
    const { r, listing } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(0);
    expect(names(listing!)).toEqual(['b']);
    expect(byName(listing!, 'b')).toMatchObject({ type: 'file', size: 8 });
  });

  it('A9: a bare ".wh.", ".wh..." and a whiteout outside the root are refused as invalid whiteouts', async () => {
    await Promise.all([
      refusedByCli([tarOf([file('.wh.', '')])], 3, /invalid whiteout "\.wh\."/),
      refused([tarOf([dir('etc/'), file('etc/.wh..', '')])], 3, /invalid whiteout "etc\/\.wh\.\."/),
      refused([tarOf([file('.wh...', '')])], 3, /invalid whiteout "\.wh\.\.\."/),
      refused([tarOf([file('../.wh.x', '')])], 3, /invalid whiteout "\.\.\/\.wh\.x": outside the root/),
      refused([tarOf([file('/etc/.wh.passwd', '')])], 3, /invalid whiteout "\/etc\/\.wh\.passwd"/),
    ]);
  });

  it('A10: an opaque directory hides lower content but keeps its own layer; a whiteout then a re-created subtree', async () => {
    const layout = await image([
      tarOf([dir('d/'), file('d/lower', 'l'), dir('a/'), file('a/old', 'o')]),
      tarOf([dir('d/'), file('d/upper', 'u'), file('d/.wh..wh..opq', ''), file('.wh.a', ''), dir('a/'), file('a/baz', 'b'), file('.wh.d-gone', '')]),
    ]);
    const { r, listing } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(0);
    expect(names(listing!).sort()).toEqual(['a', 'a/baz', 'd', 'd/upper']);
  });

  it('A10: a whiteout never removes an entry of its own layer, wherever it appears', async () => {
    const layout = await image([tarOf([file('x', 'lower')]), tarOf([file('x', 'upper'), file('.wh.x', '')])]);
    const { listing } = await exportTar(layout);
    expect(byName(listing!, 'x')!.size).toBe(5);
    expect(names(listing!)).toEqual(['x']);
  });

  it('A11: the two-layer symlink-then-write attack (CVE-2025-45582 shape) stays in the root', async () => {
    const home = join(await tempDir(), 'home');
    await mkdir(join(home, '.ssh'), { recursive: true });
    const layout = await image([tarOf([symlink('x', `../../../../../../../../..${home}/.ssh`)]), tarOf([file('x/authorized_keys', 'ssh-ed25519 AAAA attacker')])]);
    const { r, listing } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(0);
    expect(names(listing!)).toContain(`${home.slice(1)}/.ssh/authorized_keys`);
    expect(names(listing!).every((n) => !n.startsWith('/') && !n.split('/').includes('..'))).toBe(true);
    const d = join(await tempDir(), 'rootfs');
    await ok(['export', `oci:${layout}:t`, '--dir', d]);
    expect(await readdir(join(home, '.ssh'))).toEqual([]);
    expect(await readFile(join(d, home, '.ssh', 'authorized_keys'), 'utf8')).toMatch(/attacker/);
  });

  it('A12: device nodes, FIFOs, setuid/setgid and security.capability are kept as tar headers; --no-setuid strips', async () => {
    const cap = Buffer.from('0100000200040000000000000000000000000000', 'hex');
    const layout = await image([
      tarOf([
        dir('dev/'),
        { name: 'dev/null', type: 'char', mode: 0o666, devmajor: 1, devminor: 3 },
        { name: 'dev/sda', type: 'block', mode: 0o660, devmajor: 8, devminor: 0 },
        { name: 'run.fifo', type: 'fifo', mode: 0o600 },
        file('suid', '#!', { mode: 0o4755 }),
        file('sgid', '#!', { mode: 0o2755 }),
        file('ping', 'elf', { mode: 0o755, pax: [['SCHILY.xattr.security.capability', cap]] }),
      ]),
    ]);
    const { listing } = await exportTar(layout);
    expect(byName(listing!, 'dev/null')).toMatchObject({ type: 'char', devmajor: 1, devminor: 3, mode: 0o666 });
    expect(byName(listing!, 'dev/sda')).toMatchObject({ type: 'block', devmajor: 8, devminor: 0 });
    expect(byName(listing!, 'run.fifo')).toMatchObject({ type: 'fifo' });
    expect(byName(listing!, 'suid')!.mode).toBe(0o4755);
    expect(byName(listing!, 'sgid')!.mode).toBe(0o2755);
    expect(byName(listing!, 'ping')!.xattrs).toEqual({ 'security.capability': cap.toString('base64') });
    const stripped = await exportTar(layout, { noSetuid: true });
    expect(byName(stripped.listing!, 'suid')!.mode).toBe(0o755);
    expect(byName(stripped.listing!, 'sgid')!.mode).toBe(0o755);
    const d = join(await tempDir(), 'rootfs');
    const r = await ok(['export', `oci:${layout}:t`, '--dir', d]);
    expect(r.stderr).toMatch(/skipped 3 device node\(s\)\/FIFO\(s\)/);
    expect(await readdir(join(d, 'dev'))).toEqual([]);
    expect((await lstat(join(d, 'suid'))).mode & 0o7777).toBe(0o4755);
    // The CLI flags, to a tar and to a directory, without root: --no-setuid and the catalogue's --strip-setuid.
    for (const flag of ['--no-setuid', '--strip-setuid']) {
      const tar = join(await tempDir(), 'fs.tar');
      await ok(['export', `oci:${layout}:t`, flag, '-o', tar]);
      const modes = await listTar(tar);
      expect(byName(modes, 'suid')!.mode, flag).toBe(0o755);
      expect(byName(modes, 'sgid')!.mode, flag).toBe(0o755);
      const d3 = join(await tempDir(), 'rootfs');
      await ok(['export', `oci:${layout}:t`, flag, '--dir', d3]);
      expect((await lstat(join(d3, 'suid'))).mode & 0o7777, flag).toBe(0o755);
    }
    if (isRoot()) {
      const d2 = join(await tempDir(), 'rootfs');
      await ok(['export', `oci:${layout}:t`, '--dir', d2, '--devices', '--no-setuid']);
      expect((await lstat(join(d2, 'dev', 'null'))).isCharacterDevice()).toBe(true);
      expect((await lstat(join(d2, 'run.fifo'))).isFIFO()).toBe(true);
      expect((await lstat(join(d2, 'suid'))).mode & 0o7777).toBe(0o755);
    }
  });

  it('A13: 10k-deep directories are refused at the limit', async () => {
    const deep: TEntry[] = [];
    let p = '';
    for (let i = 0; i < 10_000; i++) {
      p += 'd/';
      if (i % 500 === 0 || i === 9999) deep.push(dir(p));
    }
    await refusedByCli([tarOf(deep)], 3, /exceeds limit of (1024|4096)/);
  });

  it('A13: a 1 MiB PAX path is refused at the limit', async () => {
    await Promise.all([
      refused([tarOf([file('x', 'x', { pax: [['path', 'a/'.repeat(1 << 19)]] })])], 3, /PAX header of \d+ bytes exceeds limit of 1048576 bytes/),
      refused([tarOf([file('x', 'x', { pax: [['path', 'a'.repeat(5000)]] })])], 3, /exceeds limit of 4096 bytes/),
    ]);
  });

  it('A14: duplicate paths in one layer: the last one wins', async () => {
    const layout = await image([tarOf([file('dup', 'first'), file('dup', 'second!')])]);
    const { listing } = await exportTar(layout);
    expect(listing!.filter((e) => e.name === 'dup')).toHaveLength(1);
    expect(byName(listing!, 'dup')!.size).toBe(7);
  });

  it('B3: a decompression bomb stops at the budget with exit 3', async () => {
    // 64 MiB of zeros gzip to ~64 KiB; the budget is lowered so the test stays small.
    const bomb = { tar: Buffer.alloc(64 << 20), compression: 'gzip' as const };
    await refusedByCli([bomb], 3, /decompressed data exceeds limit of 8388608 bytes/, { FERRY_MAX_LAYER_BYTES: String(8 << 20) });
    expect(layerBudget(1000, {})).toBe(2 ** 30);
    expect(layerBudget(1 << 20, {})).toBe(2 ** 31);
  });

  it('B3: a sparse file whose holes would expand past the budget is a bomb too (a few hundred bytes stood for GiBs of zeros)', async () => {
    const d = await tempDir();
    await writeFile(join(d, 'zeros'), '');
    await truncate(join(d, 'zeros'), 64 << 20);
    const tarPath = join(d, 'sparse.tar');
    await mustRun('tar', ['--sparse', '--format=gnu', '-C', d, '-cf', tarPath, 'zeros']);
    const tar = await readFile(tarPath);
    expect(tar.length).toBeLessThan(64 << 10);
    await refusedByCli([{ tar }], 3, /its files hold more than 8388608 bytes once sparse files are expanded \("zeros" at byte 0; a decompression bomb\?\)/, { FERRY_MAX_LAYER_BYTES: String(8 << 20) });
    const layout = await image([{ tar }]);
    const outDir = join(await tempDir(), 'tree');
    const r = await run(['export', `oci:${layout}:t`, '--dir', outDir], { FERRY_MAX_LAYER_BYTES: String(8 << 20) });
    expect(r.code).toBe(3);
    expect(await readdir(outDir).catch(() => [])).toEqual([]);
  });

  it('--dir keeps times before 1970 (Node reads a negative number as "now")', async () => {
    const old = (name: string, extra: Partial<TEntry> = {}): TEntry => ({ name, pax: [['mtime', Buffer.from('-315619200.5')]], ...extra });
    const layout = await image([{ tar: tarOf([old('d', { type: 'dir' }), old('d/f', { content: 'hi' }), old('d/l', { type: 'symlink', linkname: 'f' })]) }]);
    const out = join(await tempDir(), 'tree');
    const r = await run(['export', `oci:${layout}:t`, '--dir', out]);
    expect(r.code, r.stderr).toBe(0);
    for (const p of ['d', 'd/f', 'd/l']) expect((await lstat(join(out, p))).mtimeMs, p).toBe(-315619200500);
  });

  it('B6: a layer whose content does not match its diff_id, or a diff_ids count that differs, exits 4', async () => {
    await Promise.all([
      refusedByCli([{ tar: tarOf([file('a', 'x')]), diffId: `sha256:${'0'.repeat(64)}` }], 4, /uncompressed content hashes to sha256:[0-9a-f]{64}, but the config's diff_id is sha256:0{64}/),
      refused([tarOf([file('a', 'x')]), tarOf([file('b', 'y')])], 4, /lists 1 diff_ids for 2 layers/, { diffIdCount: 1 }),
    ]);
  });

  it('B1: a corrupted layer blob exits 4 naming the digest, even when the corruption breaks gzip first', async () => {
    const layout = await image([tarOf([file('a', 'x'.repeat(5000))])]);
    const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
    const manifest = JSON.parse(await readFile(blobFile(layout, index.manifests[0].digest), 'utf8'));
    const layer = manifest.layers[0].digest as string;
    await flipByte(blobFile(layout, layer), 30);
    const { r, outDir } = await exportTar(layout);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(layer);
    expect(await readdir(outDir)).toEqual([]);
  });

  it('B5: a layer whose bytes are zstd but whose media type says gzip is read by its bytes, with a warning', async () => {
    const tar = tarOf([file('z', 'zstd bytes')]);
    const layout = await image([{ tar, compression: 'zstd', mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }]);
    const out = join(await tempDir(), 'out.tar');
    const r = await ok(['export', `oci:${layout}:t`, '-o', out]);
    expect(r.stderr).toMatch(/says gzip but the bytes are zstd/);
    expect(names(await listTar(out))).toEqual(['z']);
  });

  it('refuses non-layer media types (an artifact) with exit 3', async () => {
    await refused([{ tar: Buffer.from('{}'), compression: 'none', mediaType: 'application/vnd.in-toto+json' }], 3, /not a filesystem layer/);
  });

  it('--dir writes many files at once and still gets every mode, owner, time, hardlink and byte right, whatever the umask', async () => {
    const modes = [0o644, 0o600, 0o444, 0o755, 0o700, 0o640, 0o000, 0o4755, 0o2755, 0o1644, 0o666, 0o777];
    const big = (seed: number, size: number) => Buffer.alloc(size, seed);
    const entries: TEntry[] = [dir('d/'), dir('d/ro/', { mode: 0o555 }), dir('d/locked/', { mode: 0o700 })];
    for (let i = 0; i < 300; i++) {
      const where = i % 3 === 0 ? 'd' : i % 3 === 1 ? 'd/ro' : 'd/locked';
      entries.push(file(`${where}/f${i}`, `content ${i} `.repeat(i % 17), { mode: modes[i % modes.length], uid: i % 2 ? 1000 + i : 0, gid: i % 5, mtime: 1600000000 + i }));
    }
    // Right at the boundary between files written whole in the background and streamed ones.
    entries.push(file('d/exact', big(1, 1 << 20), { mode: 0o640, mtime: 1600000999 }));
    entries.push(file('d/over', big(2, (1 << 20) + 1), { mode: 0o4750, mtime: 1600000998 }));
    entries.push(hardlink('d/exact-link', 'd/exact'), hardlink('d/over-link', 'd/over'), hardlink('d/ro/f1-link', 'd/ro/f1'));
    const layout = await image([tarOf(entries)]);
    const tar = join(await tempDir(), 'x.tar');
    await ok(['export', `oci:${layout}:t`, '-o', tar]);
    const d = join(await tempDir(), 'rootfs');
    const r = await ferry(['export', `oci:${layout}:t`, '--dir', d], { env: { FERRY_STORE: noStore }, wrap: ['sh', '-c', 'umask 077 && exec "$@"', 'sh'] });
    expect(r.code, r.stderr).toBe(0);
    const owner = (t: TreeEntry) => (isRoot() ? t : { ...t, uid: process.getuid!(), gid: process.getgid!() });
    const fromTar = treeFromTar(await listTar(tar)).map(owner);
    expect(await scanTree(d)).toEqual(fromTar);
    for (const [path, mtime] of [['d/f0', 1600000000], ['d/ro/f1', 1600000001], ['d/locked/f299', 1600000299], ['d/exact', 1600000999], ['d/over', 1600000998]] as const) {
      expect((await lstat(join(d, path))).mtime.getTime() / 1000, path).toBe(mtime);
    }
    expect(((await lstat(join(d, 'd/ro'))).mode & 0o7777).toString(8)).toBe('555');
  });

  it('--dir: a file the filesystem cannot create (a 300-byte name) while others are being written is exit 7 naming it, and nothing is left', async () => {
    const entries: TEntry[] = [dir('a/')];
    for (let i = 0; i < 60; i++) entries.push(file(`a/f${i}`, 'x'.repeat(i)));
    entries.push(file(`a/${'n'.repeat(300)}`, 'too long a name'));
    for (let i = 60; i < 120; i++) entries.push(file(`a/f${i}`, 'y'));
    const layout = await image([tarOf(entries)]);
    const target = join(await tempDir(), 'new-root');
    const r = await run(['export', `oci:${layout}:t`, '--dir', target]);
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/ENAMETOOLONG: .*new-root\/a\/nnnn.* \(a name is too long for this filesystem\)/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
    await expect(lstat(target)).rejects.toThrow(/ENOENT/);
  });

  it('--dir refuses a non-empty directory, and removes what it wrote when a layer is refused', async () => {
    const d = await tempDir();
    await writeFile(join(d, 'existing'), 'x');
    const r = await run(['export', `oci:${TESTDATA}:layers`, '--dir', d]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/is not empty/);
    const layout = await image([tarOf([file('a', 'x')]), tarOf([file('../evil', 'x')])]);
    const target = join(await tempDir(), 'new-root');
    const bad = await run(['export', `oci:${layout}:t`, '--dir', target]);
    expect(bad.code).toBe(3);
    await expect(lstat(target)).rejects.toThrow(/ENOENT/);
  });
});

describe('ferry export: large layers and interruption', () => {
  it('a 100k-file layer plus a 32 MiB file exports with bounded memory (RSS measured)', async () => {
    const layout = join(await tempDir(), 'layout');
    function* entries(): Generator<TEntry | { name: string; bigFile: number }> {
      yield dir('many/');
      for (let i = 0; i < 100; i++) {
        yield dir(`many/${i}/`);
        for (let j = 0; j < 1000; j++) yield file(`many/${i}/f${j}`, `${i}:${j}`);
      }
      yield { name: 'big.bin', bigFile: 32 << 20 };
    }
    const blob = await writeTarBlob(layout, entries());
    await makeTarLayout(layout, [{ tag: 't', layers: [{ file: blob }] }]);
    const out = join(await tempDir(), 'x.tar');
    const r = await ferry(['export', `oci:${layout}:t`, '-o', out], { env: { FERRY_STORE: noStore }, wrap: ['/usr/bin/time', '-f', 'MAXRSS %M'] });
    expect(r.code, r.stderr).toBe(0);
    const rssMiB = Number(/MAXRSS (\d+)/.exec(r.stderr)![1]) / 1024;
    process.stderr.write(`export of 100k files + 32 MiB: peak RSS ${rssMiB.toFixed(0)} MiB\n`);
    expect(rssMiB).toBeLessThan(400);
    const st = await lstat(out);
    expect(st.size).toBeGreaterThan((32 << 20) + 100_000 * 1024);
    expect(r.stdout).toMatch(/100102 entries/);
  }, 120_000);

  it('E7: a reader that goes away (EPIPE) ends ferry with a clean non-zero exit, no stack trace', async () => {
    const layout = join(await tempDir(), 'layout');
    const blob = await writeTarBlob(layout, [{ name: 'big.bin', bigFile: 32 << 20 }]);
    await makeTarLayout(layout, [{ tag: 't', layers: [{ file: blob }] }]);
    const child = spawn(join(import.meta.dirname, '..', 'bin', 'ferry'), ['export', `oci:${layout}:t`], { env: { ...process.env, FERRY_STORE: noStore } });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    expect(code).not.toBe(0);
    expect(code).not.toBeNull();
    expect(stderr).toMatch(/EPIPE|went away/);
    expect(stderr).not.toMatch(/\n\s+at /);
  });

  it('F1: SIGINT during an export exits 130 and leaves no output and no temp file', async () => {
    const layout = join(await tempDir(), 'layout');
    const blob = await writeTarBlob(layout, [{ name: 'random.bin', bigFile: 48 << 20 }]);
    await makeTarLayout(layout, [{ tag: 't', layers: [{ file: blob }] }]);
    const outDir = await tempDir();
    const child = spawn(join(import.meta.dirname, '..', 'bin', 'ferry'), ['export', `oci:${layout}:t`, '-o', join(outDir, 'x.tar.gz')], { env: { ...process.env, FERRY_STORE: noStore } });
    let stderr = '';
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    const closed = new Promise<number | null>((r) => child.on('close', (c) => r(c)));
    for (let i = 0; i < 400 && (await readdir(outDir)).length === 0; i++) await new Promise((r) => setTimeout(r, 10));
    // gzip of 48 MiB of random bytes takes over a second here: the signal lands while it writes.
    expect(await readdir(outDir), 'the export never started writing').not.toEqual([]);
    const started = Date.now();
    child.kill('SIGINT');
    const code = await closed;
    expect(Date.now() - started).toBeLessThan(2000);
    expect(code, stderr).toBe(130);
    expect(await readdir(outDir)).toEqual([]);
  });
});
