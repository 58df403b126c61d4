import { cp, mkdir, open, readdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import zlib from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadArchive, verifyArchives } from '../src/archive/operations.js';
import { readTar } from '../src/archive/tar.js';
import { exitCodeFor, toFerryError } from '../src/errors.js';
import { setWarningSink } from '../src/log.js';
import { ociImage, legacyArchive, layerTar, sha, tarBytes, writeTar, type Entry } from './helpers/archives.js';
import { failure } from './helpers/assert.js';
import { ferry, finish, start, type RunResult } from './helpers/cli.js';
import { blobDigests, blobFile, indexEntries, TAGS, testdataImages, type ImageInfo, type Tag } from './helpers/expected-images.js';
import { TESTDATA, tempDir, tempFilesIn } from './helpers/fs.js';
import { makeLayout, type MadeImage } from './helpers/images.js';
import { tarFile } from './helpers/tar-list.js';

const REPO = 'example.com/ferry/testdata';
let images: Record<Tag, ImageInfo>;
let noStore: string;
let fullStore: string;
const warnings: string[] = [];
setWarningSink((m) => warnings.push(m));

function run(args: string[], store?: string): Promise<RunResult> {
  return ferry(store ? ['--store', store, ...args] : args, { env: { FERRY_STORE: noStore } });
}

async function ok(args: string[], store?: string): Promise<RunResult> {
  const r = await run(args, store);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

async function freshStore(): Promise<string> {
  return join(await tempDir(), 'store');
}

/** The names and digests index.json of a store holds. */
async function named(store: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await indexEntries(store)) out[e.annotations?.['io.containerd.image.name'] ?? e.annotations?.['org.opencontainers.image.ref.name'] ?? e.digest] = e.digest;
  return out;
}

async function tarNames(file: string): Promise<string[]> {
  const out: string[] = [];
  const raw = await readFile(file);
  const body = raw[0] === 0x1f ? zlib.gunzipSync(raw) : raw[0] === 0x28 ? zlib.zstdDecompressSync(raw) : raw;
  for await (const e of readTar(Readable.from([body]), { where: file })) out.push(e.name);
  return out;
}

/** Flips a byte `offset` bytes into the data of entry `name` of an uncompressed tar. */
async function flipEntry(file: string, name: string, offset: number, xor = 0xff): Promise<void> {
  const b = await readFile(file);
  const at = b.indexOf(Buffer.from(`${name}\0`));
  expect(at, `${name} in ${file}`).toBeGreaterThanOrEqual(0);
  b[at + 512 + offset]! ^= xor;
  await writeFile(file, b);
}

/** Writes an uncompressed tar again without its entries named `name`. */
async function dropEntry(file: string, name: string): Promise<void> {
  const entries: Entry[] = [];
  for await (const e of readTar(Readable.from([await readFile(file)]), { where: file })) {
    if (e.type === 'dir' || e.name === name) continue;
    entries.push({ name: e.name, data: Buffer.concat(await e.body().toArray()) });
  }
  await writeTar(file, entries);
}

/** A volume set saved from a new layout: its directory, its volumes in order, the image, and which volume holds each entry. */
async function volumeSet(layers: number[], volumeSize: string): Promise<{ dir: string; files: string[]; image: MadeImage; volumeOf: Map<string, number> }> {
  const dir = await tempDir();
  const [image] = await makeLayout(join(dir, 'src'), [{ tag: 'v', layers }]);
  await ok(['save', '-q', `oci:${join(dir, 'src')}:v`, '-o', join(dir, 'set.tar'), '--volume-size', volumeSize], fullStore);
  const files = (await readdir(dir)).filter((n) => n.startsWith('set.')).sort().map((f) => join(dir, f));
  const volumeOf = new Map<string, number>();
  for (const [i, f] of files.entries()) for (const n of await tarNames(f)) if (!n.startsWith('ferry-volume')) volumeOf.set(n, i + 1);
  return { dir, files, image: image!, volumeOf };
}

/** A copy of a set's volumes (in a new directory) with `damage` done to them. */
async function damagedCopy(files: string[], damage: (copies: string[]) => Promise<void>): Promise<string[]> {
  const dir = await tempDir();
  const copies = files.map((f) => join(dir, f.slice(f.lastIndexOf('/') + 1)));
  for (const [i, f] of files.entries()) await cp(f, copies[i]!);
  await damage(copies);
  return copies;
}

/** Loads in-process; on failure returns the exit code the CLI would give and the message. */
async function loadFails(file: string | string[], env?: Record<string, string>): Promise<{ exit: number; message: string; store: string }> {
  const store = await freshStore();
  const saved = { ...process.env };
  Object.assign(process.env, env ?? {});
  try {
    const err = toFerryError(await failure(loadArchive({ inputs: Array.isArray(file) ? file : [file], storeDir: store })));
    return { exit: exitCodeFor(err), message: err.message, store };
  } finally {
    for (const k of Object.keys(env ?? {})) if (saved[k] === undefined) delete process.env[k];
  }
}

/** Nothing named, no blob and no temp file left behind (a store the failed load created is gone). */
async function expectUntouched(store: string): Promise<void> {
  if (!(await stat(store).catch(() => undefined))) return;
  expect((await indexEntries(store)).length).toBe(0);
  expect(await blobDigests(store)).toEqual([]);
  expect(await tempFilesIn(store)).toEqual([]);
}

beforeAll(async () => {
  images = await testdataImages();
  noStore = join(await tempDir(), 'no-default-store');
  fullStore = await freshStore();
  for (const tag of TAGS) await ok(['copy', '-q', `oci:${TESTDATA}:${tag}`, `${REPO}:${tag}`], fullStore);
});

