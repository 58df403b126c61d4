import { cp, mkdir, readdir, readFile, rm, stat, truncate, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ferry, finish, start, type RunResult } from './helpers/cli.js';
import { flipByte, TESTDATA, tempDir, tempFilesIn, testdataCopy } from './helpers/fs.js';
import { tarFile } from './helpers/tar-list.js';
import {
  blobDigests,
  blobFile,
  indexEntries,
  sha256,
  shortHex,
  TAGS,
  testdataImages,
  type ImageInfo,
  type Tag,
} from './helpers/expected-images.js';

const REPO = 'example.com/ferry/testdata';

let images: Record<Tag, ImageInfo>;
let noStore: string;
let fullStore: string;

/** Every run gets FERRY_STORE pointing at a throwaway path, so nothing can reach ~/.local. */
function run(args: string[], store?: string): Promise<RunResult> {
  return ferry(store ? ['--store', store, ...args] : args, { env: { FERRY_STORE: noStore } });
}

async function ok(args: string[], store?: string): Promise<RunResult> {
  const r = await run(args, store);
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

async function copyAllInto(store: string): Promise<void> {
  for (const tag of TAGS) await ok(['copy', '-q', `oci:${TESTDATA}:${tag}`, `${REPO}:${tag}`], store);
}

/** A private store holding all five testdata images (a file copy of one filled through the CLI). */
async function storeWithAll(): Promise<string> {
  const dir = join(await tempDir(), 'store');
  await cp(fullStore, dir, { recursive: true });
  return dir;
}

function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}

function layerDigests(img: ImageInfo): string[] {
  return img.layers!.map((l) => l.digest);
}

beforeAll(async () => {
  images = await testdataImages();
  noStore = join(await tempDir(), 'no-default-store');
  fullStore = join(await tempDir(), 'template-store');
  await copyAllInto(fullStore);
});

describe.concurrent('copy into the store, then images', () => {
  it('copies all five testdata images and images lists them with short digests and platforms', async () => {
    const store = join(await tempDir(), 'store');
    await copyAllInto(store);
    const r = await ok(['images'], store);
    const rows = r.stdout.trim().split('\n');
    expect(rows[0]).toMatch(/^REPOSITORY\s+TAG\s+DIGEST\s+PLATFORMS\s+SIZE$/);
    expect(rows).toHaveLength(1 + TAGS.length);
    for (const tag of TAGS) {
      const row = rows.find((l) => l.split(/\s+/)[1] === tag);
      expect(row, tag).toBeDefined();
      const [repo, , short, platforms] = row!.split(/\s+/);
      expect(repo).toBe(REPO);
      expect(short).toBe(shortHex(images[tag].digest));
      expect(platforms).toBe(tag === 'multi' ? 'linux/amd64,linux/arm64' : 'linux/amd64');
    }
  });

  it('images --json parses and holds the five expected digests', async () => {
    const store = await storeWithAll();
    const list = JSON.parse((await ok(['images', '--json'], store)).stdout) as Array<{ name: string; tag: string; digest: string; platforms: string[] }>;
    expect(list).toHaveLength(TAGS.length);
    expect(Object.fromEntries(list.map((i) => [i.tag, i.digest]))).toEqual(Object.fromEntries(TAGS.map((t) => [t, images[t].digest])));
    expect(list.map((i) => i.name).sort()).toEqual(TAGS.map((t) => `${REPO}:${t}`).sort());
    expect(list.find((i) => i.tag === 'multi')!.platforms).toEqual(['linux/amd64', 'linux/arm64']);
  });

  it('copies a store image out to an oci: layout with the same digests', async () => {
    const store = await storeWithAll();
    const dest = join(await tempDir(), 'out');
    const r = await ok(['copy', `${REPO}:layers`, `oci:${dest}:x`], store);
    expect(r.stdout).toContain(`Digest: ${images.layers.digest}`);
    expect(await blobDigests(dest)).toEqual([images.layers.digest, images.layers.config!, ...layerDigests(images.layers)].sort());
    await ok(['verify', dest]);
  });

  it('images shows an image whose layer blob is missing, or whose config is cut short, as DAMAGED (and --json says why); the others stay healthy', async () => {
    const store = await storeWithAll();
    const lostLayer = images.layers.layers![1]!.digest;
    const cutConfig = images.docker.config!;
    await rm(blobFile(store, lostLayer));
    await truncate(blobFile(store, cutConfig), 10);
    const uses = (t: Tag, d: string) => images[t].config === d || (images[t].layers ?? []).some((l) => l.digest === d);
    const damaged = TAGS.filter((t) => uses(t, lostLayer) || uses(t, cutConfig));
    expect(damaged).toEqual(expect.arrayContaining(['layers', 'docker']));
    const r = await ok(['images'], store);
    for (const t of TAGS) {
      const row = r.stdout.split('\n').find((l) => l.split(/\s+/)[1] === t)!;
      expect(row.endsWith('DAMAGED'), `${t}: ${row}`).toBe(damaged.includes(t));
    }
    expect(r.stderr).toContain(`${REPO}:layers is damaged (layer ${lostLayer} is missing from the store); run \`ferry verify\``);
    expect(r.stderr).toContain(`${REPO}:docker is damaged (config ${cutConfig} is 10 bytes, `);
    const list = JSON.parse((await ok(['images', '--json'], store)).stdout) as Array<{ tag: string; damaged?: string }>;
    expect(list.filter((i) => i.damaged).map((i) => i.tag).sort()).toEqual([...damaged].sort());
    expect(list.find((i) => i.tag === 'layers')!.damaged).toBe(`layer ${lostLayer} is missing from the store`);
    expect(list.find((i) => i.tag === 'plain')!.damaged).toBeUndefined();
  });

  it('images on a store that does not exist yet prints only the header; on a path that is something else it says so', async () => {
    const r = await ok(['images'], join(await tempDir(), 'absent'));
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const notStore = await tempDir();
    const wrong = await run(['images'], notStore);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain(`${notStore} is not an OCI image layout`);
  });
});