describe('save and load', () => {
  it('round trip: the five testdata images (the multi index included) keep every digest through save -> load', async () => {
    const dir = await tempDir();
    const file = join(dir, 'all.tar');
    const saved = await ok(['save', ...TAGS.map((t) => `${REPO}:${t}`), '-o', file], fullStore);
    expect(saved.stdout).toContain(`Wrote ${file}`);
    const names = await tarNames(file);
    // One OCI layout and one docker archive at once; shared blobs stored once.
    expect(names).toEqual(expect.arrayContaining(['oci-layout', 'index.json', 'manifest.json', 'repositories']));
    expect(new Set(names).size).toBe(names.length);
    const index = JSON.parse((await tarFile(file, 'index.json')).toString());
    expect(index.manifests.map((m: { annotations: Record<string, string> }) => m.annotations)).toEqual(
      TAGS.map((t) => ({ 'org.opencontainers.image.ref.name': t, 'io.containerd.image.name': `${REPO}:${t}` })),
    );
    const manifest = JSON.parse((await tarFile(file, 'manifest.json')).toString());
    expect(manifest.map((e: { RepoTags: string[] }) => e.RepoTags[0])).toEqual(TAGS.map((t) => `${REPO}:${t}`));
    for (const e of manifest) for (const p of [e.Config, ...e.Layers]) expect(names).toContain(p);

    const store = await freshStore();
    const loaded = await ok(['load', '-i', file], store);
    expect(loaded.stdout.trim().split('\n')).toEqual(TAGS.map((t) => `Loaded image: ${REPO}:${t}`));
    const got = await named(store);
    for (const t of TAGS) expect(got[`${REPO}:${t}`], t).toBe(images[t].digest);
    expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
    expect((await ok(['verify', file])).stdout).toMatch(/5 image\(s\).* 0 problem\(s\)/);
  });

  it('whole-archive compression by suffix or --compress/--level; load detects it by magic bytes', async () => {
    const dir = await tempDir();
    const cases: Array<[string, string[], number[]]> = [
      ['a.tar.gz', [], [0x1f, 0x8b]],
      ['a.tgz', ['--level', '1'], [0x1f, 0x8b]],
      ['a.tar.zst', [], [0x28, 0xb5]],
      ['a.tar', ['--compress', 'zstd', '--level', '3'], [0x28, 0xb5]],
    ];
    for (const [name, extra, magic] of cases) {
      const file = join(dir, name);
      await ok(['save', '-q', `${REPO}:layers`, `${REPO}:zstd`, '-o', file, ...extra], fullStore);
      const head = Buffer.alloc(2);
      const fh = await open(file);
      await fh.read(head, 0, 2, 0);
      await fh.close();
      expect([...head], name).toEqual(magic);
      const store = await freshStore();
      await ok(['load', '-q', '-i', file], store);
      expect(await named(store)).toEqual({ [`${REPO}:layers`]: images.layers.digest, [`${REPO}:zstd`]: images.zstd.digest });
    }
  });

  it('--format oci writes a pure OCI archive; -o - writes stdout and load -i - reads stdin', async () => {
    const dir = await tempDir();
    const file = join(dir, 'oci.tar');
    await ok(['save', '--format', 'oci', `${REPO}:multi`, '-o', file], fullStore);
    const names = await tarNames(file);
    expect(names).not.toContain('manifest.json');
    expect(names).toContain('index.json');

    const piped = join(dir, 'piped.tar.zst');
    const r = await ferry(['--store', fullStore, 'save', `${REPO}:docker`, '--compress', 'zstd', '-o', '-'], { env: { FERRY_STORE: noStore }, wrap: ['sh', '-c', `exec "$0" "$@" > ${piped}`] });
    expect(r.code, r.stderr).toBe(0);
    // No -i, `-i -` and `--input -` (yargs used to refuse a lone `-` as an unknown argument).
    for (const input of [[], ['-i', '-'], ['--input', '-']]) {
      const store = await freshStore();
      const l = await ferry(['--store', store, 'load', ...input], { env: { FERRY_STORE: noStore }, wrap: ['sh', '-c', `exec "$0" "$@" < ${piped}`] });
      expect(l.code, l.stderr).toBe(0);
      expect(l.stdout).toContain(`Loaded image: ${REPO}:docker`);
      expect((await named(store))[`${REPO}:docker`]).toBe(images.docker.digest);
    }
  });

  it('load -i A -i B loads several archives one after another; a bad one stops there and says what was loaded', async () => {
    const dir = await tempDir();
    const [a, b, c] = ['a.tar', 'b.tar.zst', 'c.tar'].map((f) => join(dir, f));
    await ok(['save', '-q', `${REPO}:plain`, '-o', a!], fullStore);
    await ok(['save', '-q', `${REPO}:multi`, '-o', b!], fullStore);
    await ok(['save', '-q', `${REPO}:zstd`, '-o', c!], fullStore);
    const store = await freshStore();
    const r = await ok(['load', '-i', a!, '-i', b!], store);
    expect(r.stdout.trim().split('\n')).toEqual([`Loaded image: ${REPO}:plain`, `Loaded image: ${REPO}:multi`]);
    const cut = join(dir, 'cut.tar');
    await writeFile(cut, (await readFile(c!)).subarray(0, 1500));
    const other = await freshStore();
    const bad = await run(['load', '-i', c!, '-i', cut, '-i', a!], other);
    expect(bad.code).toBe(4);
    expect(bad.stderr).toContain(`(${c} was loaded before it; nothing of ${cut} was)`);
    expect(Object.keys(await named(other))).toEqual([`${REPO}:zstd`]);
    const tagged = await run(['load', '-i', a!, '-i', c!, '--tag', 'x:1'], other);
    expect(tagged.code).toBe(2);
    expect(tagged.stderr).toContain('--tag names one image, but 2 archives were given');
  });

  it('load --json counts every blob it stored or found there, small ones (held in memory) included', async () => {
    const file = join(await tempDir(), 'plain.tar');
    await ok(['save', '-q', `${REPO}:plain`, '-o', file], fullStore);
    const store = await freshStore();
    const lines = (await ok(['load', '--json', '-i', file], store)).stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string });
    const first = lines.at(-1) as unknown as { blobs: unknown };
    // One blob-done per blob stored, small ones too (they had no events).
    expect(lines.filter((l) => l.event === 'blob-done')).toHaveLength(3);
    const files = await blobDigests(store);
    expect(files).toHaveLength(3);
    let bytes = 0;
    for (const d of files) bytes += (await stat(join(store, 'blobs', ...d.split(':')))).size;
    expect(first.blobs).toEqual({ stored: 3, skipped: 0, bytesStored: bytes });
    const againLines = (await ok(['load', '--json', '-i', file], store)).stdout.trim().split('\n').map((l) => JSON.parse(l) as { event: string; blobs?: unknown });
    expect(againLines.at(-1)!.blobs).toEqual({ stored: 0, skipped: 3, bytesStored: 0 });
    expect(againLines.filter((l) => l.event === 'blob-skip')).toHaveLength(3);
  });

  it('--tag renames the single image an archive holds, and is refused for several (nothing named)', async () => {
    const dir = await tempDir();
    const one = join(dir, 'one.tar');
    const two = join(dir, 'two.tar');
    await ok(['save', '-q', `${REPO}:plain`, '-o', one], fullStore);
    await ok(['save', '-q', `${REPO}:plain`, `${REPO}:zstd`, '-o', two], fullStore);
    const store = await freshStore();
    const r = await ok(['load', '-i', one, '--tag', 'registry.local:5000/renamed:v2'], store);
    expect(r.stdout.trim()).toBe('Loaded image: registry.local:5000/renamed:v2');
    expect(await named(store)).toEqual({ 'registry.local:5000/renamed:v2': images.plain.digest });
    const bad = await run(['load', '-i', two, '--tag', 'x:1'], store);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--tag names one image.*holds 2/);
    expect(Object.keys(await named(store))).toEqual(['registry.local:5000/renamed:v2']);
  });

  it('two different images under one name are refused before anything is written; the same image twice is saved once', async () => {
    const dir = await tempDir();
    const a = join(dir, 'a.tar');
    const b = join(dir, 'b.tar');
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, `oci-archive:${a}:example.com/same:1`]);
    await ok(['copy', '-q', `oci:${TESTDATA}:zstd`, `oci-archive:${b}:example.com/same:1`]);
    const out = join(dir, 'both.tar');
    const r = await run(['save', `oci-archive:${a}`, `oci-archive:${b}`, '-o', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`two different images would both be named example.com/same:1 in the archive: ${images.plain.digest} (from oci-archive:${a}) and ${images.zstd.digest} (from oci-archive:${b})`);
    expect((await readdir(dir)).sort()).toEqual(['a.tar', 'b.tar']);
    const twice = join(dir, 'twice.tar');
    await ok(['save', '-q', `oci-archive:${a}`, `oci-archive:${a}`, '-o', twice]);
    expect((await ok(['verify', twice])).stdout).toContain('1 image(s)');
  });

  it('an image named in an archive whose digest another name shares keeps the name asked for (inspect, copy)', async () => {
    const store = join(await tempDir(), 'store');
    await cp(fullStore, store, { recursive: true });
    await ok(['tag', `${REPO}:plain`, 'other.example/x:7'], store);
    const file = join(await tempDir(), 'two-names.tar');
    await ok(['save', '-q', `${REPO}:plain`, 'other.example/x:7', '-o', file], store);
    for (const ref of [`oci-archive:${file}:7`, `docker-archive:${file}:other.example/x:7`, `oci-archive:${file}:other.example/x:7`]) {
      expect(JSON.parse((await ok(['inspect', ref])).stdout).name, ref).toBe('other.example/x:7');
    }
    expect(JSON.parse((await ok(['inspect', `oci-archive:${file}:plain`])).stdout).name).toBe(`${REPO}:plain`);
    const into = await freshStore();
    await ok(['copy', '-q', `oci-archive:${file}:7`, `oci:${into}`]);
    expect(await named(into)).toEqual({ 'other.example/x:7': images.plain.digest });
  });

  it('-o naming a FIFO or a device writes into it and leaves it in place (save, export, inventory); it used to be renamed over', async () => {
    const { execFileSync, spawn } = await import('node:child_process');
    const dir = await tempDir();
    const fifo = join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    for (const [i, args] of [['save', '-q', `${REPO}:plain`, '-o', fifo], ['export', `${REPO}:plain`, '-o', fifo, '--force'], ['inventory', '-o', fifo]].entries()) {
      const out = join(dir, `out${i}`);
      const reader = spawn('sh', ['-c', `cat "${fifo}" > "${out}"`]);
      const read = new Promise((r) => reader.once('close', r));
      await ok(args, fullStore);
      await read;
      expect((await stat(fifo)).isFIFO(), args.join(' ')).toBe(true);
      expect((await stat(out)).size).toBeGreaterThan(0);
    }
    expect(await tarNames(join(dir, 'out0'))).toContain('index.json');
    expect(JSON.parse(await readFile(join(dir, 'out2'), 'utf8')).ferryInventory).toBe(1);
    expect((await readdir(dir)).sort()).toEqual(['out0', 'out1', 'out2', 'pipe']);
    // The same path as -o /dev/null (not tried here: if it regressed, as root it would replace the
    // machine's /dev/null with a file, as it did once while this was found).
  });

  it('E6: an existing output file is refused without --force and left intact; --force replaces it', async () => {
    const dir = await tempDir();
    const file = join(dir, 'precious.tar');
    await writeFile(file, 'precious');
    const r = await run(['save', `${REPO}:plain`, '-o', file], fullStore);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${file} already exists`);
    expect(r.stderr).toContain('hint: pass --force to replace it');
    expect(await readFile(file, 'utf8')).toBe('precious');
    // copy has no --force: its refusal does not suggest one.
    for (const transport of ['oci-archive', 'docker-archive']) {
      const c = await run(['copy', `oci:${TESTDATA}:plain`, `${transport}:${file}`]);
      expect(c.code).toBe(2);
      expect(c.stderr).toContain(`${file} already exists`);
      expect(c.stderr).toContain('hint: choose another name, or delete the file first');
      expect(c.stderr).not.toContain('--force');
    }
    expect(await readFile(file, 'utf8')).toBe('precious');
    // A failing save with --force leaves the original alone too.
    const failed = await run(['save', '--force', `${REPO}:plain`, `${REPO}:nope`, '-o', file], fullStore);
    expect(failed.code).toBe(2);
    expect(await readFile(file, 'utf8')).toBe('precious');
    await ok(['save', '-q', '--force', `${REPO}:plain`, '-o', file], fullStore);
    expect(await tarNames(file)).toContain('index.json');
    expect((await readdir(dir)).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });

  it('a blob that rotted in the store fails save with exit 4 naming it, after one retry; no archive is written', async () => {
    const store = await freshStore();
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, `${REPO}:plain`], store);
    const layer = images.plain.layers![0]!.digest;
    const fh = await open(join(store, 'blobs', 'sha256', layer.slice(7)), 'r+');
    await fh.write(Buffer.from([0xff]), 0, 1, 40);
    await fh.close();
    const dir = await tempDir();
    const r = await run(['save', `${REPO}:plain`, '-o', join(dir, 'out.tar')], store);
    // The retry used to meet the archive the first attempt had broken: "archive is no longer open
    // for writing", exit 1, with a stack trace.
    expect(r.code, r.stderr).toBe(4);
    // Where, and what to do: it said only "digest mismatch for blob …".
    expect(r.stderr).toContain(`digest mismatch for blob ${layer} in ${store}`);
    expect(r.stderr).toContain(`hint: the copy in ${store} is damaged: ferry verify ${store} says what else is`);
    expect(r.stderr).not.toContain('no longer open');
    expect(await readdir(dir)).toEqual([]);
  });

  it('E7: save -o - into a pipe whose reader exits early fails (non-zero) with a message, no stack trace', async () => {
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [24 << 20] }]);
    const r = await ferry(['save', `oci:${src}:big`, '-o', '-'], {
      env: { FERRY_STORE: noStore },
      wrap: ['bash', '-c', 'set -o pipefail; "$0" "$@" | head -c 1000 > /dev/null'],
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/standard output was closed|EPIPE/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });

  it('-o /dev/fd/1 and /proc/self/fd/1 (like /dev/stdout) are standard output: redirected to a file, piped into a reader that leaves (save, export, inventory)', async () => {
    // /dev/stdout itself is the same case but not tried here: if it regressed, as root the rename
    // would replace the machine's /dev/stdout; under /dev/fd and /proc nothing can be created.
    const dir = await tempDir();
    const shell = (cmd: string, args: string[]) => ferry(['--store', fullStore, ...args], { env: { FERRY_STORE: noStore }, wrap: ['bash', '-c', `set -o pipefail; "$0" "$@" ${cmd}`] });
    const viaDash = await ok(['save', '-q', `${REPO}:plain`, '-o', join(dir, 'dash.tar')], fullStore);
    expect(viaDash.code).toBe(0);
    for (const path of ['/dev/fd/1', '/proc/self/fd/1']) {
      const file = join(dir, 'redirected.tar');
      const saved = await shell(`> ${file}`, ['save', '-q', `${REPO}:plain`, '-o', path]);
      // Was: "/dev/fd/1 already exists" (exit 2), as the path led to the file stdout went to.
      expect(saved.code, saved.stderr).toBe(0);
      expect(await readFile(file)).toEqual(await readFile(join(dir, 'dash.tar')));
      const exported = await shell(`> ${join(dir, 'rootfs.tar')}`, ['export', '-q', `${REPO}:plain`, '-o', path]);
      expect(exported.code, exported.stderr).toBe(0);
      expect((await tarNames(join(dir, 'rootfs.tar'))).length).toBeGreaterThan(0);
      const inv = await shell(`> ${join(dir, 'inv.json')}`, ['inventory', 'store', '-o', path]);
      expect(inv.code, inv.stderr).toBe(0);
      expect(JSON.parse(await readFile(join(dir, 'inv.json'), 'utf8')).ferryInventory).toBe(1);
    }
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [24 << 20] }]);
    const cut = await shell('| head -c 1000 > /dev/null', ['save', `oci:${src}:big`, '-o', '/dev/fd/1']);
    // The same end as -o -: the status of a tool killed by SIGPIPE, one line, no stack.
    expect(cut.code).toBe(141);
    expect(cut.stderr).toContain('standard output was closed before the output was complete');
    expect(cut.stderr).not.toMatch(/\n\s+at |^Error:/m);
    expect((await readdir(dir)).filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });

  it('-o naming a symbolic link writes through it: the file it names is replaced (--force), the link stays (save, export, inventory)', async () => {
    const { symlink, lstat } = await import('node:fs/promises');
    const dir = await tempDir();
    await mkdir(join(dir, 'real'));
    const link = (name: string, to: string) => symlink(to, join(dir, name));
    await writeFile(join(dir, 'real', 'a.tar'), 'precious');
    await link('a.tar', 'real/a.tar');
    const refused = await run(['save', `${REPO}:plain`, '-o', join(dir, 'a.tar')], fullStore);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('already exists');
    expect(await readFile(join(dir, 'real', 'a.tar'), 'utf8')).toBe('precious');
    await ok(['save', '-q', '--force', `${REPO}:plain`, '-o', join(dir, 'a.tar')], fullStore);
    // Was: the link itself replaced by the archive, the file it named left as it was.
    expect((await lstat(join(dir, 'a.tar'))).isSymbolicLink()).toBe(true);
    expect(await tarNames(join(dir, 'real', 'a.tar'))).toContain('index.json');
    await link('root.tar', 'real/root.tar');
    await ok(['export', '-q', `${REPO}:plain`, '-o', join(dir, 'root.tar')], fullStore);
    expect((await lstat(join(dir, 'root.tar'))).isSymbolicLink()).toBe(true);
    expect((await tarNames(join(dir, 'real', 'root.tar'))).length).toBeGreaterThan(0);
    await writeFile(join(dir, 'real', 'inv.json'), 'old');
    await link('inv.json', 'real/inv.json');
    await ok(['inventory', 'store', '-o', join(dir, 'inv.json')], fullStore);
    expect((await lstat(join(dir, 'inv.json'))).isSymbolicLink()).toBe(true);
    expect(JSON.parse(await readFile(join(dir, 'real', 'inv.json'), 'utf8')).ferryInventory).toBe(1);
    expect([...(await readdir(dir)), ...(await readdir(join(dir, 'real')))].filter((n) => n.startsWith('.tmp-'))).toEqual([]);
  });

  it.skipIf(process.getuid?.() !== 0)('-o through a link another user planted in a shared sticky directory (/tmp) is refused, as the kernel refuses to follow it: the file it names stays', async () => {
    const { chmod, lstat, symlink } = await import('node:fs/promises');
    const shared = await tempDir();
    await chmod(shared, 0o1777);
    const victim = join(await tempDir(), 'passwd');
    await writeFile(victim, 'root:x:0:0\n');
    await symlink(victim, join(shared, 'out.tar'));
    // lchown: the link itself belongs to nobody.
    const { execFileSync } = await import('node:child_process');
    execFileSync('chown', ['-h', '65534:65534', join(shared, 'out.tar')]);
    const r = await run(['save', '--force', `${REPO}:plain`, '-o', join(shared, 'out.tar')], fullStore);
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toContain(`${join(shared, 'out.tar')} is a symbolic link another user made in the shared directory ${shared}: not followed`);
    expect(await readFile(victim, 'utf8')).toBe('root:x:0:0\n');
    expect((await lstat(join(shared, 'out.tar'))).isSymbolicLink()).toBe(true);
  });

  it('save -o FIFO whose reader leaves early: exit 7 naming the pipe, one message, no stack (was exit 1 and an "Error: EPIPE" dump)', async () => {
    const { execFileSync, spawn } = await import('node:child_process');
    const dir = await tempDir();
    const fifo = join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'big', layers: [24 << 20] }]);
    const reader = spawn('sh', ['-c', `head -c 1000 "${fifo}" > /dev/null`]);
    const r = await run(['save', `oci:${src}:big`, '-o', fifo]);
    reader.kill();
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toContain(`${fifo}: the pipe was closed before the archive was complete (EPIPE)`);
    expect(r.stderr).not.toMatch(/\n\s+at |^Error:/m);
    expect((await stat(fifo)).isFIFO()).toBe(true);
  });

  it('a closed stderr (2>&1 | head, a log reader that died) does not stop save, a volume save, copy to oci-archive: or load', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'big', layers: [200_000, 150_000] }]);
    // The parent closes its end of stderr at once: every status line ferry writes meets EPIPE.
    const closedStderr = (args: string[]) => {
      const child = start(args, { env: { FERRY_STORE: noStore } });
      child.stderr!.destroy();
      let stdout = '';
      child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
      child.stdin!.end();
      return new Promise<{ code: number | null; stdout: string }>((resolve) => child.on('close', (code) => resolve({ code, stdout })));
    };
    const runs: Array<[string[], string]> = [
      [['save', `oci:${src}:big`, '-o', join(dir, 'x.tar')], 'x.'],
      [['save', `oci:${src}:big`, '-o', join(dir, 'v.tar'), '--volume-size', '128k'], 'v.'],
      [['copy', `oci:${src}:big`, `oci-archive:${join(dir, 'c.tar')}`], 'c.'],
    ];
    for (const [args, prefix] of runs) {
      const r = await closedStderr(args);
      expect(r.code, args.join(' ')).toBe(0);
      const files = (await readdir(dir)).filter((n) => n.startsWith(prefix));
      expect(files.length, args.join(' ')).toBe(prefix === 'v.' ? 4 : 1);
      await ok(['verify', ...files.map((f) => join(dir, f))]);
    }
    expect(await tempFilesIn(dir)).toEqual([]);
    const store = await freshStore();
    const loaded = await closedStderr(['--store', store, 'load', '-i', join(dir, 'x.tar')]);
    expect(loaded.code).toBe(0);
    expect(loaded.stdout).toContain('Loaded image');
    expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
  });

  it('--compress-layers gzip recompresses layers, says loudly that digests change, and keeps the diff_ids', async () => {
    const dir = await tempDir();
    const file = join(dir, 'gz.tar');
    const r = await ok(['save', `${REPO}:plain`, '--compress-layers', 'gzip', '-o', file], fullStore);
    expect(r.stderr).toMatch(/digests CHANGE/);
    const store = await freshStore();
    await ok(['load', '-q', '-i', file], store);
    const digest = (await named(store))[`${REPO}:plain`]!;
    expect(digest).not.toBe(images.plain.digest);
    const m = JSON.parse((await ok(['inspect', '--raw', digest], store)).stdout);
    expect(m.layers[0].mediaType).toBe('application/vnd.oci.image.layer.v1.tar+gzip');
    expect(m.config.digest).toBe(images.plain.config);
    expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
  });

  it('copy through the oci-archive: and docker-archive: transports (plain and compressed) keeps digests', async () => {
    const dir = await tempDir();
    await ok(['copy', '-q', `oci:${TESTDATA}:multi`, `oci-archive:${join(dir, 'm.tar.gz')}`]);
    await ok(['copy', '-q', `oci-archive:${join(dir, 'm.tar.gz')}:multi`, `oci:${join(dir, 'out')}:m`]);
    expect((await indexEntries(join(dir, 'out')))[0]!.digest).toBe(images.multi.digest);
    await ok(['copy', '-q', `oci:${TESTDATA}:layers`, `docker-archive:${join(dir, 'd.tar')}:example.com/x/y:1`]);
    const manifest = JSON.parse((await tarFile(join(dir, 'd.tar'), 'manifest.json')).toString());
    expect(manifest[0].RepoTags).toEqual(['example.com/x/y:1']);
    await ok(['copy', '-q', `docker-archive:${join(dir, 'd.tar')}:example.com/x/y:1`, `oci:${join(dir, 'out')}:l`]);
    await ok(['copy', '-q', `oci-archive:${join(dir, 'd.tar')}`, `oci:${join(dir, 'out')}:l2`]);
    const digests = (await indexEntries(join(dir, 'out'))).map((e) => e.digest);
    expect(digests).toEqual([images.multi.digest, images.layers.digest, images.layers.digest]);
    const exists = await run(['copy', `oci:${TESTDATA}:plain`, `oci-archive:${join(dir, 'd.tar')}`]);
    expect(exists.code).toBe(2);
    expect(exists.stderr).toContain('already exists');
  });
});

describe('volumes: the smallest size', () => {
  it('a --volume-size under 64K is a usage error with the smallest size to give, not "Run ferry --help"; nothing is written', async () => {
    const dir = await tempDir();
    for (const extra of [[], ['--dry-run']]) {
      const r = await run(['save', `${REPO}:plain`, '-o', join(dir, 'set.tar'), '--volume-size', '4K', ...extra], fullStore);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('--volume-size 4096 is too small: a volume takes at least 65536 bytes (64K)');
      expect(r.stderr).toContain('hint: give --volume-size 64K or more (4G suits FAT32)');
      expect(r.stderr).not.toContain('ferry --help');
    }
    expect(await readdir(dir)).toEqual([]);
    await ok(['save', '-q', `${REPO}:plain`, '-o', join(dir, 'set.tar'), '--volume-size', '64K'], fullStore);
  });
});

describe('volumes', () => {
  it('--volume-size cuts on blob boundaries, splits a larger blob, and every volume is a tar with its own list', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'v', layers: [3 << 20, 200_000, 50_000] }]);
    const base = join(dir, 'set.tar');
    const r = await ok(['save', `oci:${src}:v`, `${REPO}:plain`, '-o', base, '--volume-size', '1M'], fullStore);
    const files = (await readdir(dir)).filter((n) => n.startsWith('set.')).sort();
    expect(files.length).toBeGreaterThanOrEqual(4);
    expect(files[0]).toBe('set.001.tar');
    expect(r.stdout).toContain('set.001.tar');
    for (const f of files) {
      // Below the size, not up to it (FAT32: 4 GiB - 1 byte for --volume-size 4G).
      expect((await stat(join(dir, f))).size).toBeLessThan(1 << 20);
      const names = await tarNames(join(dir, f));
      expect(names[0]).toBe('ferry-volume.json');
      expect(names.at(-1)).toBe('ferry-volume-end.json');
    }
    const all = (await Promise.all(files.map((f) => tarNames(join(dir, f))))).flat();
    expect(all.filter((n) => n.startsWith('ferry-parts/')).length).toBeGreaterThanOrEqual(3);
    // The 200 kB blob fits a volume: it is never cut.
    expect(all.some((n) => n.startsWith('ferry-parts/') && n.includes('/200000/'))).toBe(false);

    const store = await freshStore();
    const shuffled = [...files].reverse().map((f) => join(dir, f));
    const loaded = await ok(['load', ...shuffled.flatMap((f) => ['-i', f])], store);
    expect(loaded.stdout).toContain(`Loaded image: ${REPO}:plain`);
    expect((await named(store))[`${REPO}:plain`]).toBe(images.plain.digest);
    expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
    expect((await ok(['verify', ...shuffled])).stdout).toMatch(/2 image\(s\).* 0 problem\(s\)/);

    // Missing volume 2: named by verify and load; nothing loaded.
    const without = shuffled.filter((f) => !f.endsWith('set.002.tar'));
    const v = await run(['verify', ...without]);
    expect(v.code).toBe(4);
    expect(v.stdout).toContain('volume 2 of the set is missing');
    const empty = await freshStore();
    const l = await run(['load', ...without.flatMap((f) => ['-i', f])], empty);
    expect(l.code).toBe(4);
    expect(l.stderr).toContain('volume 2 of the set is missing');
    // Last volume missing: the set is known to be incomplete.
    const noLast = shuffled.filter((f) => !f.endsWith(files.at(-1)!));
    const l2 = await run(['load', ...noLast.flatMap((f) => ['-i', f])], empty);
    expect(l2.code).toBe(4);
    expect(l2.stderr).toMatch(/is not the last volume/);
    // A first volume alone that ends inside a split blob: that used to be an uncaught stream error.
    const small = join(dir, 'small');
    await makeLayout(small, [{ tag: 's', layers: [300_000] }]);
    await ok(['save', `oci:${small}:s`, '-o', join(dir, 'two.tar'), '--volume-size', '200K'], fullStore);
    for (let i = 0; i < 3; i++) {
      const first = await run(['load', '-i', join(dir, 'two.001.tar')], empty);
      expect(first.code, first.stderr).toBe(4);
      expect(first.stderr).toMatch(/volume 2 and later of the set are missing: two.001.tar is not the last volume/);
      expect(first.stderr).not.toMatch(/\n\s+at /);
    }
    await expectUntouched(empty);

    // One volume alone, not the first: the ones before it are named, not a part "out of order".
    const second = join(dir, 'set.002.tar');
    const alone = await run(['load', '-i', second], empty);
    expect(alone.code).toBe(4);
    expect(alone.stderr).toContain('volume 1 of the set is missing (given: 2)');
    expect(alone.stderr).toContain(`hint: give every volume of the set: -i ${join(dir, 'set.001.tar')} -i ${join(dir, 'set.002.tar')}`);
    expect(alone.stderr).not.toContain('out of order');
    const lastTwo = await run(['load', '-i', join(dir, files.at(-1)!), '-i', join(dir, files.at(-2)!)], empty);
    expect(lastTwo.stderr).toContain(`volumes ${files.length === 4 ? '1, 2' : `1-${files.length - 2}`} of the set are missing`);
    // verify of a partial set: only what is missing, and a hint that fits.
    for (const partial of [[second], [join(dir, 'set.001.tar')]]) {
      const pv = await run(['verify', ...partial]);
      expect(pv.code).toBe(4);
      expect(pv.stdout).toMatch(/1 problem\(s\)/);
      expect(pv.stderr).toContain('give every volume of the set');
      expect(pv.stderr).not.toContain('must be written again');
    }
    // Volumes piped in (one, or all of them concatenated) are refused with what to do instead.
    for (const input of [[join(dir, 'set.001.tar')], files.map((f) => join(dir, f))]) {
      const bytes = Buffer.concat(await Promise.all(input.map((f) => readFile(f))));
      const piped = await ferry(['--store', empty, 'load'], { env: { FERRY_STORE: noStore }, input: bytes });
      expect(piped.code).toBe(2);
      expect(piped.stderr).toContain('standard input is volume 1 of a ferry volume set');
      expect(piped.stderr).toContain('-i NAME.001.tar');
    }
    await expectUntouched(empty);
    // Commands that read an archive read a set too: one volume alone is a set with volumes missing, and
    // the hint names them all as that command takes them.
    const pattern = `'${join(dir, 'set.*.tar')}'`;
    const partial: Array<[string[], string]> = [
      [['inspect', `oci-archive:${second}`], `oci-archive:${pattern}`],
      [['copy', `docker-archive:${second}`, `oci:${join(dir, 'l')}`], `docker-archive:${pattern}`],
      [['inventory', second, '-o', join(dir, 'inv.json')], `ferry inventory ${pattern}`],
    ];
    for (const [args, hint] of partial) {
      const one = await run(args, empty);
      expect(one.code, args.join(' ')).toBe(4);
      expect(one.stderr).toContain('volume 1 of the set is missing (given: 2)');
      expect(one.stderr).toContain(`hint: give every volume of the set`);
      expect(one.stderr).toContain(hint);
    }
    expect(await stat(join(dir, 'l')).catch(() => undefined)).toBeUndefined();
    expect(await stat(join(dir, 'inv.json')).catch(() => undefined)).toBeUndefined();

    // One flipped byte in volume 3: verify says which volume and which blob.
    const third = join(dir, files[2]!);
    const bytes = await readFile(third);
    bytes[4000] ^= 0xff;
    await writeFile(third, bytes);
    const bad = await run(['verify', ...shuffled]);
    expect(bad.code).toBe(4);
    expect(bad.stdout).toMatch(new RegExp(`volume 3 of ${files.length} \\(set.003.tar\\): (part \\d+ of )?blob sha256:[0-9a-f]{64} corrupt`));

    // Volume 2 of another set given in place of this set's: that file is named, and nothing is loaded
    // (it said "volume 2 of the set is missing", and loaded the other set's lone volume's images first).
    const other = join(dir, 'other');
    await mkdir(other);
    await ok(['save', '-q', `oci:${src}:v`, `${REPO}:plain`, '-o', join(other, 'set.tar'), '--volume-size', '1M'], fullStore);
    const mixed = files.map((f, i) => (i === 1 ? join(other, f) : join(dir, f)));
    const mixedStore = await freshStore();
    const m = await run(['load', ...mixed.flatMap((f) => ['-i', f])], mixedStore);
    expect(m.code, m.stderr).toBe(3);
    expect(m.stderr).toContain(`${mixed[1]} belongs to another volume set than ${mixed[0]}, which lacks its own volume 2`);
    expect(await stat(mixedStore).catch(() => undefined)).toBeUndefined();
  });
});

describe('load onto names the store has', () => {
  it('a name that was another image\'s says so, as docker load and ferry tag do, and whether that image has a name left', async () => {
    const dir = await tempDir();
    const archive = join(dir, 'a.tar');
    await ok(['save', '-q', `${REPO}:plain`, '-o', archive], fullStore);
    const store = await freshStore();
    await ok(['copy', '-q', `oci:${TESTDATA}:layers`, `${REPO}:plain`], store);
    const r = await ok(['load', '-i', archive], store);
    expect(r.stdout).toContain(`Loaded image: ${REPO}:plain`);
    expect(r.stdout).toContain(`${REPO}:plain named ${images.layers.digest} until now (it has no other name now: the next ferry gc or rmi deletes it)`);
    // The same archive again: nothing moved, nothing said.
    expect((await ok(['load', '-i', archive], store)).stdout).not.toContain('until now');
  });
});

describe('volumes named by a pattern', () => {
  it('load -i and verify take a quoted pattern for the set, as copy, inspect and inventory do (it was "no such file")', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'v', layers: [300_000, 300_000] }]);
    await ok(['save', '-q', `oci:${src}:v`, '-o', join(dir, 'set.tar'), '--volume-size', '256K']);
    const pattern = join(dir, 'set.*.tar');
    expect((await ok(['verify', pattern])).stdout).toMatch(/1 image\(s\).* 0 problem\(s\)/);
    const store = await freshStore();
    expect((await ok(['load', '-i', pattern], store)).stdout).toContain('Loaded image: v');
    const none = await run(['load', '-i', join(dir, 'nope.*.tar')], await freshStore());
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('nope.*.tar: no file matches');
  });
});

describe('volumes written again', () => {
  it('save --force of a smaller set removes the old set\'s later volumes once the new set is in place; a failed one keeps the old set', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'big', layers: [150_000, 150_000, 150_000] }]);
    const base = join(dir, 'set.tar');
    const volumes = async () => (await readdir(dir)).filter((n) => n.startsWith('set.')).sort();
    await ok(['save', '-q', `oci:${src}:big`, '-o', base, '--volume-size', '200K'], fullStore);
    const old = await volumes();
    expect(old.length).toBeGreaterThanOrEqual(3);
    // Someone else's file that only looks similar stays.
    await writeFile(join(dir, 'set.x.tar'), 'not a volume');

    // A failed --force save (a missing image) leaves the old set byte for byte.
    const before = await Promise.all(old.map((f) => readFile(join(dir, f))));
    const missing = await run(['save', '-q', `${REPO}:nope`, '-o', base, '--volume-size', '200K', '--force'], fullStore);
    expect(missing.code).toBe(2);
    expect(await volumes()).toEqual([...old, 'set.x.tar'].sort());
    for (const [i, f] of old.entries()) expect((await readFile(join(dir, f))).equals(before[i]!), f).toBe(true);

    const r = await ok(['save', '-q', `${REPO}:plain`, '-o', base, '--volume-size', '200K', '--force'], fullStore);
    expect(await volumes()).toEqual(['set.001.tar', 'set.x.tar']);
    for (const f of old.slice(1)) expect(r.stderr).toContain(`removed stale volume ${join(dir, f)} of the previous set`);
    expect(await tempFilesIn(dir)).toEqual([]);
    const v = await ok(['verify', join(dir, 'set.001.tar')]);
    expect(v.stdout).toMatch(/1 image\(s\).* 0 problem\(s\)/);
    const store = await freshStore();
    await ok(['load', '-i', join(dir, 'set.001.tar')], store);
    expect((await named(store))[`${REPO}:plain`]).toBe(images.plain.digest);
  });

  it('without --force a set is refused when any volume of an earlier set has its name, not only the first', async () => {
    const dir = await tempDir();
    const base = join(dir, 'set.tar.gz');
    await writeFile(join(dir, 'set.004.tar.gz'), 'left from an older set');
    await writeFile(join(dir, 'set.004.tar'), 'another suffix: not in the way');
    const r = await run(['save', '-q', `${REPO}:plain`, '-o', base, '--volume-size', '200K'], fullStore);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${join(dir, 'set.004.tar.gz')} already exists (volumes of an earlier set)`);
    expect(r.stderr).toContain('hint: pass --force');
    expect((await readdir(dir)).sort()).toEqual(['set.004.tar', 'set.004.tar.gz']);
    await ok(['save', '-q', `${REPO}:plain`, '-o', base, '--volume-size', '200K', '--force'], fullStore);
    expect((await readdir(dir)).sort()).toEqual(['set.001.tar.gz', 'set.004.tar']);
  });
});