describe.concurrent('inspect', () => {
  it('prints the manifest and config of "layers" as JSON', async () => {
    const store = await storeWithAll();
    const doc = JSON.parse((await ok(['inspect', `${REPO}:layers`], store)).stdout) as {
      name: string;
      digest: string;
      mediaType: string;
      manifest: { config: { digest: string }; layers: Array<{ digest: string }> };
      config: { architecture: string; os: string; rootfs: { diff_ids: string[] } };
    };
    expect(doc.name).toBe(`${REPO}:layers`);
    expect(doc.digest).toBe(images.layers.digest);
    expect(doc.mediaType).toBe(images.layers.mediaType);
    expect(doc.manifest.config.digest).toBe(images.layers.config);
    expect(doc.manifest.layers.map((l) => l.digest)).toEqual(layerDigests(images.layers));
    expect(`${doc.config.os}/${doc.config.architecture}`).toBe('linux/amd64');
    expect(doc.config.rootfs.diff_ids).toEqual(images.layers.layers!.map((l) => l.diffId));
  });

  it.each(['layers', 'multi', 'docker'] as const)('--raw prints the stored bytes of "%s" (they hash to the expected digest)', async (tag) => {
    const store = await storeWithAll();
    const r = await ok(['inspect', '--raw', `${REPO}:${tag}`], store);
    expect(Buffer.byteLength(r.stdout)).toBe(images[tag].size);
    expect(sha256(r.stdout)).toBe(images[tag].digest);
  });

  it('--platform linux/arm64 on "multi" shows the arm64 manifest and config', async () => {
    const store = await storeWithAll();
    const arm = images.multi.platforms!['linux/arm64/v8']!;
    const doc = JSON.parse((await ok(['inspect', '--platform', 'linux/arm64', `${REPO}:multi`], store)).stdout) as {
      digest: string;
      manifest: { config: { digest: string } };
      config: { architecture: string; variant?: string };
    };
    expect(doc.digest).toBe(arm.manifest);
    expect(doc.manifest.config.digest).toBe(arm.config);
    expect(doc.config.architecture).toBe('arm64');
    // A list is refused as such (it said "no image for platform linux/amd64,linux/arm64").
    const two = await run(['inspect', '--platform', 'linux/amd64,linux/arm64', `${REPO}:multi`], store);
    expect(two.code).toBe(2);
    expect(two.stderr).toContain("inspect shows one platform's image; give one");
  });

  it('inspect of "multi" without --platform shows the index', async () => {
    const store = await storeWithAll();
    const doc = JSON.parse((await ok(['inspect', `${REPO}:multi`], store)).stdout) as { digest: string; index: { manifests: unknown[] } };
    expect(doc.digest).toBe(images.multi.digest);
    expect(doc.index.manifests).toHaveLength(3);
  });

  it('inspect of an unknown image exits 2 and names it', async () => {
    const store = await storeWithAll();
    const r = await run(['inspect', 'example.com/nothing:here'], store);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('example.com/nothing:here');
  });

  it('inspect reads archives in place: docker-archive: and oci-archive:', async () => {
    const file = join(await tempDir(), 'one.tar.gz');
    await ok(['save', '-q', `oci:${TESTDATA}:layers`, '-o', file]);
    for (const where of [`docker-archive:${file}`, `oci-archive:${file}`]) {
      const r = await ok(['inspect', where]);
      const doc = JSON.parse(r.stdout);
      expect(doc.digest, where).toBe(images.layers.digest);
      expect(doc.config.rootfs.diff_ids).toHaveLength(images.layers.layers!.length);
    }
  });

  it('inspect reads an oci: location directly', async () => {
    const doc = JSON.parse((await ok(['inspect', `oci:${TESTDATA}:zstd`])).stdout) as { digest: string; manifest: { layers: Array<{ mediaType: string }> } };
    expect(doc.digest).toBe(images.zstd.digest);
    expect(doc.manifest.layers[0]!.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd');
  });
});

describe.concurrent('compile cache', () => {
  it('keeps Node\'s compile cache under $XDG_CACHE_HOME/ferry/compile; NODE_DISABLE_COMPILE_CACHE or an unusable directory runs without one, silently', async () => {
    const home = await tempDir();
    const cached = await ferry(['--version'], { env: { XDG_CACHE_HOME: home } });
    expect(cached.code, cached.stderr).toBe(0);
    expect(cached.stderr).toBe('');
    const [versionDir] = await readdir(join(home, 'ferry', 'compile'));
    expect(versionDir).toMatch(/^v\d+\./);
    expect((await readdir(join(home, 'ferry', 'compile', versionDir!))).length).toBeGreaterThan(0);

    const off = await tempDir();
    const disabled = await ferry(['--version'], { env: { XDG_CACHE_HOME: off, NODE_DISABLE_COMPILE_CACHE: '1' } });
    expect(disabled.code, disabled.stderr).toBe(0);
    expect(await readdir(off)).toEqual([]);

    // The cache's parent is a file: nothing can be created there, and the command does not care.
    const blocked = join(await tempDir(), 'not-a-dir');
    await writeFile(blocked, 'x');
    const unusable = await ferry(['--version'], { env: { XDG_CACHE_HOME: blocked } });
    expect(unusable.code, unusable.stderr).toBe(0);
    expect(unusable.stderr).toBe('');
    expect(unusable.stdout).toBe(cached.stdout);
  });
});

describe.concurrent('numeric options', () => {
  it('a --jobs that is not a whole number from 1 to 64 is a usage error quoting it, and nothing is copied (NaN used to copy no blob and exit 0)', async () => {
    for (const jobs of ['abc', '0', '-3', '2.5', '']) {
      const dst = join(await tempDir(), 'dst');
      const r = await run(['copy', '--jobs', jobs, `oci:${TESTDATA}:layers`, `oci:${dst}:l`]);
      expect(r.code, jobs).toBe(2);
      expect(r.stderr).toContain(`--jobs takes a whole number of transfers from 1 to 64, not ${JSON.stringify(jobs)}`);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      await expect(stat(dst)).rejects.toThrow();
    }
    const dst = join(await tempDir(), 'dst');
    await ok(['copy', '--jobs', '2', `oci:${TESTDATA}:layers`, `oci:${dst}:l`]);
    await ok(['verify', dst]);
  });

  it('completion --help says what completion does instead of printing the script', async () => {
    const r = await run(['completion', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('source <(ferry completion)');
    expect(r.stdout).not.toContain('###-begin');
    expect((await run(['completion'])).stdout).toContain('###-begin-ferry-completions-###');
  });

  it('completion after a typed -- offers long options only (yargs offered one-letter aliases as --q, --o)', async () => {
    const words = (await run(['--get-yargs-completions', 'ferry', 'save', '--'])).stdout.split('\n').filter(Boolean);
    expect(words).toContain('--quiet');
    expect(words).toContain('--output');
    expect(words.filter((w) => /^--[^-]$/.test(w))).toEqual([]);
    const short = (await run(['--get-yargs-completions', 'ferry', 'save', '-'])).stdout.split('\n');
    expect(short).toContain('-q');
  });

  it('a misspelt flag before the arguments is named, not reported as a missing argument', async () => {
    const r = await run(['pull', '--forse', 'alpine:3.20']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('Unknown argument: --forse');
    expect(r.stderr).not.toContain('Not enough non-option arguments');
    const missing = await run(['pull']);
    expect(missing.stderr).toContain('Not enough non-option arguments');
  });

  it('--timeout, --level and --page-size quote what was typed, not NaN', async () => {
    const cases: Array<[string[], string]> = [
      [['--timeout', 'abc', 'tags', '127.0.0.1:1/x'], '--timeout takes a number of seconds above 0, not "abc"'],
      [['--timeout', '0', 'tags', '127.0.0.1:1/x'], '--timeout takes a number of seconds above 0, not "0"'],
      [['save', `oci:${TESTDATA}:plain`, '--level', 'fast', '-o', join(await tempDir(), 'x.tar.gz')], '--level takes a whole number, not "fast"'],
      [['tags', '--page-size', 'ten', '127.0.0.1:1/x'], '--page-size takes a whole number of entries at least 1, not "ten"'],
    ];
    for (const [args, message] of cases) {
      const r = await run(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toContain('NaN');
    }
  });
});

describe.concurrent('store names', () => {
  it('a location with a scheme ferry does not know (https://, a typo) is a usage error, not a missing store image', async () => {
    for (const where of ['https://registry.example/app:1', 'dokcer://registry.example/app:1']) {
      const r = await run(['copy', where, 'x/y:1']);
      expect(r.code, where).toBe(2);
      expect(r.stderr).toContain(`unknown location type ${where.split(':')[0]}:// in "${where}"`);
      expect(r.stderr).toContain('hint: an image in a registry is docker://HOST/NAME[:TAG]');
    }
  });

  it('verify of a path that is not there says so (it looked for a store image of that name)', async () => {
    const dir = await tempDir();
    for (const target of [join(dir, 'nosuch.tar'), 'nosuch.tar.gz', './no/such/dir', `${dir}/set.00*.tar`]) {
      const r = await run(['verify', target]);
      expect(r.code, target).toBe(2);
      expect(r.stderr).toContain(`${target}: no such file or directory`);
      expect(r.stderr).not.toContain('not found in');
    }
    const plainDir = await run(['verify', dir]);
    expect(plainDir.code).toBe(2);
    expect(plainDir.stderr).toContain(`${dir} is a directory but not an OCI image layout`);
  });

  it('a bare path as a location is a usage error that names the transport to write (it was "invalid reference")', async () => {
    const dir = await tempDir();
    const archive = await run(['copy', `oci:${TESTDATA}:plain`, join(dir, 'x.tar.gz')]);
    expect(archive.code).toBe(2);
    expect(archive.stderr).toContain(`"${join(dir, 'x.tar.gz')}" is a path: say what it is`);
    expect(archive.stderr).toContain(`hint: an archive is docker-archive:${join(dir, 'x.tar.gz')}`);
    const layout = await run(['save', './some/layout', '-o', join(dir, 'y.tar')]);
    expect(layout.code).toBe(2);
    expect(layout.stderr).toContain('hint: a layout directory is oci:./some/layout');
    expect(await readdir(dir)).toEqual([]);
  });

  it('a name missing from the store says how to read it from its registry instead (save, copy, export)', async () => {
    const store = await storeWithAll();
    const out = join(await tempDir(), 'x.tar');
    for (const args of [['save', '127.0.0.1:5999/team/app:2', '-o', out], ['copy', 'registry.example/app:1', `oci:${out}.d`], ['export', 'nginx:1.27', '-o', out]]) {
      const r = await run(args, store);
      expect(r.code, args.join(' ')).toBe(2);
      const name = args[1]!;
      expect(r.stderr).toContain(`image "${name}" not found in ${store}`);
      expect(r.stderr).toMatch(new RegExp(`hint: available: .*; to read it straight from its registry, write docker://${name.replace(/[.]/g, '\\.')}`));
    }
    expect(await exists(out)).toBe(false);
    expect(await exists(`${out}.d`)).toBe(false);
    // A digest or a short id names no repository: no such hint.
    for (const id of [`sha256:${'ab'.repeat(32)}`, 'abcdef012345']) {
      const r = await run(['save', id, '-o', out], store);
      expect(r.code, id).toBe(2);
      expect(r.stderr).not.toContain('docker://');
    }
  });
});

describe.concurrent('paths that are not what the command needs', () => {
  it('a directory given as an archive, a file given as a layout, a missing output directory, an existing output, a name against --compress, garbage to verify', async () => {
    const store = await storeWithAll();
    const dir = await tempDir();
    const file = join(dir, 'a-file');
    await writeFile(file, 'not a layout');
    for (const args of [['load', '-i', dir], ['push', '--from', dir, '127.0.0.1:1/x'], ['push', '--from', dir, '--dry-run', '127.0.0.1:1/x']]) {
      const r = await run(args, store);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(`${dir} is a directory, not an archive`);
      expect(r.stderr).toContain(`hint: name a .tar, .tar.gz or .tar.zst file`);
    }
    const layout = await run(['copy', `${REPO}:plain`, `oci:${file}:x`], store);
    expect(layout.code).toBe(2);
    expect(layout.stderr).toContain(`${file} exists and is not a directory: an OCI image layout is a directory`);
    expect(await readFile(file, 'utf8')).toBe('not a layout');

    const missing = join(dir, 'no', 'such', 'x.tar');
    const nowhere = await run(['save', `${REPO}:plain`, '-o', missing], store);
    expect(nowhere.code).toBe(7);
    expect(nowhere.stderr).toContain(`cannot write ${missing}: the directory ${join(dir, 'no', 'such')} does not exist`);
    expect(nowhere.stderr).not.toContain('.tmp-');
    // A directory that exists but takes no new files: not called missing.
    const proc = await run(['save', `${REPO}:plain`, '-o', '/proc/x.tar'], store);
    expect(proc.code).toBe(7);
    expect(proc.stderr).toContain('cannot write /proc/x.tar: no file can be created in /proc');
    expect(proc.stderr).not.toContain('does not exist');

    // A command's own usage errors carry their hint (they used to end with only "Run 'ferry --help'").
    const existing = await run(['save', `${REPO}:plain`, '-o', file], store);
    expect(existing.code).toBe(2);
    expect(existing.stderr).toContain('hint: pass --force to replace it, or choose another name');
    expect(existing.stderr).not.toContain('ferry --help');

    // A name that says one compression and --compress another: refused before anything is written.
    for (const cmd of ['save', 'export']) {
      const mixed = await run([cmd, `${REPO}:plain`, '-o', join(dir, 'x.tar.gz'), '--compress', 'zstd'], store);
      expect(mixed.code, cmd).toBe(2);
      expect(mixed.stderr).toContain(`-o ${join(dir, 'x.tar.gz')} says gzip, but --compress zstd was given`);
      expect(mixed.stderr).toContain('hint: name the file .tar.zst, or leave out --compress');
      expect(await exists(join(dir, 'x.tar.gz'))).toBe(false);
    }

    const garbage = join(dir, 'garbage.bin');
    await writeFile(garbage, Buffer.alloc(3000, 7));
    const checked = await run(['verify', garbage], store);
    expect(checked.code).toBe(3);
    expect(checked.stdout).toMatch(/^PROBLEM invalid: .*not a tar archive/m);
    // Shorter than one tar header: not an archive (exit 3), rather than a "truncated" one (exit 4).
    const tiny = join(dir, 'tiny.tar');
    await writeFile(tiny, 'hello!!\n');
    for (const args of [['load', '-i', tiny], ['inventory', tiny, '-o', join(dir, 'inv.json')]]) {
      const r = await run(args, store);
      expect(r.code, args[0]).toBe(3);
      expect(r.stderr).toContain(`${tiny}: not a tar archive (8 bytes, less than one tar header)`);
    }
  });
});

describe.concurrent('tag', () => {
  it('tag gives an image a new name that images shows with the same digest', async () => {
    const store = await storeWithAll();
    await ok(['tag', `${REPO}:layers`, 'example.com/other/name:v2'], store);
    const list = JSON.parse((await ok(['images', '--json'], store)).stdout) as Array<{ name: string; digest: string }>;
    expect(list).toHaveLength(TAGS.length + 1);
    expect(list.find((i) => i.name === 'example.com/other/name:v2')?.digest).toBe(images.layers.digest);
    expect((await ok(['images'], store)).stdout).toMatch(/example\.com\/other\/name\s+v2\s+3b52f2bbd32a/);
  });

  it('naming an unnamed image (pulled by digest) replaces its <none> entry; other names stay', async () => {
    const store = await storeWithAll();
    const doc = JSON.parse(await readFile(join(store, 'index.json'), 'utf8')) as { manifests: Array<{ digest: string; annotations?: Record<string, string> }> };
    doc.manifests.push({ ...doc.manifests.find((m) => m.digest === images.zstd.digest)!, annotations: undefined });
    doc.manifests = doc.manifests.filter((m) => m.digest !== images.zstd.digest || !m.annotations);
    await writeFile(join(store, 'index.json'), JSON.stringify(doc));
    expect((await ok(['images'], store)).stdout).toMatch(/<none>\s+<none>\s+9459cb7b93ce/);
    await ok(['tag', shortHex(images.zstd.digest), 'example.com/named:1'], store);
    const list = JSON.parse((await ok(['images', '--json'], store)).stdout) as Array<{ name?: string; digest: string }>;
    expect(list.filter((i) => i.digest === images.zstd.digest).map((i) => i.name)).toEqual(['example.com/named:1']);
    await ok(['tag', 'example.com/named:1', 'example.com/named:2'], store);
    expect((await indexEntries(store)).filter((e) => e.digest === images.zstd.digest)).toHaveLength(2);
  });

  it('tag to a digest-only target exits 2 and leaves the store unchanged', async () => {
    const store = await storeWithAll();
    const before = await readFile(join(store, 'index.json'), 'utf8');
    const r = await run(['tag', `${REPO}:layers`, `example.com/other/name@${images.layers.digest}`], store);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/digest/);
    expect(await readFile(join(store, 'index.json'), 'utf8')).toBe(before);
  });

  it('a digest as the tag target (sha256:<hex>, or NAME:TAG@DIGEST) exits 2 and leaves the store unchanged', async () => {
    const store = await storeWithAll();
    const before = await readFile(join(store, 'index.json'), 'utf8');
    for (const target of [images.layers.digest, `example.com/x:1@${images.plain.digest}`]) {
      const r = await run(['tag', `${REPO}:layers`, target], store);
      expect(r.code, target).toBe(2);
      expect(r.stderr).toContain(`"${target}"`);
      expect(r.stderr).toContain('a tag target must be NAME[:TAG]');
    }
    expect(await readFile(join(store, 'index.json'), 'utf8')).toBe(before);
  });

  it('tag onto a name another image has moves the name and says so, and when that image has no name left', async () => {
    const store = await storeWithAll();
    await ok(['tag', `${REPO}:plain`, 'example.com/app:1'], store);
    const r = await ok(['tag', `${REPO}:zstd`, 'example.com/app:1'], store);
    expect(r.stdout).toContain(`example.com/app:1 named ${images.plain.digest} until now`);
    expect(r.stdout).not.toContain('no other name');
    const moved = await ok(['tag', '--json', `${REPO}:docker`, 'example.com/app:1'], store);
    expect(JSON.parse(moved.stdout)).toEqual({ digest: images.docker.digest, name: 'example.com/app:1', previous: images.zstd.digest });
    // An image whose only name moves away is garbage from then on: the message says so.
    await ok(['tag', `${REPO}:plain`, 'example.com/app:2'], store);
    await ok(['rmi', `${REPO}:plain`], store);
    const orphan = await ok(['tag', `${REPO}:zstd`, 'example.com/app:2'], store);
    expect(orphan.stdout).toContain(`example.com/app:2 named ${images.plain.digest} until now (it has no other name now: the next ferry gc or rmi deletes it)`);
    // The same image again: nothing moved, nothing said.
    const same = await ok(['tag', '--json', `${REPO}:zstd`, 'example.com/app:2'], store);
    expect(JSON.parse(same.stdout)).toEqual({ digest: images.zstd.digest, name: 'example.com/app:2' });
    expect((await ok(['tag', `${REPO}:zstd`, 'example.com/app:2'], store)).stdout).not.toContain('until now');
  });

  it('tag of an unknown source exits 2', async () => {
    const store = await storeWithAll();
    const r = await run(['tag', 'example.com/nothing:here', 'example.com/x:1'], store);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('example.com/nothing:here');
  });
});

describe.concurrent('rmi', () => {
  it('rmi untags an image and deletes the blobs only it used', async () => {
    const store = await storeWithAll();
    const r = await ok(['rmi', `${REPO}:layers`], store);
    expect(r.stdout).toContain(`Untagged: ${REPO}:layers`);
    const own = [images.layers.digest, images.layers.config!, ...layerDigests(images.layers)];
    for (const d of own) expect(await exists(blobFile(store, d)), d).toBe(false);
    for (const tag of TAGS.filter((t) => t !== 'layers')) expect(await exists(blobFile(store, images[tag].digest)), tag).toBe(true);
    const list = JSON.parse((await ok(['images', '--json'], store)).stdout) as Array<{ tag: string }>;
    expect(list.map((i) => i.tag).sort()).toEqual(TAGS.filter((t) => t !== 'layers').sort());
    await ok(['verify'], store);
  });

  it('rmi keeps blobs another image shares (multi vs its single-platform amd64 copy)', async () => {
    const store = await storeWithAll();
    await ok(['copy', '-q', '--platform', 'linux/amd64', `oci:${TESTDATA}:multi`, 'example.com/amd:1'], store);
    await ok(['rmi', `${REPO}:multi`], store);
    const amd = images.multi.platforms!['linux/amd64']!;
    const arm = images.multi.platforms!['linux/arm64/v8']!;
    for (const d of [amd.manifest, amd.config, ...amd.layers.map((l) => l.digest)]) expect(await exists(blobFile(store, d)), d).toBe(true);
    for (const d of [images.multi.digest, arm.manifest, arm.config, ...arm.layers.map((l) => l.digest), images.multi.attestation!.manifest]) {
      expect(await exists(blobFile(store, d)), d).toBe(false);
    }
    await ok(['verify'], store);
    await ok(['inspect', 'example.com/amd:1'], store);
  });

  it('rmi of one of two names of an image deletes no blob', async () => {
    const store = await storeWithAll();
    await ok(['tag', `${REPO}:plain`, 'example.com/alias:1'], store);
    const before = await blobDigests(store);
    const r = await ok(['rmi', `${REPO}:plain`], store);
    expect(r.stdout).not.toContain('Deleted');
    expect(await blobDigests(store)).toEqual(before);
    await ok(['inspect', 'example.com/alias:1'], store);
  });

  it('rmi of a digest that two names share refuses without --force (as docker does), and removes both with it', async () => {
    const store = await storeWithAll();
    await ok(['tag', `${REPO}:plain`, 'example.com/alias:1'], store);
    const before = await blobDigests(store);
    const refused = await run(['rmi', images.plain.digest], store);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${images.plain.digest} has 2 names: ${REPO}:plain, example.com/alias:1`);
    expect(refused.stderr).toContain('hint: remove the names one at a time, or pass --force');
    expect(await blobDigests(store)).toEqual(before);
    const forced = await ok(['rmi', '--force', images.plain.digest], store);
    expect(forced.stdout).toContain(`Untagged: ${REPO}:plain`);
    expect(forced.stdout).toContain('Untagged: example.com/alias:1');
    expect((await run(['inspect', 'example.com/alias:1'], store)).code).toBe(2);
  });

  it('the short id ferry images shows names an image (inspect, tag, save, rmi)', async () => {
    const store = await storeWithAll();
    const short = shortHex(images.plain.digest);
    expect((await ok(['images'], store)).stdout).toContain(short);
    expect(JSON.parse((await ok(['inspect', short], store)).stdout).digest).toBe(images.plain.digest);
    // Saved by short id or digest, the image keeps its name (the id was taken for a name: docker.io/library/<id>).
    const out = await tempDir();
    for (const id of [short, images.plain.digest]) {
      const file = join(out, `${id.replace(':', '-')}.tar`);
      await ok(['save', '-q', id, '-o', file], store);
      const manifest = JSON.parse((await tarFile(file, 'manifest.json')).toString());
      expect(manifest[0].RepoTags).toEqual([`${REPO}:plain`]);
    }
    await ok(['tag', short, 'example.com/byid:1'], store);
    const refused = await run(['rmi', short], store);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain(`${short} has 2 names`);
    await ok(['save', '-q', `sha256:${short}`, '-o', join(await tempDir(), 'a.tar')], store);
    expect((await ok(['rmi', '-f', short], store)).stdout).toContain('Untagged: example.com/byid:1');
    // Too short to be an id, and not a name: not found.
    expect((await run(['inspect', short.slice(0, 6)], store)).code).toBe(2);
  });

  // `alpine` is docker.io/library/alpine:latest, as in docker: never whatever image is tagged alpine.
  it('a bare word names an image, not a tag of another one: rmi alpine leaves nginx:alpine alone', async () => {
    const store = await storeWithAll();
    await ok(['tag', `${REPO}:zstd`, 'nginx:alpine'], store);
    const before = await blobDigests(store);
    for (const cmd of [['rmi', 'alpine'], ['inspect', 'alpine'], ['tag', 'alpine', 'example.com/x:1'], ['verify', 'alpine']]) {
      const r = await run(cmd, store);
      expect(r.code, cmd.join(' ')).toBe(2);
      expect(r.stderr).toContain('image "alpine" not found');
    }
    expect(await blobDigests(store)).toEqual(before);
    expect((await indexEntries(store)).some((e) => e.annotations?.['io.containerd.image.name'] === 'docker.io/library/nginx:alpine')).toBe(true);
    // A layout's bare tag still names its image (oci:DIR:TAG).
    expect(JSON.parse((await ok(['inspect', `oci:${TESTDATA}:zstd`])).stdout).digest).toBe(images.zstd.digest);
  });

  it('NAME@DIGEST names that digest under that name only: another repository\'s image is not removed', async () => {
    const store = await storeWithAll();
    const before = await blobDigests(store);
    const r = await run(['rmi', `alpine@${images.layers.digest}`], store);
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`${images.layers.digest} is there, but not under docker.io/library/alpine`);
    expect(r.stderr).toContain(`hint: it is named ${REPO}:layers`);
    expect(await blobDigests(store)).toEqual(before);
    // Under its own repository it is found, named as that repository names it.
    await ok(['tag', `${REPO}:plain`, 'example.com/alias:1'], store);
    expect(JSON.parse((await ok(['inspect', `example.com/alias@${images.plain.digest}`], store)).stdout).name).toBe('example.com/alias:1');
    expect((await run(['inspect', `example.com/alias:1@${images.layers.digest}`], store)).stderr).toContain(
      `example.com/alias:1 is ${images.plain.digest}, not ${images.layers.digest}`,
    );
    // rmi NAME@DIGEST removes that repository's names of the digest and no other.
    const gone = await ok(['rmi', `example.com/alias@${images.plain.digest}`], store);
    expect(gone.stdout).toContain('Untagged: example.com/alias:1');
    expect(gone.stdout).not.toContain(`${REPO}:plain`);
    await ok(['inspect', `${REPO}:plain`], store);
  });

  it('rmi given one image twice (short and full name) removes it once and succeeds', async () => {
    const store = await storeWithAll();
    await ok(['tag', `${REPO}:plain`, 'alpine'], store);
    const r = await ok(['rmi', 'alpine', 'docker.io/library/alpine:latest'], store);
    expect(r.stdout).toContain('Untagged: docker.io/library/alpine:latest');
    await ok(['inspect', `${REPO}:plain`], store);
  });

  it('rmi --json whose blob pruning is refused prints only the error line, which says what was untagged', async () => {
    const store = await storeWithAll();
    await rm(blobFile(store, images.layers.digest));
    const r = await run(['rmi', '--json', `${REPO}:plain`], store);
    expect(r.code, r.stderr).toBe(4);
    const doc = JSON.parse(r.stdout) as { event: string; code: string; message: string };
    expect(doc).toMatchObject({ event: 'error', code: 'INTEGRITY', exitCode: 4 });
    expect(doc.message).toContain(`untagged ${REPO}:plain, but no blob was deleted`);
  });

  it('rmi and tag on a store that does not exist say so and create nothing', async () => {
    const store = join(await tempDir(), 'not-there');
    for (const cmd of [['rmi', 'alpine'], ['tag', 'alpine', 'x:1']]) {
      const r = await run(cmd, store);
      expect(r.code, cmd.join(' ')).toBe(2);
      expect(r.stderr).toContain(`image "alpine" not found: the store ${store} does not exist`);
      expect(r.stderr).toContain('hint: the store is --store DIR, else $FERRY_STORE');
    }
    expect(await exists(store)).toBe(false);
  });

  it('rmi of an unknown name exits 2 and deletes nothing', async () => {
    const store = await storeWithAll();
    const before = await blobDigests(store);
    const r = await run(['rmi', 'example.com/nothing:here'], store);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('example.com/nothing:here');
    expect(await blobDigests(store)).toEqual(before);
  });
});

describe.concurrent('gc', () => {
  async function dropStray(store: string): Promise<string> {
    const bytes = Buffer.from('an unreferenced blob dropped in by the test\n');
    const digest = sha256(bytes);
    await writeFile(blobFile(store, digest), bytes);
    return digest;
  }

  it('gc deletes an unreferenced blob and keeps every referenced one', async () => {
    const store = await storeWithAll();
    const referenced = await blobDigests(store);
    const stray = await dropStray(store);
    const r = await ok(['gc'], store);
    expect(r.stdout).toContain(stray);
    expect(await exists(blobFile(store, stray))).toBe(false);
    expect(await blobDigests(store)).toEqual(referenced);
    await ok(['verify'], store);
  });

  // The blobs below a missing manifest are what a repair reuses: gc must not call them garbage.
  it('gc refuses and deletes nothing when a referenced manifest (a child or a root) is missing; after rmi it collects', async () => {
    const store = await storeWithAll();
    const amd = images.multi.platforms!['linux/amd64']!;
    await rm(blobFile(store, amd.manifest));
    const before = await blobDigests(store);
    const stray = await dropStray(store);
    const r = await run(['gc'], store);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`gc stopped: 1 referenced manifest(s) missing`);
    expect(r.stderr).toContain(`${amd.manifest} (in ${images.multi.digest})`);
    expect(r.stderr).toContain('nothing was deleted');
    expect(r.stderr).not.toMatch(/\n\s+at /);
    expect(await blobDigests(store)).toEqual([...before, stray].sort());
    expect((await run(['gc', '--dry-run'], store)).code).toBe(4);

    // A missing root: the same refusal, naming it.
    await rm(blobFile(store, images.layers.digest));
    const r2 = await run(['gc'], store);
    expect(r2.code).toBe(4);
    expect(r2.stderr).toContain('2 referenced manifest(s) missing');
    expect(r2.stderr).toContain(images.layers.digest);
    expect(await exists(blobFile(store, images.layers.layers![1]!.digest))).toBe(true);

    // Once the damaged images are removed by name (rmi deletes what they alone held), gc runs
    // and the rest verifies.
    await ok(['rmi', `${REPO}:multi`, `${REPO}:layers`], store);
    await ok(['gc'], store);
    expect(await exists(blobFile(store, amd.config))).toBe(false);
    expect(await exists(blobFile(store, stray))).toBe(false);
    await ok(['verify'], store);
  });

  it('rmi of a sound image while another is missing its manifest untags it but deletes no blob (exit 4)', async () => {
    const store = await storeWithAll();
    await rm(blobFile(store, images.layers.digest));
    const before = await blobDigests(store);
    const r = await run(['rmi', `${REPO}:plain`], store);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stdout).toContain(`Untagged: ${REPO}:plain`);
    expect(r.stderr).toContain('no blob was deleted: gc stopped: 1 referenced manifest(s) missing');
    expect(await blobDigests(store)).toEqual(before);
    expect((await run(['inspect', `${REPO}:plain`], store)).code).toBe(2);
  });

  it('gc of a directory that is not a layout refuses, creates nothing and deletes nothing', async () => {
    const dir = await tempDir();
    const blob = join(dir, 'blobs', 'sha256', 'ab'.repeat(32));
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFile(blob, 'someone else\'s bytes');
    const r = await run(['gc', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`${dir} is not an OCI image layout`);
    expect(await readFile(blob, 'utf8')).toBe('someone else\'s bytes');
    expect((await readdir(dir)).sort()).toEqual(['blobs']);
  });

  // An empty index.json written over blobs already there would make every one of them garbage.
  it('gc of a store that is not a layout (--store), or of a layout without index.json, refuses and deletes nothing', async () => {
    const noHeader = await storeWithAll();
    await rm(join(noHeader, 'oci-layout'));
    await rm(join(noHeader, 'index.json'));
    const before = await blobDigests(noHeader);
    for (const args of [['gc'], ['gc', '--dry-run'], ['rmi', 'alpine'], ['tag', `${REPO}:plain`, 'x:1']]) {
      const r = await run(args, noHeader);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toContain(`the store ${noHeader} is not an OCI image layout (no oci-layout file); nothing was changed`);
    }
    expect(await blobDigests(noHeader)).toEqual(before);
    expect((await readdir(noHeader)).sort()).toEqual(['blobs']);

    const noIndex = await storeWithAll();
    await rm(join(noIndex, 'index.json'));
    for (const [args, store] of [[['gc'], noIndex], [['gc', '--dry-run'], noIndex], [['gc', noIndex], undefined]] as const) {
      const r = await run([...args], store);
      expect(r.code, args.join(' ')).toBe(4);
      expect(r.stderr).toContain(`gc stopped: ${join(noIndex, 'index.json')} is missing, so every blob would look unreferenced`);
    }
    expect(await blobDigests(noIndex)).toEqual(before);
    const v = await run(['verify', '--json'], noIndex);
    expect(v.code).toBe(4);
    expect(JSON.parse(v.stdout).problems).toEqual([
      expect.objectContaining({ kind: 'missing', path: join(noIndex, 'index.json') }),
    ]);
  });

  it('a store whose index.json is empty or not JSON: every store command exits 3 saying what to do; no blob is deleted', async () => {
    for (const bytes of ['', 'not json', '{"schemaVersion":2}']) {
      const store = await storeWithAll();
      await writeFile(join(store, 'index.json'), bytes);
      const before = await blobDigests(store);
      for (const args of [['images'], ['inspect', `${REPO}:plain`], ['rmi', `${REPO}:plain`], ['tag', `${REPO}:plain`, 'x:1'], ['gc'], ['gc', '--dry-run']]) {
        const r = await run(args, store);
        expect(r.code, `${JSON.stringify(bytes)}: ${args.join(' ')}`).toBe(3);
        expect(r.stderr).toContain(join(store, 'index.json'));
        expect(r.stderr).toContain('hint: index.json lists the layout\'s images: restore it from a backup');
      }
      expect(await blobDigests(store)).toEqual(before);
      expect(await readFile(join(store, 'index.json'), 'utf8')).toBe(bytes);
    }
  });

  /** oci-layout and blobs/ last changed `ago` ms ago: a layout no other tool is making now. */
  async function settle(layout: string, ago = 120_000): Promise<void> {
    const then = new Date(Date.now() - ago);
    for (const p of ['oci-layout', 'blobs/sha256']) await utimes(join(layout, p), then, then).catch(() => {});
  }

  // A new index.json naming only the new image would make the next gc delete every other blob.
  it('writers into a store (or oci: layout) whose index.json is missing while blobs remain refuse (exit 4) and write nothing', async () => {
    const store = await storeWithAll();
    await rm(join(store, 'index.json'));
    await settle(store);
    const before = await blobDigests(store);
    const listing = (await readdir(store)).sort();
    const tar = join(await tempDir(), 'plain.tar');
    await ok(['save', '-q', `${REPO}:plain`, '-o', tar], fullStore);
    const writers: Array<[string[], string | undefined]> = [
      [['copy', '-q', `oci:${TESTDATA}:layers`, `${REPO}:again`], store],
      [['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${store}:again`], undefined],
      [['load', '-i', tar], store],
      [['import', join(TESTDATA, 'index.json'), 'x:1'], store],
      [['tag', `${REPO}:plain`, 'x:1'], store],
      [['rmi', `${REPO}:plain`], store],
    ];
    for (const [args, at] of writers) {
      const r = await run(args, at);
      expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(4);
      expect(r.stderr).toMatch(new RegExp(`${join(store, 'index.json')} is missing, yet ${join(store, 'blobs')} holds ${before.length} blob\\(s\\).*nothing was written`));
      expect(r.stderr).toContain(`hint: restore index.json from a backup (\`ferry verify ${store}\` shows the damage); or, to start afresh, move ${join(store, 'blobs')} away`);
    }
    expect(await blobDigests(store)).toEqual(before);
    expect((await readdir(store)).sort()).toEqual(listing);

    // Readers list nothing (exit 0) but say why: an empty table alone pointed nowhere.
    for (const args of [['images'], ['inspect', `${REPO}:plain`]]) {
      const r = await run(args, store);
      expect(r.stderr, args.join(' ')).toContain(`ferry: warning: ${join(store, 'index.json')} is missing, yet ${join(store, 'blobs')} holds ${before.length} blob(s): the names of its images are lost; restore index.json from a backup`);
    }
    expect((await run(['images'], store)).code).toBe(0);

    // The same with oci-layout gone too: it is not made a new, empty layout over those blobs.
    await rm(join(store, 'oci-layout'));
    const r = await run(['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${store}:again`]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`${join(store, 'index.json')} is missing, yet ${join(store, 'blobs')} holds ${before.length} blob(s)`);
    expect((await readdir(store)).sort()).toEqual(listing.filter((n) => n !== 'oci-layout'));
  });

  it('a layout without index.json but without blobs, or one changed moments ago (being made by another tool), is written into as before', async () => {
    const empty = join(await tempDir(), 'empty');
    await mkdir(join(empty, 'blobs', 'sha256'), { recursive: true });
    await writeFile(join(empty, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
    await settle(empty);
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, `${REPO}:plain`], empty);
    expect((await indexEntries(empty)).map((e) => e.digest)).toEqual([images.plain.digest]);

    // Another tool may write blobs first and oci-layout and index.json at the end.
    const making = await storeWithAll();
    await rm(join(making, 'index.json'));
    await settle(making, 1000);
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, `${REPO}:plain`], making);
    // A brand-new store: ferry writes index.json before oci-layout, so it never looks like the above.
    const fresh = join(await tempDir(), 'fresh');
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, `oci:${fresh}:x`]);
    await settle(fresh);
    await ok(['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${fresh}:y`]);
  });

  it('gc of a store that does not exist collects nothing and creates nothing', async () => {
    const store = join(await tempDir(), 'not-there');
    const r = await ok(['gc', '--json'], store);
    expect(JSON.parse(r.stdout)).toMatchObject({ removed: [], kept: 0 });
    expect(r.stderr).toContain(`the store ${store} does not exist: nothing to collect`);
    expect(await exists(store)).toBe(false);
  });

  it('gc --dry-run lists the unreferenced blob but deletes nothing', async () => {
    const store = await storeWithAll();
    const stray = await dropStray(store);
    const before = await blobDigests(store);
    const r = await ok(['gc', '--dry-run'], store);
    expect(r.stdout).toContain(`Would delete: ${stray}`);
    expect(await blobDigests(store)).toEqual(before);
  });
});

describe.concurrent('verify', () => {
  it('a clean store verifies with exit 0', async () => {
    const store = await storeWithAll();
    const r = await ok(['verify'], store);
    expect(r.stdout).toContain('0 problem(s)');
  });

  it('B1: one flipped byte in a layer blob exits 4 and names that blob', async () => {
    const dir = await testdataCopy();
    const bad = images.layers.layers![1]!.digest;
    await flipByte(blobFile(dir, bad));
    const r = await run(['verify', dir]);
    expect(r.code).toBe(4);
    expect(r.stdout).toContain(bad);
  });

  it('B1: verify names every problem: three damaged blobs are all reported', async () => {
    const dir = await testdataCopy();
    const bad = [images.layers.layers![0]!.digest, images.plain.layers![0]!.digest, images.docker.config!];
    for (const d of bad) await flipByte(blobFile(dir, d));
    const r = await run(['verify', dir]);
    expect(r.code).toBe(4);
    for (const d of bad) expect(r.stdout, d).toContain(d);
    expect(r.stdout).toContain('3 problem(s)');
  });

  it('B2: a blob cut short is one problem (its size, with what its content hashes to), not also a digest mismatch', async () => {
    const dir = await testdataCopy();
    const cut = [images.layers.layers![0]!.digest, images.docker.config!];
    for (const d of cut) await truncate(blobFile(dir, d), 10);
    const r = await run(['verify', dir]);
    expect(r.code).toBe(4);
    expect(r.stdout).toContain('2 problem(s)');
    for (const d of cut) expect(r.stdout).toMatch(new RegExp(`PROBLEM size: blob ${d}: size 10, expected \\d+ \\(content hashes to sha256:[a-f0-9]{64}\\)`));
    const json = JSON.parse((await run(['verify', '--json', dir])).stdout) as { problems: Array<{ kind: string; digest: string }> };
    expect(json.problems.map((p) => [p.kind, p.digest]).sort()).toEqual(cut.map((d) => ['size', d]).sort());
  });

  it('B1: inspect of a stored image whose manifest or config is gone says the image is damaged (exit 4), not that it is unknown', async () => {
    const store = await storeWithAll();
    await rm(blobFile(store, images.plain.config!));
    const r = await run(['inspect', `${REPO}:plain`], store);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`${REPO}:plain is damaged: blob ${images.plain.config} is missing from`);
    expect(r.stderr).toContain('hint: ferry verify lists what is missing');
    // A platform the image does not have is still the user's mistake.
    const multi = await run(['inspect', '--platform', 'linux/s390x', `${REPO}:multi`], store);
    expect(multi.code).toBe(2);
    expect(multi.stderr).not.toContain('damaged');
  });

  it('B1: a deleted referenced blob exits 4 and is reported missing', async () => {
    const dir = await testdataCopy();
    const gone = images.zstd.layers![0]!.digest;
    await rm(blobFile(dir, gone));
    const r = await run(['verify', dir]);
    expect(r.code).toBe(4);
    expect(r.stdout).toMatch(new RegExp(`missing.*${gone}|${gone}.*missing`));
  });

  it('oci:DIR:NAME:TAG writes into DIR under NAME:TAG (it went to a new directory DIR:NAME), and reads back from there', async () => {
    const dir = await tempDir();
    const dest = join(dir, 'backup');
    await ok(['copy', '-q', `oci:${TESTDATA}:plain`, `oci:${dest}`]);
    await ok(['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${dest}:example.com/team/app:1`]);
    expect(await readdir(dir)).toEqual(['backup']);
    const names = JSON.parse(await readFile(join(dest, 'index.json'), 'utf8')).manifests.map((m: { annotations?: Record<string, string> }) => m.annotations?.['org.opencontainers.image.ref.name']);
    expect(names).toContain('example.com/team/app:1');
    expect(JSON.parse((await ok(['inspect', `oci:${dest}:example.com/team/app:1`])).stdout).digest).toBe(images.layers.digest);
    await ok(['copy', '-q', `oci:${dest}:example.com/team/app:1`, `docker-archive:${join(dir, 'a.tar')}:example.com/team/app:2`]);
    expect(await readdir(dir)).toEqual(['a.tar', 'backup']);
    // One image under two names: the one asked for is the one carried (it took the first).
    await ok(['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${dest}:example.com/team/app:2`]);
    await ok(['save', '-q', `oci:${dest}:example.com/team/app:2`, '-o', join(dir, 'two.tar')]);
    const index = JSON.parse((await tarFile(join(dir, 'two.tar'), 'index.json')).toString());
    expect(index.manifests[0].annotations['org.opencontainers.image.ref.name']).toBe('example.com/team/app:2');
    expect(JSON.parse((await ok(['inspect', `oci:${dest}:example.com/team/app:2`])).stdout).name).toBe('example.com/team/app:2');
    // By digest, written with '@' or ':'.
    for (const sep of ['@', ':']) {
      expect(JSON.parse((await ok(['inspect', `oci:${dest}${sep}${images.layers.digest}`])).stdout).digest).toBe(images.layers.digest);
    }
  });

  it('B1: verify of one image in a damaged store reports only that image\'s problems', async () => {
    const store = await storeWithAll();
    await flipByte(blobFile(store, images.plain.layers![0]!.digest));
    expect((await run(['verify', `${REPO}:plain`], store)).code).toBe(4);
    await ok(['verify', `${REPO}:layers`], store);
  });
});

const EVIL_DIGESTS: Array<[string, string]> = [
  ['a path', 'sha256:../../etc/passwd'],
  ['uppercase hex', `sha256:${'A'.repeat(64)}`],
  ['the wrong length', `sha256:${'a'.repeat(63)}`],
  ['the md5 algorithm', `md5:${'a'.repeat(32)}`],
];

describe.concurrent('A2: digests in index.json are validated before use', () => {
  /**
   * A layout whose only index.json entry carries `digest`. A valid manifest sits where
   * `blobs/sha256/../../etc/passwd` would lead, so following the path would not fail as "invalid".
   */
  async function evilLayout(digest: string): Promise<{ dir: string }> {
    const dir = await testdataCopy();
    const manifest = await readFile(blobFile(dir, images.layers.digest));
    await mkdir(join(dir, 'etc'));
    await writeFile(join(dir, 'etc', 'passwd'), manifest);
    const index = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{ mediaType: images.layers.mediaType, digest, size: manifest.byteLength, annotations: { 'org.opencontainers.image.ref.name': 'evil' } }],
    };
    await writeFile(join(dir, 'index.json'), JSON.stringify(index));
    return { dir };
  }

  it.each(EVIL_DIGESTS)('A2: ferry copy refuses an index.json digest with %s (%s) with exit 3', async (_what, digest) => {
    const { dir } = await evilLayout(digest);
    const dest = join(await tempDir(), 'dest');
    const r = await run(['copy', `oci:${dir}:evil`, `oci:${dest}:x`]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('invalid digest');
    expect(await exists(join(dest, 'etc'))).toBe(false);
    expect(await blobDigests(dest)).toEqual([]);
  });

  it.each(EVIL_DIGESTS)('A2: ferry copy into the store refuses an index.json digest with %s (%s) with exit 3', async (_what, digest) => {
    const { dir } = await evilLayout(digest);
    const store = join(await tempDir(), 'store');
    const r = await run(['copy', `oci:${dir}:evil`, 'example.com/evil:1'], store);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('invalid digest');
    expect(await blobDigests(store)).toEqual([]);
  });

  it.each(EVIL_DIGESTS)('A2: ferry verify reports an index.json digest with %s (%s) as invalid and fails', async (_what, digest) => {
    const { dir } = await evilLayout(digest);
    const r = await run(['verify', dir]);
    expect(r.code).not.toBe(0);
    expect(r.stdout).toContain('invalid digest');
    expect(r.stdout).toContain(JSON.stringify(digest));
    expect(r.stdout).not.toMatch(/digest mismatch/);
  });

  it('A2: ferry verify exits 3 for index.json digest "sha256:../../etc/passwd"', async () => {
    const { dir } = await evilLayout('sha256:../../etc/passwd');
    const r = await run(['verify', dir]);
    expect(r.code).toBe(3);
  });

  it('A2: a layer digest "sha256:../../../etc/hostname" inside a manifest is refused by copy with exit 3', async () => {
    const dir = await testdataCopy();
    const manifest = JSON.parse(await readFile(blobFile(dir, images.layers.digest), 'utf8')) as { layers: Array<{ digest: string }> };
    manifest.layers[1]!.digest = 'sha256:../../../etc/hostname';
    const bytes = Buffer.from(JSON.stringify(manifest));
    await writeFile(blobFile(dir, sha256(bytes)), bytes);
    const index = {
      schemaVersion: 2,
      manifests: [{ mediaType: images.layers.mediaType, digest: sha256(bytes), size: bytes.byteLength, annotations: { 'org.opencontainers.image.ref.name': 'evil' } }],
    };
    await writeFile(join(dir, 'index.json'), JSON.stringify(index));
    const dest = join(await tempDir(), 'dest');
    const r = await run(['copy', `oci:${dir}:evil`, `oci:${dest}:x`]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('invalid digest');
    expect(r.stderr).toContain('layers[1]');
    expect(await blobDigests(dest)).toEqual([]);
  });

  it('A2: ferry inspect refuses index.json digest "sha256:../../etc/passwd" with exit 3', async () => {
    const { dir } = await evilLayout('sha256:../../etc/passwd');
    const r = await run(['inspect', `oci:${dir}:evil`]);
    expect(r.code).toBe(3);
    expect(r.stderr).toContain('invalid digest');
    expect(r.stdout).toBe('');
  });
});

describe.concurrent('copy errors', () => {
  async function corruptSource(): Promise<{ dir: string; bad: string }> {
    const dir = await testdataCopy();
    const bad = images.layers.layers![1]!.digest;
    await flipByte(blobFile(dir, bad));
    return { dir, bad };
  }

  async function checkRefused(r: RunResult, dest: string, bad: string): Promise<void> {
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(bad);
    const got = /got (sha256:[0-9a-f]{64})/.exec(r.stderr)?.[1];
    expect(got, r.stderr).toBeDefined();
    // A layout the copy created and left nothing in is removed: nothing bad can be in it.
    if (!(await exists(dest))) return;
    const blobs = await blobDigests(dest);
    expect(blobs).not.toContain(bad);
    expect(blobs).not.toContain(got);
    expect(blobs).not.toContain(images.layers.digest);
    expect(await tempFilesIn(dest)).toEqual([]);
    expect((await indexEntries(dest)).map((e) => e.digest)).not.toContain(images.layers.digest);
  }

  it('--platform naming another platform than a single-platform image has is refused by copy and save (it was copied as if it matched)', async () => {
    const dir = await tempDir();
    const copy = await run(['copy', '--platform', 'linux/arm64', `oci:${TESTDATA}:plain`, `oci:${join(dir, 'arm')}`]);
    expect(copy.code).toBe(2);
    expect(copy.stderr).toContain(`oci:${TESTDATA}:plain is a single-platform image for linux/amd64, not linux/arm64`);
    expect(copy.stderr).toContain('choose its platform, or --platform all');
    const save = await run(['save', '--platform', 'arm64', `oci:${TESTDATA}:plain`, '-o', join(dir, 'arm.tar')]);
    expect(save.code).toBe(2);
    expect(save.stderr).toContain('is a single-platform image for linux/amd64, not linux/arm64');
    // Nothing is left of either: not even the layout the copy had created for itself.
    expect(await readdir(dir)).toEqual([]);
    await ok(['copy', '-q', '--platform', 'linux/amd64', `oci:${TESTDATA}:plain`, `oci:${join(dir, 'amd')}`]);
    await ok(['copy', '-q', '--platform', 'all', `oci:${TESTDATA}:plain`, `oci:${join(dir, 'all')}`]);
  });

  it('A3/B1: a source layer whose bytes do not match its digest fails the copy with exit 4 and publishes nothing bad', async () => {
    const { dir, bad } = await corruptSource();
    const dest = join(await tempDir(), 'new');
    const r = await run(['copy', `oci:${dir}:layers`, `oci:${dest}:x`]);
    await checkRefused(r, dest, bad);
  });

  it('A3/B1: the same corrupt source copied into the store fails with exit 4 and leaves no name', async () => {
    const { dir, bad } = await corruptSource();
    const store = join(await tempDir(), 'store');
    const r = await run(['copy', `oci:${dir}:layers`, 'example.com/x:1'], store);
    await checkRefused(r, store, bad);
    const list = JSON.parse((await ok(['images', '--json'], store)).stdout) as unknown[];
    expect(list).toEqual([]);
  });

  it('A3: a copy that failed leaves the destination verifiable and a retry from a good source succeeds', async () => {
    const { dir } = await corruptSource();
    const dest = join(await tempDir(), 'new');
    expect((await run(['copy', `oci:${dir}:layers`, `oci:${dest}:x`])).code).toBe(4);
    await ok(['verify', dest]);
    await ok(['copy', '-q', `oci:${TESTDATA}:layers`, `oci:${dest}:x`]);
    expect((await indexEntries(dest)).map((e) => e.digest)).toEqual([images.layers.digest]);
    await ok(['verify', dest]);
  });

  it('an unsupported transport containers-storage:x exits 2', async () => {
    const dest = join(await tempDir(), 'dest');
    const r = await run(['copy', 'containers-storage:x', `oci:${dest}:x`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('containers-storage');
    expect(await exists(dest)).toBe(false);
  });

  it('"oci:" with no directory exits 2', async () => {
    const dest = join(await tempDir(), 'dest');
    expect((await run(['copy', 'oci:', `oci:${dest}:x`])).code).toBe(2);
    expect((await run(['copy', `oci:${TESTDATA}:layers`, 'oci:'])).code).toBe(2);
  });

  it('a source tag the layout does not have exits 2 and lists the available names', async () => {
    const dest = join(await tempDir(), 'dest');
    const r = await run(['copy', `oci:${TESTDATA}:nosuchtag`, `oci:${dest}:x`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('nosuchtag');
    for (const tag of TAGS) expect(r.stderr).toContain(`${REPO}:${tag}`);
  });

  it('a source directory that is not a layout exits 2', async () => {
    const src = await tempDir();
    const dest = join(await tempDir(), 'dest');
    const r = await run(['copy', `oci:${src}:x`, `oci:${dest}:x`]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(src);
  });
});

describe.concurrent('command line basics', () => {
  it('a pattern as an archive output (copy to oci-archive:/docker-archive:, save -o, sync) is refused and nothing is written', async () => {
    const dir = await tempDir();
    const pattern = join(dir, 'set.*.tar');
    const cases: Array<[string[], string, string | undefined]> = [
      [['copy', `oci:${TESTDATA}:plain`, `oci-archive:${pattern}`], `oci-archive:${pattern}: set.*.tar is a pattern`, `ferry save IMAGE… -o ${join(dir, 'set.tar')} --volume-size SIZE --format oci`],
      [['copy', `oci:${TESTDATA}:plain`, `docker-archive:${pattern}:team/app:1`], `docker-archive:${pattern}: set.*.tar is a pattern`, `-o ${join(dir, 'set.tar')} --volume-size SIZE`],
      [['save', `oci:${TESTDATA}:plain`, '-o', join(dir, 'set.?.tar.gz')], `-o ${join(dir, 'set.?.tar.gz')}: set.?.tar.gz is a pattern`, `-o ${join(dir, 'set.tar.gz')} --volume-size SIZE`],
      [['save', `oci:${TESTDATA}:plain`, '-o', pattern, '--volume-size', '1M'], `-o ${pattern}: set.*.tar is a pattern`, undefined],
      [['save', `oci:${TESTDATA}:plain`, '-o', pattern, '--dry-run'], `-o ${pattern}: set.*.tar is a pattern`, undefined],
      [['sync', `oci:${TESTDATA}`, pattern], `sync destination "${pattern}": set.*.tar is a pattern`, `ferry sync SOURCE ${join(dir, 'set.tar')} --volume-size SIZE`],
    ];
    for (const [args, message, hint] of cases) {
      const r = await run(args);
      expect(r.code, `${args.join(' ')}\n${r.stderr}`).toBe(2);
      expect(r.stderr).toContain(`${message}, which names the volumes of a set to read, not a file to write`);
      if (hint) expect(r.stderr).toContain(hint);
    }
    expect(await readdir(dir)).toEqual([]);
    // A plain name is still written.
    await ok(['copy', `oci:${TESTDATA}:plain`, `oci-archive:${join(dir, 'one.tar')}`]);
    expect(await readdir(dir)).toEqual(['one.tar']);
  });

  it('push refuses positionals beyond IMAGE DESTINATION, naming them', async () => {
    const r = await run(['push', 'a:1', 'b:1', 'c', 'd']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('ferry: error: Unknown arguments: c, d\n');
    const flag = await run(['push', 'a:1', '--bogus-flag']);
    expect(flag.code).toBe(2);
    expect(flag.stderr).toContain('Unknown argument: bogus-flag');
  });

  it('an option given twice is a usage error naming it (it was a TypeError); --include/--exclude may repeat', async () => {
    const store = await storeWithAll();
    const dir = await tempDir();
    const twice = await run(['save', `${REPO}:plain`, '-o', join(dir, 'a.tar'), '-o', join(dir, 'b.tar')], store);
    expect(twice.code).toBe(2);
    expect(twice.stderr).toContain(`--output was given 2 times (${join(dir, 'a.tar')}, ${join(dir, 'b.tar')}); it takes one value`);
    expect(twice.stderr).not.toMatch(/TypeError|\n\s+at /);
    const platforms = await run(['save', `${REPO}:multi`, '--platform', 'linux/amd64', '--platform', 'linux/arm64', '-o', join(dir, 'c.tar')], store);
    expect(platforms.code).toBe(2);
    expect(platforms.stderr).toContain('several platforms go in one comma list: --platform linux/amd64,linux/arm64');
    expect((await run(['load', '-i', join(dir, 'x.tar'), '-t', 'a:1', '-t', 'b:2'], store)).stderr).toContain('--tag was given 2 times');
    expect((await run(['images', '--store', store], store)).stderr).toContain('--store was given 2 times');
    expect(await readdir(dir)).toEqual([]);
    // Both patterns reach the command: the second one is the bad one.
    const sync = await run(['sync', '--dry-run', '--include', 'a', '--include', '(', '127.0.0.1:1/x'], store);
    expect(sync.code).toBe(2);
    expect(sync.stderr).not.toContain('given 2 times');
    expect(sync.stderr).toContain('(');
  });

  it('without --store and $FERRY_STORE the store is $XDG_DATA_HOME/ferry/store, and --help says so', async () => {
    const data = await tempDir();
    const home = await tempDir();
    const env = { FERRY_STORE: undefined, XDG_DATA_HOME: data, HOME: home };
    const copied = await ferry(['copy', '-q', `oci:${TESTDATA}:plain`, 'app:1'], { env });
    expect(copied.code, copied.stderr).toBe(0);
    expect((await ferry(['images'], { env })).stdout).toContain('app ');
    expect(JSON.parse(await readFile(join(data, 'ferry', 'store', 'index.json'), 'utf8')).manifests).toHaveLength(1);
    expect(await readdir(home)).not.toContain('.local');
    const help = (await run(['--help'])).stdout.replace(/\s+/g, ' ');
    expect(help).toContain('$FERRY_STORE, else $XDG_DATA_HOME/ferry/store, else ~/.local/share/ferry/store');
  });

  it('a scheme or a layout where a registry image belongs is refused with what to write instead', async () => {
    const http = await run(['pull', 'http://127.0.0.1:1/team/api:1']);
    expect(http.code).toBe(2);
    expect(http.stderr).toContain('a registry image is named without a scheme: 127.0.0.1:1/team/api:1');
    const oci = await run(['push', 'example.com/x:1', 'oci:/tmp/nowhere']);
    expect(oci.code).toBe(2);
    expect(oci.stderr).toContain('this names a layout or an archive; ferry copy reaches those');
  });

  it('small mistakes get plain answers: a non-archive file to verify, export -o DIR, an unknown --long-flag named once', async () => {
    const store = await storeWithAll();
    const dir = await tempDir();
    await writeFile(join(dir, 'notatar.bin'), 'garbage not a tar at all');
    const v = await ferry(['--store', store, 'verify', 'notatar.bin'], { wrap: ['sh', '-c', `cd "${dir}" && exec "$0" "$@"`] });
    expect(v.code).toBe(3);
    expect(v.stdout).toContain('notatar.bin: not a tar archive (24 bytes, less than one tar header)');
    expect(v.stderr).not.toContain('not found in');
    const e = await run(['export', `${REPO}:plain`, '-o', dir], store);
    expect(e.code).toBe(2);
    expect(e.stderr).toContain(`${dir} is a directory; -o takes a file`);
    expect(e.stderr).not.toContain('--force');
    const u = await run(['export', `${REPO}:plain`, '--bogus-flag']);
    expect(u.stderr).toContain('ferry: error: Unknown argument: bogus-flag\n');
    // save -o - --json: the archive is the output, and stderr stays quiet as --json promises.
    const piped = await ferry(['--store', store, 'save', `${REPO}:plain`, '-o', '-', '--json'], { wrap: ['sh', '-c', '"$0" "$@" > /dev/null'] });
    expect(piped.code, piped.stderr).toBe(0);
    expect(piped.stderr).toBe('');
  });

  it('-o naming a directory says so, with or without --force (--force used to end in EISDIR)', async () => {
    const store = await storeWithAll();
    const dir = await tempDir();
    for (const force of [[], ['--force']]) {
      const r = await run(['save', `${REPO}:plain`, '-o', dir, ...force], store);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${dir} is a directory; the output is one file`);
      expect(r.stderr).toContain(`name the file, e.g. ${join(dir, 'images.tar')}`);
      expect(r.stderr).not.toContain('--force');
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it('verify - checks an archive on standard input, never the store; inventory - is refused', async () => {
    const store = await storeWithAll();
    const dir = await tempDir();
    const good = join(dir, 'good.tar');
    await ok(['save', '-q', `${REPO}:layers`, '-o', good], store);
    const bytes = await readFile(good);
    const r = await ferry(['--store', store, 'verify', '-'], { input: bytes });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 image(s)');
    expect(r.stdout).not.toContain(store);
    // The largest layer's bytes, one flipped: found on stdin as in the file.
    const layer = images.layers.layers!.reduce((a, b) => (b.size > a.size ? b : a));
    const at = bytes.indexOf(await readFile(blobFile(store, layer.digest)));
    expect(at).toBeGreaterThan(0);
    const bad = Buffer.from(bytes);
    bad[at + Math.floor(layer.size / 2)]! ^= 0xff;
    const r2 = await ferry(['--store', store, 'verify', '-'], { input: bad });
    expect(r2.code).toBe(4);
    expect(r2.stdout).toContain(layer.digest);
    const mixed = await ferry(['--store', store, 'verify', '-', good], { input: bytes });
    expect(mixed.code).toBe(2);
    expect(mixed.stderr).toContain('standard input (-) cannot be combined with other files');
    const inv = await ferry(['--store', store, 'inventory', '-'], { input: bytes });
    expect(inv.code).toBe(2);
    expect(inv.stderr).toContain('inventory reads a place, not standard input');
    expect(inv.stdout).toBe('');
  });

  it('tags and catalog given the other one\'s argument say so, before any request', async () => {
    const tags = await run(['tags', '127.0.0.1:1']);
    expect(tags.code).toBe(2);
    expect(tags.stderr).toContain('"127.0.0.1:1" names a registry, not a repository');
    // It used to ask Docker Hub for the tags of library/127.0.0.1.
    expect(tags.stderr).not.toContain('docker.io');
    expect(tags.stderr).toContain('ferry catalog 127.0.0.1:1');
    const catalog = await run(['catalog', '127.0.0.1:1/team/app']);
    expect(catalog.code).toBe(2);
    expect(catalog.stderr).toContain('ferry catalog takes a registry, not a repository');
    expect(catalog.stderr).toContain('ferry tags 127.0.0.1:1/team/app');
    expect((await run(['tags', 'alpine:3'])).stderr).toContain('must be a repository, without a tag or digest');
  });

  it('--all-tags with a tag or digest is refused, as docker refuses it (the tag was ignored)', async () => {
    const pull = await run(['pull', '-a', '127.0.0.1:1/app:1']);
    expect(pull.code).toBe(2);
    expect(pull.stderr).toContain('pull --all-tags: "127.0.0.1:1/app:1" must be a repository, without a tag or digest');
    expect(pull.stderr).not.toContain('retrying');
    const push = await run(['push', '--all-tags', 'example.com/app', '127.0.0.1:1/x:2']);
    expect(push.code).toBe(2);
    expect(push.stderr).toContain('destination "127.0.0.1:1/x:2" must be a repository');
  });

  it('a sync config is checked whole before any job runs: a tagged source in its last job; a bad platform, pattern or range named by where it is', async () => {
    const dir = await tempDir();
    const cfg = join(dir, 'sync.yaml');
    // The first job would take seconds of retries against a closed port if it ran.
    await writeFile(cfg, 'repositories: [127.0.0.1:1/first, "a.example/last:1"]\n');
    const tagged = await run(['sync', '--config', cfg]);
    expect(tagged.code).toBe(2);
    expect(tagged.stderr).toContain(`${cfg}:1:35: repositories[1].source: the source "a.example/last:1" must be a repository`);
    expect(tagged.stderr).not.toContain('retrying');
    await writeFile(cfg, 'repositories: [{source: a.example/x, platform: "linux//"}]\n');
    const platform = await run(['sync', '--config', cfg]);
    expect(platform.code).toBe(2);
    expect(platform.stderr).toContain(`${cfg}:1:48: repositories[0].platform: invalid platform "linux//"`);
    // A layout destination with a tag (it was dropped silently), refused before any request.
    const tagged2 = await run(['sync', 'a.example/x', `oci:${dir}:nightly`]);
    expect(tagged2.code).toBe(2);
    expect(tagged2.stderr).toContain(`sync destination "oci:${dir}:nightly" names a tag (nightly)`);
    // Patterns and ranges too, a top-level default included (it applies to every job).
    for (const [text, said] of [
      ['repositories: [a.example/x, {source: a.example/y, include: "t1["}]\n', '1:60: repositories[1].include: invalid pattern "t1["'],
      ['exclude: ["("]\nrepositories: [a.example/x]\n', '1:10: the top-level "exclude": invalid pattern "("'],
      ['repositories: [{source: a.example/x, semver: ">=1.x.y"}]\n', '1:46: repositories[0].semver: invalid version range ">=1.x.y"'],
      ['prune: yes\nrepositories: [a.example/x]\n', '1:8: the top-level "prune" must be true or false, not "yes" (YAML 1.2 reads yes as text)'],
      ['repositories: [{source: a.example/x, prune: 1}]\n', '1:45: repositories[0].prune must be true or false, not 1'],
      ['repositories:\n  - source: a/b\n   include: [x\n', '3:1: not valid YAML or JSON: '],
    ]) {
      await writeFile(cfg, text!);
      const r = await run(['sync', '--config', cfg]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain(`${cfg}:${said}`);
      expect(r.stderr).toContain('see "ferry sync" in the README for the format');
      expect(r.stderr).not.toMatch(/:\n/);
    }
  });

  it('ferry --version prints a version and exits 0', async () => {
    const r = await ok(['--version']);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('the bundle builds string-width\'s Intl.Segmenter and RGI_Emoji regex on first use, not at every start', async () => {
    // scripts/bundle.mjs rewrites them (~2.7 MiB of ICU data and 33 ms); a new string-width that no
    // longer matches its patterns would silently bring both back.
    const dir = join(import.meta.dirname, '..', 'dist', 'bundle');
    const text = (await Promise.all((await readdir(dir)).filter((f) => f.endsWith('.js')).map((f) => readFile(join(dir, f), 'utf8')))).join('\n');
    expect(text).not.toMatch(/=\s*new Intl\.Segmenter\(\)\s*;/);
    expect(text).not.toMatch(/rgiEmojiRegex = (new RegExp|\/)/);
    expect(text).toContain('__ferrySegmenter ??=');
    expect(text).toContain('__ferryRgiEmoji ??=');
  });

  it('ferry nosuchcommand exits 2', async () => {
    const r = await run(['nosuchcommand']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('nosuchcommand');
  });

  it('ferry with no arguments exits 2', async () => {
    const r = await run([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/command/);
  });

  it('no command ever creates the default store when --store is given', async () => {
    const store = await storeWithAll();
    await ok(['images'], store);
    await ok(['verify'], store);
    expect(await exists(noStore)).toBe(false);
    expect(await readdir(store)).toEqual(expect.arrayContaining(['blobs', 'index.json', 'oci-layout']));
  });
});

describe('results on stdout, status on stderr; -q keeps results', () => {
  it('tag prints what it did on stdout, as rmi does, and -q keeps it', async () => {
    const store = await storeWithAll();
    for (const q of [[], ['-q']]) {
      const tagged = await ok([...q, 'tag', `${REPO}:plain`, 'example.com/out:1'], store);
      expect(tagged.stdout).toBe(`Tagged ${images.plain.digest} as example.com/out:1\n`);
      expect(tagged.stderr).toBe('');
      const untagged = await ok([...q, 'rmi', 'example.com/out:1'], store);
      expect(untagged.stdout).toBe('Untagged: example.com/out:1\n');
      expect(untagged.stderr).toBe('');
    }
  });

  it('inventory -o FILE prints its summary with -q too, as save -o FILE does', async () => {
    const store = await storeWithAll();
    const file = join(await tempDir(), 'have.json');
    const r = await ok(['-q', 'inventory', '-o', file], store);
    expect(r.stdout).toMatch(new RegExp(`^${file}: \\d+ blobs, \\d+ manifests, 5 tags from store:`));
    expect(r.stderr).toBe('');
  });
});

describe('a reader that leaves early (| head)', () => {
  it('a short output into a pipe closed before it is written exits 141 too, with the same line', async () => {
    const store = await storeWithAll();
    // Written in one go as the command ends: the EPIPE arrives after the command returned 0.
    for (const args of [['images'], ['--json', 'images'], ['tag', `${REPO}:plain`, 'example.com/gone:1'], ['rmi', 'example.com/gone:1']]) {
      const child = start(['--store', store, ...args]);
      child.stdout!.destroy();
      const r = await finish(child);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(141);
      expect(r.stderr).toContain('ferry: error: standard output was closed before the output was complete');
      expect(r.stderr).not.toMatch(/\n\s+at /);
    }
  });


  it('save -o - into a closed pipe exits 141, like a tool killed by SIGPIPE, with one line and no stack', async () => {
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:layers`, 'layers:1'])).code).toBe(0);
    const child = start(['--store', store, 'save', 'layers:1', '-o', '-']);
    child.stdout!.once('data', () => child.stdout!.destroy());
    const r = await finish(child);
    expect(r.code, r.stderr).toBe(141);
    expect(r.stderr).toContain('standard output was closed');
    expect(r.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('directories under /proc (where Node\'s recursive mkdir spins forever)', () => {
  // procfs answers ENOENT for any new name: Node took it for a missing parent, forever, at 100 % CPU.
  // Each run is killed after 15 s so a regression fails instead of leaving a spinning process.
  const bounded = { wrap: ['timeout', '-s', 'KILL', '15'] };

  it('a HOME or XDG_CACHE_HOME under /proc: every command still runs (the compile cache is skipped), --version too', async () => {
    for (const env of [{ HOME: '/proc/ferry-nohome', XDG_CACHE_HOME: '' }, { XDG_CACHE_HOME: '/proc/ferry-nocache' }]) {
      const r = await ferry(['--version'], { ...bounded, env });
      expect(r.code, JSON.stringify(env)).toBe(0);
      expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    }
  });

  it('--store, an oci: layout and export --dir under /proc fail with exit 7 naming the path', async () => {
    for (const args of [
      ['--store', '/proc/ferry-nope', 'copy', `oci:${TESTDATA}:plain`, 'x:1'],
      ['copy', `oci:${TESTDATA}:plain`, 'oci:/proc/ferry-nope/layout:x'],
      ['export', `oci:${TESTDATA}:plain`, '--dir', '/proc/ferry-nope/root'],
    ]) {
      const r = await ferry(args, bounded);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(7);
      // A store or layout is refused before any mkdir (procfs); export's --dir meets mkdir's ENOENT.
      expect(r.stderr).toMatch(/ENOENT: \/proc\/ferry-nope|cannot write \/proc\/ferry-nope(\/layout)?: \/proc is on procfs, where no file can be created/);
    }
  });
});