describe('docker save generations', () => {
  const L1 = layerTar('etc/one', 'one');
  const L2 = layerTar('etc/two', 'two');

  it('a legacy docker save (SPEC-NOTES §4.2, layer.tar symlinked to an identical layer) loads with digests = diff_ids', async () => {
    const dir = await tempDir();
    const legacy = legacyArchive({ layers: [L1, L2, L1], repoTag: 'example.com/legacy:1' });
    for (const [name, z] of [['legacy.tar', undefined], ['legacy.tar.gz', 'gzip']] as const) {
      const file = join(dir, name);
      await writeTar(file, legacy.entries, z);
      const store = await freshStore();
      const r = await ok(['load', '-i', file], store);
      expect(r.stdout.trim()).toBe('Loaded image: example.com/legacy:1');
      const m = JSON.parse((await ok(['inspect', '--raw', 'example.com/legacy:1'], store)).stdout);
      expect(m.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
      expect(m.layers.map((l: { digest: string }) => l.digest)).toEqual(legacy.diffIds);
      expect(m.layers.map((l: { mediaType: string }) => l.mediaType)).toEqual(Array(3).fill('application/vnd.oci.image.layer.v1.tar'));
      expect(m.config.digest).toBe(legacy.configDigest);
      expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
      // The v1 json/VERSION files are not kept.
      expect((await blobDigests(store)).length).toBe(4);
    }
  });

  /** A Docker 25 save: OCI layout with uncompressed layers + manifest.json into blobs/. */
  function docker25(): { entries: Entry[]; manifestDigest: string } {
    const img = ociImage({ layers: [{ data: L1 }, { data: L2 }], tag: '1', name: 'docker.io/library/app:1' });
    const entries = [
      ...img.entries,
      { name: 'manifest.json', data: JSON.stringify([{ Config: `blobs/sha256/${img.config.digest.slice(7)}`, RepoTags: ['app:1'], Layers: img.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`) }]) },
      { name: 'repositories', data: '{"app":{"1":"x"}}' },
    ];
    return { entries, manifestDigest: img.manifest.digest };
  }

  it('Docker >= 25 archives load from index.json; its known writer bugs fall back to manifest.json with a warning (pitfall 14)', async () => {
    const dir = await tempDir();
    const good = docker25();
    await writeTar(join(dir, 'good.tar'), good.entries);
    const s1 = await freshStore();
    expect((await ok(['load', '-i', join(dir, 'good.tar')], s1)).stdout.trim()).toBe('Loaded image: app:1');
    expect(await named(s1)).toEqual({ 'docker.io/library/app:1': good.manifestDigest });

    const variants: Record<string, (e: Entry[]) => Entry[]> = {
      // moby#47210: "manifests": null
      'null-manifests': (e) => e.map((x) => (x.name === 'index.json' ? { ...x, data: '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":null}' } : x)),
      // moby#51389: the entry for a tag is missing
      'dropped-entry': (e) => e.map((x) => (x.name === 'index.json' ? { ...x, data: '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}' } : x)),
    };
    for (const [name, edit] of Object.entries(variants)) {
      await writeTar(join(dir, `${name}.tar`), edit(good.entries));
      const store = await freshStore();
      const r = await ok(['load', '-i', join(dir, `${name}.tar`)], store);
      expect(r.stdout.trim(), name).toBe('Loaded image: app:1');
      expect(r.stderr, name).toMatch(/warning: .*(index\.json is invalid|index\.json does not|disagree)/);
      expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
      const v = await run(['verify', join(dir, `${name}.tar`)]);
      expect(v.code, name).toBe(4);
      expect(v.stdout).toMatch(/PROBLEM inconsistent/);
    }

    // moby#47065: the generated manifest lists no layers; manifest.json has them.
    const img = ociImage({ layers: [{ data: L1 }, { data: L2 }], tag: '1', name: 'docker.io/library/app:1' });
    const emptyLayers = ociImage({ layers: [], diffIds: img.layers.map((l) => l.diffId), tag: '1', name: 'docker.io/library/app:1' });
    const entries = [
      ...emptyLayers.entries,
      ...img.layers.map((l, i) => ({ name: `blobs/sha256/${l.digest.slice(7)}`, data: [L1, L2][i]! })),
      { name: 'manifest.json', data: JSON.stringify([{ Config: `blobs/sha256/${emptyLayers.config.digest.slice(7)}`, RepoTags: ['app:1'], Layers: img.layers.map((l) => `blobs/sha256/${l.digest.slice(7)}`) }]) },
    ];
    await writeTar(join(dir, 'empty-layers.tar'), entries);
    const s3 = await freshStore();
    const r3 = await ok(['load', '-i', join(dir, 'empty-layers.tar')], s3);
    expect(r3.stderr).toMatch(/index\.json entry .* is broken .*diff_ids.*loaded from manifest\.json/);
    expect((await ok(['verify'], s3)).stdout).toContain('0 problem(s)');
  });

  it('a multi-image docker archive (skopeo/podman shape: <hex>.tar layers, shared layers) loads every image', async () => {
    const dir = await tempDir();
    const cfg = (ids: string[], arch: string) => Buffer.from(JSON.stringify({ architecture: arch, os: 'linux', rootfs: { type: 'layers', diff_ids: ids } }));
    const c1 = cfg([sha(L1)], 'amd64');
    const c2 = cfg([sha(L1), sha(L2)], 'arm64');
    const entries: Entry[] = [
      { name: `${sha(L1).slice(7)}.tar`, data: L1 },
      { name: `${sha(L2).slice(7)}.tar`, data: L2 },
      { name: `${sha(c1).slice(7)}.json`, data: c1 },
      { name: `${sha(c2).slice(7)}.json`, data: c2 },
      {
        name: 'manifest.json',
        data: JSON.stringify([
          { Config: `${sha(c1).slice(7)}.json`, RepoTags: ['example.com/a:1'], Layers: [`${sha(L1).slice(7)}.tar`] },
          { Config: `${sha(c2).slice(7)}.json`, RepoTags: ['example.com/b:2', 'example.com/b:latest'], Layers: [`${sha(L1).slice(7)}.tar`, `${sha(L2).slice(7)}.tar`] },
        ]),
      },
    ];
    await writeTar(join(dir, 'multi.tar'), entries);
    const store = await freshStore();
    const r = await ok(['load', '-i', join(dir, 'multi.tar')], store);
    expect(r.stdout.trim().split('\n')).toEqual(['Loaded image: example.com/a:1', 'Loaded image: example.com/b:2', 'Loaded image: example.com/b:latest']);
    const n = await named(store);
    expect(n['example.com/b:2']).toBe(n['example.com/b:latest']);
    expect((await ok(['verify'], store)).stdout).toContain('0 problem(s)');
  });
});

describe('bad archives are refused, nothing is left in the store', () => {
  const L = layerTar('f', 'content');

  it('A1: manifest.json Layers or Config paths with .. or absolute (exit 3 "layer path escapes archive")', async () => {
    const dir = await tempDir();
    for (const [i, mutate] of [
      (s: { layerPaths?: string[]; configPath?: string }) => (s.layerPaths = ['../../etc/passwd']),
      (s: { layerPaths?: string[] }) => (s.layerPaths = ['/etc/shadow']),
      (s: { configPath?: string }) => (s.configPath = '../config.json'),
    ].entries()) {
      const spec: Parameters<typeof legacyArchive>[0] = { layers: [L], repoTag: 'example.com/evil:1' };
      mutate(spec);
      await writeTar(join(dir, `a1-${i}.tar`), legacyArchive(spec).entries);
      const f = await loadFails(join(dir, `a1-${i}.tar`));
      expect(f.exit).toBe(3);
      expect(f.message).toMatch(/path escapes archive: "(\.\.\/\.\.\/etc\/passwd|\/etc\/shadow|\.\.\/config\.json)"/);
      await expectUntouched(f.store);
    }
    // End to end once: the CLI's exit code and message.
    const store = await freshStore();
    const r = await run(['load', '-i', join(dir, 'a1-0.tar')], store);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('layer path escapes archive: "../../etc/passwd"');
  });

  it('an archive that holds no image (an empty index, or one so broken that only an empty manifest.json is left) is refused, exit 3 (it loaded nothing and exited 0)', async () => {
    const dir = await tempDir();
    const img = ociImage({ layers: [{ data: L }] });
    const broken = JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.manifest.digest, size: '397' }] });
    for (const [name, index] of [['empty', JSON.stringify({ schemaVersion: 2, manifests: [] })], ['broken', broken]] as const) {
      const file = join(dir, `${name}.tar`);
      await writeTar(file, [...img.entries.filter((e) => e.name !== 'index.json'), { name: 'index.json', data: index }, { name: 'manifest.json', data: '[]' }]);
      const f = await loadFails(file);
      expect(f.exit, name).toBe(3);
      expect(f.message).toContain('holds no images; nothing was loaded');
      await expectUntouched(f.store);
    }
  });

  it('a tar with neither index.json nor manifest.json: the hint tells a root filesystem (ferry import) from a pre-1.10 docker save', async () => {
    const dir = await tempDir();
    const rootfs = join(dir, 'rootfs.tar');
    await writeTar(rootfs, [{ name: 'etc/hostname', data: 'box\n' }, { name: 'bin/sh', data: 'x' }]);
    const r = await run(['load', '-i', rootfs], await freshStore());
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('hint: it looks like a root filesystem, not an image: ferry import FILE NAME makes a one-layer image of it');
    const old = join(dir, 'old.tar');
    await writeTar(old, [{ name: `${'a'.repeat(64)}/layer.tar`, data: L }, { name: 'repositories', data: '{}' }]);
    const o = await run(['load', '-i', old], await freshStore());
    expect(o.code).toBe(3);
    expect(o.stderr).toContain('hint: docker archives from before Docker 1.10 (no manifest.json) are not supported');
  });

  it('A16: a layer.tar symlink to another layer inside is followed; one pointing outside is refused (exit 3)', async () => {
    const dir = await tempDir();
    const legacy = legacyArchive({ layers: [L], repoTag: 'example.com/evil:1' });
    const entries = legacy.entries.map((e) => (e.name.endsWith('/layer.tar') ? { name: e.name, type: 'symlink' as const, link: '../../../etc/passwd' } : e));
    await writeTar(join(dir, 'a16.tar'), entries);
    const f = await loadFails(join(dir, 'a16.tar'));
    expect(f.exit).toBe(3);
    expect(f.message).toMatch(/layer path escapes archive: ".*layer\.tar" is a symlink to "\.\.\/\.\.\/\.\.\/etc\/passwd"/);
    await expectUntouched(f.store);
  });

  it('A2: index.json digests like sha256:../../x, uppercase, short, or of an unknown algorithm (exit 3 "invalid digest")', async () => {
    const dir = await tempDir();
    const img = ociImage({ layers: [{ data: L }] });
    for (const [i, bad] of ['sha256:../../x', `sha256:${'A'.repeat(64)}`, 'sha256:abc', `md5:${'a'.repeat(32)}`].entries()) {
      const index = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: bad, size: 10 }] };
      await writeTar(join(dir, `a2-${i}.tar`), img.entries.map((e) => (e.name === 'index.json' ? { ...e, data: JSON.stringify(index) } : e)));
      const f = await loadFails(join(dir, `a2-${i}.tar`));
      expect(f.exit, bad).toBe(3);
      expect(f.message).toMatch(/invalid digest/);
      await expectUntouched(f.store);
    }
    // A blob file name that is not a digest.
    await writeTar(join(dir, 'a2-name.tar'), [...img.entries.slice(0, 1), { name: 'blobs/sha256/../../x', data: 'x' }, ...img.entries.slice(1)]);
    const f = await loadFails(join(dir, 'a2-name.tar'));
    expect(f.exit).toBe(3);
  });

  it('A3/B1: a blob whose bytes differ from its name (one flipped byte) is refused with exit 4 naming both digests', async () => {
    const dir = await tempDir();
    const img = ociImage({ layers: [{ data: zlib.gzipSync(L), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }] });
    const layerName = `blobs/sha256/${img.layers[0]!.digest.slice(7)}`;
    const flipped = img.entries.map((e) => {
      if (e.name !== layerName) return e;
      const b = Buffer.from(e.data as Buffer);
      b[10] ^= 0xff;
      return { ...e, data: b };
    });
    await writeTar(join(dir, 'b1.tar'), flipped);
    const store = await freshStore();
    const r = await run(['load', '-i', join(dir, 'b1.tar')], store);
    expect(r.code).toBe(4);
    expect(r.stderr).toMatch(new RegExp(`digest mismatch for blob ${img.layers[0]!.digest}.*expected ${img.layers[0]!.digest}, got sha256:[0-9a-f]{64}`));
    await expectUntouched(store);
    const v = await run(['verify', join(dir, 'b1.tar')]);
    expect(v.code).toBe(4);
    expect(v.stdout).toContain(`PROBLEM digest: digest mismatch for blob ${img.layers[0]!.digest}`);
    // Read in place by copy (and push --from): the message names the archive the blob came from.
    const c = await run(['copy', `oci-archive:${join(dir, 'b1.tar')}`, `oci:${join(dir, 'out')}`]);
    expect(c.code).toBe(4);
    expect(c.stderr).toContain(`digest mismatch for blob ${img.layers[0]!.digest} in ${join(dir, 'b1.tar')}`);
  });

  it('A17: a manifest with both manifests and layers, or whose mediaType disagrees with index.json, is refused (exit 3)', async () => {
    const dir = await tempDir();
    const img = ociImage({ layers: [{ data: L }] });
    const doc = JSON.parse(img.manifest.bytes.toString());
    for (const [i, evil] of [{ ...doc, manifests: [] }, { ...doc, mediaType: 'application/vnd.oci.image.index.v1+json' }].entries()) {
      const bytes = Buffer.from(JSON.stringify(evil));
      const index = { schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(bytes), size: bytes.length }] };
      const entries = [...img.entries.filter((e) => e.name !== 'index.json'), { name: `blobs/sha256/${sha(bytes).slice(7)}`, data: bytes }, { name: 'index.json', data: JSON.stringify(index) }];
      await writeTar(join(dir, `a17-${i}.tar`), entries);
      const f = await loadFails(join(dir, `a17-${i}.tar`));
      expect(f.exit).toBe(3);
      expect(f.message).toMatch(/CVE-2021-41190|disagrees with the declared/);
      await expectUntouched(f.store);
    }
  });

  it('A18: a 5 GiB index.json entry and an index nested 1000 deep are refused (exit 3 "exceeds limit"), memory flat', async () => {
    const dir = await tempDir();
    const file = join(dir, 'a18.tar');
    // A tar whose index.json claims 5 GiB; the file is sparse.
    await writeFile(file, Buffer.concat([(await import('../src/archive/tar.js')).entryHeader('index.json', 5 * 2 ** 30)]));
    await truncate(file, 512 + 5 * 2 ** 30 + 1024);
    const store = await freshStore();
    const r = await ferry(['--store', store, 'load', '-i', file], { env: { FERRY_STORE: noStore }, wrap: ['/usr/bin/time', '-f', 'maxrss=%M'] });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/index\.json: more than 4194304 bytes, exceeds limit/);
    expect(Number(/maxrss=(\d+)/.exec(r.stderr)![1]) / 1024).toBeLessThan(256);

    const img = ociImage({ layers: [{ data: L }] });
    let child = { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: img.manifest.digest, size: img.manifest.size };
    const extra: Entry[] = [];
    for (let i = 0; i < 1000; i++) {
      const b = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [child] }));
      extra.push({ name: `blobs/sha256/${sha(b).slice(7)}`, data: b });
      child = { mediaType: 'application/vnd.oci.image.index.v1+json', digest: sha(b), size: b.length };
    }
    const deep = [...img.entries.filter((e) => e.name !== 'index.json'), ...extra, { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [child] }) }];
    await writeTar(join(dir, 'deep.tar'), deep);
    const f = await loadFails(join(dir, 'deep.tar'));
    expect(f.exit).toBe(3);
    expect(f.message).toMatch(/nesting exceeds limit/);
    await expectUntouched(f.store);
  });

  it('B2: a truncated .tar.gz or .tar.zst archive, or a truncated gzip layer inside one, fails with exit 4 and names nothing', async () => {
    const dir = await tempDir();
    const img = ociImage({ layers: [{ data: Buffer.alloc(300_000, 5) }] });
    for (const z of ['gzip', 'zstd'] as const) {
      const bytes = tarBytes(img.entries, z);
      const file = join(dir, `cut.${z}`);
      await writeFile(file, bytes.subarray(0, bytes.length - 40));
      const store = await freshStore();
      const r = await run(['load', '-i', file], store);
      expect(r.code, z).toBe(4);
      expect(r.stderr).toMatch(/truncated/);
      await expectUntouched(store);
    }
    const gz = zlib.gzipSync(L);
    const cutLayer = gz.subarray(0, gz.length - 6);
    const bad = ociImage({ layers: [{ data: cutLayer, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha(L) }] });
    await writeTar(join(dir, 'cut-layer.tar'), bad.entries);
    const f = await loadFails(join(dir, 'cut-layer.tar'));
    expect(f.exit).toBe(4);
    expect(f.message).toMatch(/layer 1: .*truncated gzip/);
    await expectUntouched(f.store);
  });

  it('B3: a zstd bomb layer stops at the decompression budget (exit 3), RSS flat; FERRY_MAX_LAYER_BYTES lowers it', async () => {
    const dir = await tempDir();
    const frame = zlib.zstdCompressSync(Buffer.alloc(128 << 20));
    const bomb = Buffer.concat(Array(12).fill(frame)); // 1.5 GiB from a few kB
    const img = ociImage({ layers: [{ data: bomb, mediaType: 'application/vnd.oci.image.layer.v1.tar+zstd', diffId: sha('x') }] });
    await writeTar(join(dir, 'bomb.tar'), img.entries);
    const store = await freshStore();
    // The default budget (1 GiB here) is checked in archive-unit; 256 MiB keeps this test quick.
    const r = await ferry(['--store', store, 'load', '-i', join(dir, 'bomb.tar')], { env: { FERRY_STORE: noStore, FERRY_MAX_LAYER_BYTES: String(256 << 20) }, wrap: ['/usr/bin/time', '-f', 'maxrss=%M'] });
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/layer 1: blob sha256:[0-9a-f]{64} .*decompressed data exceeds limit of 268435456 bytes/);
    expect(Number(/maxrss=(\d+)/.exec(r.stderr)![1]) / 1024).toBeLessThan(256);
    await expectUntouched(store);

    const gz = ociImage({ layers: [{ data: zlib.gzipSync(Buffer.alloc(20 << 20)), mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip' }] });
    await writeTar(join(dir, 'gzbomb.tar'), gz.entries);
    const f = await loadFails(join(dir, 'gzbomb.tar'), { FERRY_MAX_LAYER_BYTES: String(1 << 20) });
    expect(f.exit).toBe(3);
    expect(f.message).toMatch(/exceeds limit of 1048576 bytes/);
  });

  it('B5: a layer whose media type says gzip but whose bytes are plain is kept as is with a warning (docker and containerd sniff too)', async () => {
    const dir = await tempDir();
    const img = ociImage({ layers: [{ data: L, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha(L) }] });
    await writeTar(join(dir, 'b5.tar'), img.entries);
    const store = await freshStore();
    const r = await ok(['load', '-i', join(dir, 'b5.tar')], store);
    expect(r.stderr).toMatch(/says gzip but the bytes are none; kept as they are/);
    expect(Object.values(await named(store))).toEqual([img.manifest.digest]);
  });

  it('B6: a diff_id mismatch, or a diff_ids count different from the layers, is refused with exit 4 (OCI and legacy)', async () => {
    const dir = await tempDir();
    const cases: Array<[string, Entry[]]> = [
      ['oci-diffid', ociImage({ layers: [{ data: L, diffId: sha('other') }] }).entries],
      ['oci-count', ociImage({ layers: [{ data: L }], diffIds: [sha(L), sha(L)] }).entries],
      ['legacy-diffid', legacyArchive({ layers: [L], repoTag: 'example.com/x:1', diffIds: [sha('other')] }).entries],
      ['legacy-count', legacyArchive({ layers: [L], repoTag: 'example.com/x:1', diffIds: [] }).entries],
    ];
    for (const [name, entries] of cases) {
      await writeTar(join(dir, `${name}.tar`), entries);
      const f = await loadFails(join(dir, `${name}.tar`));
      expect(f.exit, name).toBe(4);
      expect(f.message, name).toMatch(/diff_id/);
      await expectUntouched(f.store);
    }
  });

  it('B7: a gzip layer with trailing garbage and an archive with garbage after its gzip stream fail (exit 4); multi-member gzip loads', async () => {
    const dir = await tempDir();
    const gz = Buffer.concat([zlib.gzipSync(L), Buffer.from('garbage')]);
    await writeTar(join(dir, 'layer.tar'), ociImage({ layers: [{ data: gz, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha(L) }] }).entries);
    const f = await loadFails(join(dir, 'layer.tar'));
    expect(f.exit).toBe(4);
    expect(f.message).toMatch(/corrupt gzip data/);

    const img = ociImage({ layers: [{ data: L }] });
    await writeFile(join(dir, 'outer.tar.gz'), Buffer.concat([tarBytes(img.entries, 'gzip'), Buffer.from('garbage')]));
    const g = await loadFails(join(dir, 'outer.tar.gz'));
    expect(g.exit).toBe(4);
    await expectUntouched(g.store);

    const half = Math.floor(L.length / 2);
    const multi = Buffer.concat([zlib.gzipSync(L.subarray(0, half)), zlib.gzipSync(L.subarray(half))]);
    await writeTar(join(dir, 'multi.tar'), ociImage({ layers: [{ data: multi, mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', diffId: sha(L) }] }).entries);
    const store = await freshStore();
    await ok(['load', '-q', '-i', join(dir, 'multi.tar')], store);
  });

  it('an empty file, a random file and a tar without images are refused with exit 3 naming the file', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'empty.tar'), '');
    await writeFile(join(dir, 'random.bin'), Buffer.alloc(2048, 'x'));
    await writeTar(join(dir, 'none.tar'), [{ name: 'hello.txt', data: 'hi' }]);
    for (const n of ['empty.tar', 'random.bin', 'none.tar']) {
      const f = await loadFails(join(dir, n));
      expect(f.exit, n).toBe(3);
      expect(f.message).toContain(join(dir, n));
    }
  });
});

describe('interruption and concurrency', () => {
  it('F1: SIGINT during save exits 130 and leaves no output and no temp file', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'big', layers: [128 << 20, 128 << 20] }]);
    const out = join(dir, 'out');
    await mkdir(out);
    const child = start(['save', `oci:${src}:big`, '-o', join(out, 'big.tar.gz')], { env: { FERRY_STORE: noStore } });
    const done = finish(child);
    for (let i = 0; i < 2000; i++) {
      if ((await readdir(out)).length > 0) break;
      await sleep(5);
    }
    await sleep(100);
    child.kill('SIGINT');
    const r = await done;
    expect(r.code).toBe(130);
    expect(r.stderr).toContain('interrupted');
    expect(await readdir(out)).toEqual([]);
  });

  /**
   * Loads an archive of one image of `layers` into a store that holds another, and SIGINTs the
   * load once `under way` says so: exit 130, and the store is as it was (index, blobs, no temp file).
   */
  async function interruptedLoad(layers: number[], underWay: (store: string, blobsBefore: string[]) => Promise<boolean>): Promise<void> {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'x', layers }]);
    await ok(['save', '-q', `oci:${src}:x`, '-o', join(dir, 'x.tar')]);
    const store = await freshStore();
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, 'example.com/keep:1'], store);
    const before = await readFile(join(store, 'index.json'), 'utf8');
    const blobsBefore = await blobDigests(store);
    const child = start(['--store', store, 'load', '-i', join(dir, 'x.tar')], { env: { FERRY_STORE: noStore } });
    const done = finish(child);
    for (let i = 0; i < 2000; i++) {
      if (await underWay(store, blobsBefore)) break;
      await sleep(2);
    }
    child.kill('SIGINT');
    const r = await done;
    expect(r.code, r.stderr).toBe(130);
    expect(await readFile(join(store, 'index.json'), 'utf8')).toBe(before);
    expect(await tempFilesIn(store)).toEqual([]);
    expect(await blobDigests(store)).toEqual(blobsBefore);
  }

  it('F1: SIGINT during load exits 130; index.json unchanged, no temp file, no blob left', async () => {
    await interruptedLoad([128 << 20, 128 << 20], async (store) => (await tempFilesIn(join(store, 'blobs'))).length > 0);
  });

  /**
   * Saves one image of `layers`, then loads it into a store where a directory stands in the way
   * of layer `blocked`: exit 7 naming it, and nothing of the load left. The archive's path.
   */
  async function blockedLoad(layers: number[], blocked: number): Promise<string> {
    const dir = await tempDir();
    const [made] = await makeLayout(join(dir, 'src'), [{ tag: 'x', layers }]);
    const archive = join(dir, 'x.tar');
    await ok(['save', '-q', `oci:${join(dir, 'src')}:x`, '-o', archive]);
    const store = await freshStore();
    const inTheWay = blobFile(store, made!.layers[blocked]!.digest);
    await mkdir(join(inTheWay, 'in-the-way'), { recursive: true });
    const r = await run(['load', '-i', archive], store);
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toContain(inTheWay);
    expect(await tempFilesIn(store)).toEqual([]);
    expect((await indexEntries(store)).length).toBe(0);
    expect((await readdir(join(store, 'blobs', 'sha256'))).filter((n) => !inTheWay.endsWith(n))).toEqual([]);
    return archive;
  }

  it('many small layers are stored several at once; one that cannot be stored fails the load (exit 7, naming it) and nothing of the load is left', async () => {
    // The 13th layer's rename fails while others are being written.
    const archive = await blockedLoad(Array.from({ length: 24 }, () => 100 << 10), 12);
    const loaded = await freshStore();
    await ok(['load', '-q', '-i', archive], loaded);
    expect((await ok(['verify'], loaded)).stdout).toMatch(/26 blob\(s\).* 0 problem\(s\)/);
  });

  it('a layer too big to hold in memory that cannot be stored fails the load the same way, the layers after it read or not', async () => {
    const small = Array.from({ length: 6 }, () => 100 << 10);
    await blockedLoad([...small, 6 << 20, 6 << 20, ...small], 6);
  });

  it('the same big layer twice as two files (not linked) in a legacy archive is stored once', async () => {
    const big = layerTar('big', 'x'.repeat(6 << 20));
    const legacy = legacyArchive({ layers: [big, layerTar('small', 'y'), big], repoTag: 'example.com/dup:1' });
    const entries = legacy.entries.map((e) => (e.type === 'symlink' ? { name: e.name, data: big } : e));
    const file = join(await tempDir(), 'dup.tar');
    await writeTar(file, entries);
    const store = await freshStore();
    await ok(['load', '-q', '-i', file], store);
    expect((await ok(['verify'], store)).stdout).toMatch(/4 blob\(s\).* 0 problem\(s\)/);
    expect(await tempFilesIn(store)).toEqual([]);
  });

  it('F1: SIGINT while small layers are being stored in the background exits 130; no temp file, no blob of the load left', async () => {
    await interruptedLoad(Array.from({ length: 300 }, () => 200 << 10), async (store, before) => (await blobDigests(store)).length > before.length + 20);
  });

  it('G3: save from the store while a copy writes into it gives a consistent archive', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'big', layers: [96 << 20, 96 << 20] }]);
    const store = await freshStore();
    await cp(fullStore, store, { recursive: true });
    const writer = finish(start(['--store', store, 'copy', `oci:${src}:big`, 'example.com/incoming:1'], { env: { FERRY_STORE: noStore } }));
    for (let i = 0; i < 2000; i++) {
      if ((await tempFilesIn(join(store, 'blobs'))).length > 0) break;
      await sleep(5);
    }
    const saved = await run(['save', '-q', ...TAGS.map((t) => `${REPO}:${t}`), '-o', join(dir, 'snap.tar')], store);
    expect(saved.code, saved.stderr).toBe(0);
    expect((await writer).code).toBe(0);
    expect((await ok(['verify', join(dir, 'snap.tar')])).stdout).toMatch(/5 image\(s\).* 0 problem\(s\)/);
    const loaded = await freshStore();
    await ok(['load', '-q', '-i', join(dir, 'snap.tar')], loaded);
    for (const t of TAGS) expect((await named(loaded))[`${REPO}:${t}`]).toBe(images[t].digest);
  });
});

describe('verify FILE', () => {
  it('lists every problem of an archive (missing blob, diff_id, corrupt blob), with --json', async () => {
    const dir = await tempDir();
    const a = ociImage({ layers: [{ data: layerTar('a', 'A') }, { data: layerTar('b', 'B') }], tag: 'a' });
    const b = ociImage({ layers: [{ data: layerTar('c', 'C') }], diffIds: [sha('wrong')], tag: 'b' });
    const c = ociImage({ layers: [{ data: layerTar('d', 'D') }], tag: 'c' });
    const index = (img: typeof a) => JSON.parse(img.entries.find((e) => e.name === 'index.json')!.data as string).manifests;
    const corrupt = `blobs/sha256/${c.layers[0]!.digest.slice(7)}`;
    const entries: Entry[] = [
      ...a.entries.filter((e) => e.name !== `blobs/sha256/${a.layers[1]!.digest.slice(7)}` && e.name !== 'index.json'),
      ...b.entries.filter((e) => e.name !== 'index.json' && e.name !== 'oci-layout'),
      ...c.entries.filter((e) => e.name !== 'index.json' && e.name !== 'oci-layout').map((e) => (e.name === corrupt ? { ...e, data: layerTar('d', 'X') } : e)),
      { name: 'index.json', data: JSON.stringify({ schemaVersion: 2, manifests: [...index(a), ...index(b), ...index(c)] }) },
    ];
    await writeTar(join(dir, 'bad.tar'), entries);
    const text = await run(['verify', join(dir, 'bad.tar')]);
    expect(text.code).toBe(4);
    expect(text.stdout).toMatch(/PROBLEM missing: .*layer 2 sha256:[0-9a-f]{64} is not in the archive/);
    expect(text.stdout).toMatch(/PROBLEM diff_id: .*the config says diff_id/);
    expect(text.stdout).toContain(`PROBLEM digest: digest mismatch for blob ${c.layers[0]!.digest}`);
    const r = await run(['verify', '--json', join(dir, 'bad.tar')]);
    expect(r.code).toBe(4);
    const [report] = JSON.parse(r.stdout);
    expect(report.ok).toBe(false);
    expect(report.problems.map((p: { kind: string }) => p.kind).sort()).toEqual(expect.arrayContaining(['diff_id', 'digest', 'missing']));
    const reports = await verifyArchives([join(dir, 'bad.tar')]);
    expect(reports[0]!.problems.length).toBeGreaterThanOrEqual(3);
  });

  it('a corrupt config, layer or manifest or a missing blob is one PROBLEM, and the image is not counted', async () => {
    const dir = await tempDir();
    const good = join(dir, 'good.tar');
    await ok(['save', '-q', `${REPO}:layers`, `${REPO}:plain`, '-o', good], fullStore);
    const bytes = await readFile(good);
    const config = images.layers.config!;
    const layer = images.layers.layers![0]!.digest;
    /** The archive with one byte of a blob flipped (`xor` 1 keeps a JSON config parseable). */
    const flipped = async (name: string, digest: string, offset: number, xor: number) => {
      const at = bytes.indexOf(await readFile(blobFile(fullStore, digest)));
      expect(at).toBeGreaterThan(0);
      const bad = Buffer.from(bytes);
      bad[at + offset]! ^= xor;
      await writeFile(join(dir, name), bad);
      return join(dir, name);
    };
    const entries: Entry[] = [];
    for await (const e of readTar(Readable.from([bytes]), { where: good })) {
      if (e.type === 'dir' || e.name === `blobs/sha256/${layer.slice(7)}`) continue;
      entries.push({ name: e.name, data: Buffer.concat(await e.body().toArray()) });
    }
    await writeTar(join(dir, 'missing.tar'), entries);
    const cases: Array<[string, string, RegExp]> = [
      [await flipped('config.tar', config, 10, 0xff), 'digest', new RegExp(`^PROBLEM digest: digest mismatch for blob ${config} `)],
      [await flipped('config-json.tar', config, 50, 1), 'digest', new RegExp(`^PROBLEM digest: digest mismatch for blob ${config} `)],
      [await flipped('layer.tar', layer, 100, 0xff), 'digest', new RegExp(`^PROBLEM digest: digest mismatch for blob ${layer} `)],
      // manifest.json still describes the image, but that is no way round a corrupt manifest.
      [await flipped('manifest.tar', images.layers.digest, 30, 1), 'digest', new RegExp(`^PROBLEM digest: digest mismatch for blob ${images.layers.digest} `)],
      [join(dir, 'missing.tar'), 'missing', new RegExp(`^PROBLEM missing: ${REPO}:layers: layer 1 ${layer} is not in the archive$`)],
    ];
    for (const [file, kind, line] of cases) {
      const text = await run(['verify', file]);
      expect(text.code, file).toBe(4);
      const lines = text.stdout.trim().split('\n');
      expect(lines, file).toEqual([expect.stringMatching(line), expect.stringMatching(/: 1 image\(s\), .* 1 problem\(s\)$/)]);
      expect(text.stderr).toContain(`verify found 1 problem(s) in ${file}\n`);
      const json = await run(['verify', '--json', file]);
      expect(json.code).toBe(4);
      const [report] = JSON.parse(json.stdout);
      expect(report, file).toMatchObject({ ok: false, images: 1, problems: [expect.objectContaining({ kind })] });
      expect(report.problems, file).toHaveLength(1);
    }
  });

  it('several files: a corrupt gzip stream or a non-tar is a PROBLEM of that file, and the files after it are still checked', async () => {
    const dir = await tempDir();
    const [good, bad, plain, junk] = ['good.tgz', 'bad.tgz', 'good.tar', 'junk.tar'].map((f) => join(dir, f));
    await ok(['save', '-q', `${REPO}:plain`, '-o', good!], fullStore);
    await ok(['save', '-q', `${REPO}:layers`, '-o', plain!], fullStore);
    const bytes = await readFile(good!);
    bytes[400] ^= 1;
    await writeFile(bad!, bytes);
    await writeFile(junk!, Buffer.alloc(5000, 7));

    const text = await run(['verify', good!, bad!, plain!]);
    expect(text.code).toBe(4);
    const lines = text.stdout.trim().split('\n');
    expect(lines).toEqual([
      expect.stringMatching(/^\S+good\.tgz: 1 image\(s\), 3 file\(s\), .* 0 problem\(s\)$/),
      expect.stringMatching(new RegExp(`^PROBLEM digest: ${bad}: corrupt gzip data .*\\(reading stopped here\\)$`)),
      expect.stringMatching(/^\S+bad\.tgz: 0 image\(s\), .* 1 problem\(s\)$/),
      expect.stringMatching(/^\S+good\.tar: 1 image\(s\), 5 file\(s\), .* 0 problem\(s\)$/),
    ]);
    expect(text.stderr).toContain(`verify found 1 problem(s) in ${bad}\n`);
    expect(text.stderr).not.toMatch(/\n\s+at /);

    const json = await run(['verify', '--json', good!, bad!, junk!, plain!]);
    expect(json.code).toBe(4);
    const reports = JSON.parse(json.stdout);
    expect(reports.map((r: { target: string; ok: boolean }) => [r.target, r.ok])).toEqual([[good, true], [bad, false], [junk, false], [plain, true]]);
    expect(reports[1].problems).toEqual([expect.objectContaining({ kind: 'digest', code: 'INTEGRITY', message: expect.stringContaining('corrupt gzip data') })]);
    expect(reports[2].problems).toEqual([expect.objectContaining({ kind: 'invalid', code: 'INVALID_INPUT', message: expect.stringContaining('not a tar archive') })]);
    expect(reports[3]).toMatchObject({ images: 1, blobs: 5, problems: [] });
    // Only invalid input (a file that is not a tar): exit 3, and the good file still checked.
    const onlyJunk = await run(['verify', junk!, good!]);
    expect(onlyJunk.code).toBe(3);
    expect(onlyJunk.stdout).toMatch(/good\.tgz: 1 image\(s\).* 0 problem\(s\)/);
    // One damaged file alone: a PROBLEM line and a summary, not a bare error.
    const alone = await run(['verify', bad!]);
    expect(alone.code).toBe(4);
    expect(alone.stdout).toMatch(/^PROBLEM digest: .*corrupt gzip data/m);
  });

  it('a truncated volume stops the reading of the set, not the check of the volumes after it', async () => {
    const dir = await tempDir();
    const src = join(dir, 'src');
    await makeLayout(src, [{ tag: 'v', layers: [150_000, 150_000, 150_000] }]);
    await ok(['save', '-q', `oci:${src}:v`, '-o', join(dir, 'set.tar'), '--volume-size', '200K'], fullStore);
    const files = (await readdir(dir)).filter((n) => n.startsWith('set.')).sort().map((f) => join(dir, f));
    expect(files.length).toBe(3);
    await truncate(files[1]!, 100_000);
    const third = await readFile(files[2]!);
    third[50_000] ^= 0xff;
    await writeFile(files[2]!, third);
    const r = await run(['verify', ...files]);
    expect(r.code).toBe(4);
    expect(r.stdout).toMatch(/PROBLEM \w+: volume 2 of \d+ \(set\.002\.tar\): truncated tar archive .*\(reading stopped here\)/);
    expect(r.stdout).toMatch(/NOTE reading the set stopped in volume 2 of 3 \(set\.002\.tar\): volume 3 was checked against its own list only/);
    // The corrupt blob is one PROBLEM, as its volume's list says it (not a digest mismatch again).
    expect(r.stdout).toMatch(/PROBLEM digest: volume 3 of 3 \(set\.003\.tar\): blob sha256:[0-9a-f]{64} corrupt \(content hashes to sha256:[0-9a-f]{64}, 150000 bytes; expected sha256:[0-9a-f]{64}, 150000 bytes\)$/m);
    expect(r.stdout).toMatch(/ 2 problem\(s\)$/m);
  });

  it('a volume set: each fault is one PROBLEM naming its volume (corrupt layer, config, manifest or index.json, a lost blob, two faults, a missing volume, a volume of another set), with --json', async () => {
    const { files, image, volumeOf } = await volumeSet([150_000, 150_000, 150_000], '200K');
    expect(files.length).toBe(3);
    const blob = (d: string) => `blobs/sha256/${d.slice(7)}`;
    const vol = (d: string) => volumeOf.get(blob(d))!;
    const at = (n: number, total = ' of 3') => `volume ${n}${total} \\(set\\.00${n}\\.tar\\)`;
    const corrupt = (d: string, size: number, total?: string) =>
      new RegExp(`^PROBLEM digest: ${at(vol(d), total)}: blob ${d} corrupt \\(content hashes to sha256:[0-9a-f]{64}, ${size} bytes; expected ${d}, ${size} bytes\\)$`);
    const [l1, l2, l3] = image.layers.map((l) => l.digest);
    const { config, manifest } = image;
    const metaVolume = volumeOf.get('index.json')!;
    const cases: Array<{ name: string; files: string[]; lines: RegExp[]; images: number }> = [
      { name: 'layer', files: await damagedCopy(files, (c) => flipEntry(c[vol(l2!) - 1]!, blob(l2!), 5000)), lines: [corrupt(l2!, 150_000)], images: 0 },
      {
        name: 'two layers in two volumes',
        files: await damagedCopy(files, async (c) => {
          await flipEntry(c[vol(l1!) - 1]!, blob(l1!), 100);
          await flipEntry(c[vol(l3!) - 1]!, blob(l3!), 100);
        }),
        lines: [corrupt(l1!, 150_000), corrupt(l3!, 150_000)],
        images: 0,
      },
      // xor 1: the config still parses.
      { name: 'config', files: await damagedCopy(files, (c) => flipEntry(c[vol(config.digest) - 1]!, blob(config.digest), 30, 1)), lines: [corrupt(config.digest, config.size)], images: 0 },
      // The image is unnamed in manifest.json: its account of the image is no way round the corrupt manifest either.
      { name: 'manifest', files: await damagedCopy(files, (c) => flipEntry(c[vol(manifest.digest) - 1]!, blob(manifest.digest), 30, 1)), lines: [corrupt(manifest.digest, manifest.size)], images: 0 },
      // manifest.json still describes the image.
      {
        name: 'index.json',
        files: await damagedCopy(files, (c) => flipEntry(c[metaVolume - 1]!, 'index.json', 10, 1)),
        lines: [new RegExp(`^PROBLEM digest: ${at(metaVolume)}: index.json corrupt \\(content hashes to sha256:[0-9a-f]{64}, \\d+ bytes; expected sha256:[0-9a-f]{64}, \\d+ bytes\\)$`)],
        images: 1,
      },
      {
        name: 'index.json and manifest.json',
        files: await damagedCopy(files, async (c) => {
          await flipEntry(c[metaVolume - 1]!, 'index.json', 10, 1);
          await flipEntry(c[metaVolume - 1]!, 'manifest.json', 10, 1);
        }),
        lines: [/^PROBLEM digest: .*: index\.json corrupt/, /^PROBLEM digest: .*: manifest\.json corrupt/],
        images: 0,
      },
      { name: 'lost blob', files: await damagedCopy(files, (c) => dropEntry(c[vol(l2!) - 1]!, blob(l2!))), lines: [new RegExp(`^PROBLEM volume: ${at(vol(l2!))}: blob ${l2} is missing$`)], images: 0 },
    ];
    const lastLayer = [l1!, l2!, l3!].find((l) => vol(l) === 3)!;
    const noSecond = await damagedCopy(files, (c) => flipEntry(c[2]!, blob(lastLayer), 100));
    cases.push({ name: 'missing volume', files: [noSecond[0]!, noSecond[2]!], lines: [/^PROBLEM volume: volume 2 of the set is missing \(given: 1, 3\)$/, corrupt(lastLayer, 150_000, '')], images: 0 });
    for (const c of cases) {
      const text = await run(['verify', ...c.files]);
      expect(text.code, `${c.name}\n${text.stdout}`).toBe(4);
      const lines = text.stdout.trim().split('\n').filter((l) => !l.startsWith('NOTE '));
      expect(lines, c.name).toEqual([...c.lines.map((l) => expect.stringMatching(l)), expect.stringMatching(new RegExp(`: ${c.images} image\\(s\\), .* ${c.lines.length} problem\\(s\\)$`))]);
      const json = await run(['verify', '--json', ...c.files]);
      expect(json.code).toBe(4);
      const [report] = JSON.parse(json.stdout);
      expect(report.problems, c.name).toHaveLength(c.lines.length);
      expect(report.images, c.name).toBe(c.images);
    }
    // A volume of another set in place of volume 2: the set lacks its volume 2, and the stray is said to be another set's.
    const other = await volumeSet([150_000, 150_000, 150_000], '200K');
    const mixed = await run(['verify', files[0]!, other.files[1]!, files[2]!]);
    expect(mixed.code).toBe(4);
    expect(mixed.stdout.trim().split('\n')).toEqual([
      'PROBLEM volume: volume 2 of the set is missing (given: 1, 3)',
      expect.stringMatching(/: 0 image\(s\), .* 1 problem\(s\)$/),
      `NOTE ${other.files[1]} is a volume of another set than ${files[0]}: each set is checked on its own`,
      'PROBLEM volume: volume 1 of the set is missing (given: 2)',
      expect.stringMatching(/: 0 image\(s\), .* 1 problem\(s\)$/),
    ]);
    // In --json, the blob and its volume are fields of the one problem.
    const [report] = JSON.parse((await run(['verify', '--json', ...cases[1]!.files])).stdout);
    expect(report.problems).toEqual([
      { kind: 'digest', code: 'DIGEST_MISMATCH', digest: l1, path: blob(l1!), volume: vol(l1!), message: expect.stringMatching(corrupt(l1!, 150_000).source.slice('^PROBLEM digest: '.length)) },
      { kind: 'digest', code: 'DIGEST_MISMATCH', digest: l3, path: blob(l3!), volume: vol(l3!), message: expect.stringMatching(corrupt(l3!, 150_000).source.slice('^PROBLEM digest: '.length)) },
    ]);
  });

  it('a blob split across volumes: a corrupt or missing part is one PROBLEM naming the part, its blob and its volume', async () => {
    const { files, image } = await volumeSet([1_200_000], '512K');
    const big = image.layers[0]!.digest;
    const parts = (await Promise.all(files.map((f) => tarNames(f)))).map((names) => names.find((n) => n.startsWith(`ferry-parts/sha256/${big.slice(7)}/`)));
    const count = parts.filter(Boolean).length;
    expect(count).toBeGreaterThanOrEqual(3);
    const total = files.length;
    const partLine = (n: number, end: string) => new RegExp(`^PROBLEM (digest|volume): volume ${n} of ${total} \\(set\\.00${n}\\.tar\\): part ${n} of blob ${big} ${end}$`);
    const corrupt = (n: number) => partLine(n, 'corrupt \\(content hashes to sha256:[0-9a-f]{64}, \\d+ bytes; expected sha256:[0-9a-f]{64}, \\d+ bytes\\)');
    const cases: Array<[string, string[], RegExp[]]> = [
      ['part 2 corrupt', await damagedCopy(files, (c) => flipEntry(c[1]!, parts[1]!, 1000)), [corrupt(2)]],
      [
        'parts 2 and 3 corrupt',
        await damagedCopy(files, async (c) => {
          await flipEntry(c[1]!, parts[1]!, 1000);
          await flipEntry(c[2]!, parts[2]!, 1000);
        }),
        [corrupt(2), corrupt(3)],
      ],
      // Not also "out of order" for the parts after it, "incomplete", or "not in the archive" for the image.
      ['part 2 missing', await damagedCopy(files, (c) => dropEntry(c[1]!, parts[1]!)), [partLine(2, 'is missing')]],
    ];
    for (const [name, set, want] of cases) {
      const r = await run(['verify', ...set]);
      expect(r.code, `${name}\n${r.stdout}`).toBe(4);
      expect(r.stdout.trim().split('\n'), name).toEqual([...want.map((l) => expect.stringMatching(l)), expect.stringMatching(new RegExp(`: 0 image\\(s\\), .* ${want.length} problem\\(s\\)$`))]);
      const [report] = JSON.parse((await run(['verify', '--json', ...set])).stdout);
      expect(report.problems.map((p: { digest: string; volume: number }) => [p.digest, p.volume]), name).toEqual(want.map((_, i) => [big, i + 2]));
    }
    // load stops at the first one, naming it too.
    const l = await run(['load', ...cases[0]![1].flatMap((f) => ['-i', f])], await freshStore());
    expect(l.code).toBe(4);
    expect(l.stderr).toMatch(new RegExp(`error: volume 2 of ${total} \\(set\\.002\\.tar\\): part 2 of blob ${big} corrupt`));
  });

  it('a manifest.json entry broken only by a corrupt blob index.json does not use: the corruption is the one PROBLEM', async () => {
    const dir = await tempDir();
    const img = ociImage({ name: 'example.com/x/a:1', tag: '1', layers: [{ data: layerTar('a', 'A') }] });
    const other = layerTar('b', 'B');
    const bad = Buffer.from(other);
    bad[600]! ^= 0xff;
    const path = `blobs/sha256/${sha(other).slice(7)}`;
    const manifestJson = (tags: string[] | null) => JSON.stringify([{ Config: `blobs/sha256/${img.config.digest.slice(7)}`, RepoTags: tags, Layers: [path] }]);
    for (const tags of [['example.com/x/a:1'], null]) {
      const file = join(dir, `${tags ? 'named' : 'unnamed'}.tar`);
      await writeTar(file, [...img.entries, { name: path, data: bad }, { name: 'manifest.json', data: manifestJson(tags) }]);
      const r = await run(['verify', file]);
      expect(r.code).toBe(4);
      expect(r.stdout.trim().split('\n'), file).toEqual([expect.stringMatching(new RegExp(`^PROBLEM digest: digest mismatch for blob ${sha(other)} `)), expect.stringMatching(/: 1 image\(s\), .* 1 problem\(s\)$/)]);
    }
  });
});
