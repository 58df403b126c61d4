// A compressed archive as a copy source: read by decompressing it again, in order, never by
// unpacking it into $TMPDIR (it used to be decompressed whole to a temporary plain tar there,
// which on a tmpfs /tmp could not hold a USB stick's worth of images).
import { randomBytes } from 'node:crypto';
import { access, cp, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ArchiveSource } from '../src/archive/source.js';
import { readVerified } from '../src/blob/verify.js';
import { parseManifestDocument } from '../src/oci/manifest.js';
import { damageBlobEntry, layerTar, legacyArchive, tarBytes, writeTar } from './helpers/archives.js';
import { ferry } from './helpers/cli.js';
import { indexEntries } from './helpers/expected-images.js';
import { tempDir } from './helpers/fs.js';
import { makeLayout, type MadeImage } from './helpers/images.js';
import { runWatchingTmp } from './helpers/watch-tmp.js';

let src: string;
let made: MadeImage[];
const archives: Record<string, string> = {};

const watched = (args: string[]) => runWatchingTmp(args);

beforeAll(async () => {
  const work = await tempDir('ferry-archive-source-');
  src = join(work, 'src');
  const shared = randomBytes(3 << 20);
  made = await makeLayout(src, [
    { tag: 'a', layers: [shared, 5 << 20, 1 << 20] },
    { tag: 'b', layers: [shared, 2 << 20] },
  ]);
  for (const suffix of ['tar.gz', 'tar.zst']) {
    archives[suffix] = join(work, `both.${suffix}`);
    const r = await ferry(['save', '-q', `oci:${src}:a`, `oci:${src}:b`, '-o', archives[suffix]!]);
    expect(r.code, r.stderr).toBe(0);
  }
});

describe('copy from a compressed archive', () => {
  for (const suffix of ['tar.gz', 'tar.zst']) {
    it(`.${suffix}: one image of several, digests kept, nothing written to $TMPDIR`, async () => {
      const dst = join(await tempDir(), 'dst');
      const { r, largest, left } = await watched(['copy', '-q', `oci-archive:${archives[suffix]}:b`, `oci:${dst}:b`]);
      expect(r.code, r.stderr).toBe(0);
      expect(largest).toBe(0);
      expect(left).toEqual([]);
      const entries = await indexEntries(dst);
      expect(entries.map((e) => e.digest)).toEqual([made[1]!.manifest.digest]);
      // Only image b's blobs came over: the 5 MiB and 1 MiB layers of a did not.
      const blobs = await readdir(join(dst, 'blobs', 'sha256'));
      expect(blobs.sort()).toEqual([made[1]!.manifest, made[1]!.config, ...made[1]!.layers].map((d) => d.digest.slice(7)).sort());
      const v = await ferry(['verify', `oci:${dst}`]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
    });
  }

  it('a gzip-compressed legacy docker-save archive (a repeated layer as a symlink): layers keep digest = diff_id, nothing written to $TMPDIR', async () => {
    const dir = await tempDir();
    // Larger than what the indexing pass keeps, so they are read back from the archive; the
    // repeated one is a layer.tar symlink to the first.
    const big = layerTar('srv/big', `${randomBytes(400_000).toString('hex')}`);
    const layers = [big, layerTar('etc/b', 'two'), big];
    const legacy = legacyArchive({ layers, repoTag: 'example.com/legacy/app:7' });
    await writeTar(join(dir, 'legacy.tar'), legacy.entries);
    await writeTar(join(dir, 'legacy.tar.gz'), legacy.entries, 'gzip');
    const digests: string[] = [];
    for (const file of ['legacy.tar', 'legacy.tar.gz']) {
      const dst = join(dir, `out-${file}`);
      const { r, largest } = await watched(['copy', '-q', `docker-archive:${join(dir, file)}`, `oci:${dst}:app`]);
      expect(r.code, r.stderr).toBe(0);
      expect(largest).toBe(0);
      const [entry] = await indexEntries(dst);
      digests.push(entry!.digest);
      const manifest = parseManifestDocument(await readFile(join(dst, 'blobs', 'sha256', entry!.digest.slice(7))), { where: 'test' });
      if (manifest.kind !== 'manifest') throw new Error('expected a manifest');
      expect(manifest.manifest.layers.map((l) => l.digest)).toEqual(legacy.diffIds);
    }
    expect(digests[1]).toBe(digests[0]);
  });

  it('blobs asked for out of archive order, and from an offset, still come back whole and verified', async () => {
    const source = await ArchiveSource.open(archives['tar.zst']!);
    try {
      expect(source.sequential).toBe(true);
      const [l1, l2, l3] = made[0]!.layers;
      // Last layer first, then the first (behind the cursor: a new pass), then the middle one.
      const whole = new Map<string, Buffer>();
      for (const d of [l3!, l1!, l2!]) whole.set(d.digest, await readVerified(await source.fetch(d), d, d.digest));
      for (const d of [l1!, l2!, l3!]) expect(whole.get(d.digest)!.length).toBe(d.size);
      // A resumed read: the bytes from an offset are exactly the blob's tail.
      const offset = 1000;
      const chunks: Buffer[] = [];
      for await (const c of await source.fetch(l2!, { offset })) chunks.push(c as Buffer);
      expect(Buffer.concat(chunks).equals(whole.get(l2!.digest)!.subarray(offset))).toBe(true);
    } finally {
      await source.close();
    }
  });

  it('a compressed archive cut short is refused and nothing is named at the destination', async () => {
    const dir = await tempDir();
    const cut = join(dir, 'cut.tar.zst');
    const bytes = await readFile(archives['tar.zst']!);
    await writeFile(cut, bytes);
    await truncate(cut, Math.floor(bytes.length / 2));
    const dst = join(dir, 'dst');
    const r = await ferry(['copy', `oci-archive:${cut}:b`, `oci:${dst}:b`]);
    expect([3, 4]).toContain(r.code);
    expect(await indexEntries(dst).catch(() => [])).toEqual([]);
  });
});

/** The volumes of the set `stem` saved in `dir`, in order. */
async function volumesIn(dir: string, stem = 'set.'): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith(stem)).sort().map((n) => join(dir, n));
}

describe('copy from a volume set (a pattern naming its volumes)', () => {
  for (const suffix of ['tar', 'tar.zst']) {
    it(`.${suffix}: a blob split across volumes comes over whole, digests kept, nothing written to $TMPDIR; inspect reads the set too`, async () => {
      const dir = await tempDir();
      const r0 = await ferry(['save', '-q', `oci:${src}:a`, `oci:${src}:b`, '-o', join(dir, `set.${suffix}`), '--volume-size', '1M']);
      expect(r0.code, r0.stderr).toBe(0);
      expect((await volumesIn(dir)).length).toBeGreaterThanOrEqual(5);
      const dst = join(await tempDir(), 'dst');
      const { r, largest, left } = await watched(['copy', '-q', `oci-archive:${join(dir, `set.*.${suffix}`)}:a`, `oci:${dst}:a`]);
      expect(r.code, r.stderr).toBe(0);
      expect(largest).toBe(0);
      expect(left).toEqual([]);
      expect((await indexEntries(dst)).map((e) => e.digest)).toEqual([made[0]!.manifest.digest]);
      const blobs = await readdir(join(dst, 'blobs', 'sha256'));
      expect(blobs.sort()).toEqual([made[0]!.manifest, made[0]!.config, ...made[0]!.layers].map((d) => d.digest.slice(7)).sort());
      const v = await ferry(['verify', `oci:${dst}`]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
      const shown = await ferry(['inspect', `oci-archive:${join(dir, `set.*.${suffix}`)}:b`]);
      expect(shown.code, shown.stderr).toBe(0);
      expect(JSON.parse(shown.stdout).digest).toBe(made[1]!.manifest.digest);
    });
  }

  it('a missing volume, a volume of another set or a corrupt part is refused (exit 4, 3, 4), naming it; nothing is named at the destination', async () => {
    const dir = await tempDir();
    const other = await tempDir();
    for (const d of [dir, other]) {
      const r = await ferry(['save', '-q', `oci:${src}:a`, '-o', join(d, 'set.tar'), '--volume-size', '1M']);
      expect(r.code, r.stderr).toBe(0);
    }
    const files = await volumesIn(dir);
    const cases: Array<[string, (copies: string) => Promise<void>, number, RegExp]> = [
      ['missing', async (d) => rm(join(d, 'set.002.tar')), 4, /volume 2 of the set is missing \(given: 1, 3/],
      ['foreign', async (d) => cp(join(other, 'set.002.tar'), join(d, 'set.002.tar')), 3, /set.002.tar belongs to another volume set than .*set.001.tar/],
      ['corrupt', async (d) => {
        const b = await readFile(join(d, 'set.002.tar'));
        b[b.length >> 1]! ^= 0xff;
        await writeFile(join(d, 'set.002.tar'), b);
      }, 4, /volume 2 of \d+ \(set.002.tar\): part \d+ of blob sha256:[0-9a-f]{64} corrupt \(content hashes to sha256:[0-9a-f]{64}; expected sha256:[0-9a-f]{64}\)/],
    ];
    for (const [what, damage, code, message] of cases) {
      const d = await tempDir();
      for (const f of files) await cp(f, join(d, f.slice(dir.length + 1)));
      await damage(d);
      const dst = join(await tempDir(), 'dst');
      const r = await ferry(['copy', `oci-archive:${join(d, 'set.*.tar')}:a`, `oci:${dst}:a`]);
      expect(r.code, `${what}: ${r.stderr}`).toBe(code);
      expect(r.stderr, what).toMatch(message);
      expect(await indexEntries(dst).catch(() => []), what).toEqual([]);
    }
    const none = await ferry(['copy', `oci-archive:${join(dir, 'nope.*.tar')}`, `oci:${join(dir, 'x')}`]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain(`${join(dir, 'nope.*.tar')}: no file matches`);
  });
});

describe('a whole blob damaged inside one volume of a set (bytes flipped, or an entry of the wrong size)', () => {
  let files: string[];
  let image: MadeImage;
  /** Which volume (1-based) holds the whole blob `digest`. */
  const volumeOf = async (digest: string) => {
    for (const [i, f] of files.entries()) if ((await readFile(f)).includes(`blobs/sha256/${digest.slice(7)}\0`)) return i + 1;
    throw new Error(`no volume holds ${digest}`);
  };
  /** Copies of the volumes in a new directory, the blob `digest` damaged in its volume; the pattern naming them. */
  const damaged = async (digest: string, resize = 0) => {
    const d = await tempDir();
    for (const f of files) await cp(f, join(d, f.slice(f.lastIndexOf('/') + 1)));
    await damageBlobEntry(join(d, `set.00${await volumeOf(digest)}.tar`), digest, resize);
    return { dir: d, pattern: join(d, 'set.*.tar') };
  };
  const corrupt = (n: number, digest: string) =>
    new RegExp(`error: volume ${n} of 3 \\(set\\.00${n}\\.tar\\): blob ${digest} corrupt \\(content hashes to sha256:[0-9a-f]{64}; expected ${digest}\\)`);

  beforeAll(async () => {
    const dir = await tempDir();
    // Real layer tars (export reads them), one to a volume.
    [image] = (await makeLayout(join(dir, 'src'), [{ tag: 'v', layers: [1, 2, 3].map((i) => tarBytes([{ name: `f${i}`, data: randomBytes(150_000) }])) }])) as [MadeImage];
    const r = await ferry(['save', '-q', `oci:${join(dir, 'src')}:v`, '-o', join(dir, 'set.tar'), '--volume-size', '200K']);
    expect(r.code, r.stderr).toBe(0);
    files = await volumesIn(dir);
    expect(files.length).toBe(3);
  });

  /** The layer volume 2 holds, damaged in a copy of the set. */
  const damagedInTwo = async () => {
    const inTwo: string[] = [];
    for (const l of image.layers) if ((await volumeOf(l.digest)) === 2) inTwo.push(l.digest);
    expect(inTwo.length).toBe(1);
    return { digest: inTwo[0]!, ...(await damaged(inTwo[0]!)) };
  };

  it('copy names the volume holding it (exit 4), with the file to copy again; nothing is named at the destination', async () => {
    const { digest, pattern } = await damagedInTwo();
    const dst = join(await tempDir(), 'dst');
    const r = await ferry(['copy', `oci-archive:${pattern}:v`, `oci:${dst}:v`]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toMatch(corrupt(2, digest));
    expect(r.stderr).toContain('hint: copy set.002.tar again from where the set was written');
    expect(await indexEntries(dst).catch(() => [])).toEqual([]);
  });

  it('save and export name the volume holding it (exit 4); nothing is written', async () => {
    const { digest, pattern } = await damagedInTwo();
    for (const command of ['save', 'export']) {
      const out = join(await tempDir(), 'out.tar');
      const r = await ferry([command, `oci-archive:${pattern}:v`, '-o', out]);
      expect(r.code, `${command}: ${r.stderr}`).toBe(4);
      expect(r.stderr, command).toMatch(corrupt(2, digest));
      await expect(access(out), command).rejects.toThrow();
    }
  });

  it('load (its own single pass over the set) names the volume holding it (exit 4)', async () => {
    const { digest, dir } = await damagedInTwo();
    const r = await ferry(['--store', join(await tempDir(), 'store'), 'load', ...(await volumesIn(dir)).flatMap((f) => ['-i', f])]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`digest mismatch for blob ${digest} (volume 2 of 3 (set.002.tar))`);
  });

  it('inspect names the volume holding a corrupt config or manifest (exit 4)', async () => {
    for (const blob of [image.config, image.manifest]) {
      const { pattern } = await damaged(blob.digest);
      const r = await ferry(['inspect', `oci-archive:${pattern}:v`]);
      expect(r.code, r.stderr).toBe(4);
      expect(r.stderr).toMatch(corrupt(await volumeOf(blob.digest), blob.digest));
    }
  });

  it('a blob entry longer than its descriptor says: copy names the volume holding it (exit 4)', async () => {
    const d = image.layers[1]!.digest;
    const n = await volumeOf(d);
    const { pattern } = await damaged(d, 512);
    const dst = join(await tempDir(), 'dst');
    const r = await ferry(['copy', `oci-archive:${pattern}:v`, `oci:${dst}:v`]);
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain(`error: volume ${n} of 3 (set.00${n}.tar): blob ${d} is ${image.layers[1]!.size + 512} bytes; expected ${image.layers[1]!.size}`);
    expect(await indexEntries(dst).catch(() => [])).toEqual([]);
  });
});

describe('an image of an archive named with a digest', () => {
  it('NAME:TAG@DIGEST must still name that digest (it was found by name, the digest ignored); NAME@DIGEST finds it under that name', async () => {
    const { TESTDATA } = await import('./helpers/fs.js');
    const { testdataImages } = await import('./helpers/expected-images.js');
    const exp = await testdataImages();
    const file = join(await tempDir(), 'two.tar');
    const repo = 'example.com/ferry/testdata';
    const saved = await ferry(['save', '-q', `oci:${TESTDATA}:plain`, `oci:${TESTDATA}:multi`, '-o', file]);
    expect(saved.code, saved.stderr).toBe(0);
    for (const transport of ['oci-archive', 'docker-archive']) {
      for (const name of ['plain', `${repo}:plain`]) {
        const wrong = await ferry(['copy', `${transport}:${file}:${name}@${exp.multi.digest}`, `oci:${join(await tempDir(), 'o')}:x`]);
        expect(wrong.code, `${transport}:${name}: ${wrong.stderr}`).toBe(2);
        expect(wrong.stderr).toContain(`is ${exp.plain.digest}, not ${exp.multi.digest}`);
        const right = await ferry(['inspect', `${transport}:${file}:${name}@${exp.plain.digest}`]);
        expect(right.code, right.stderr).toBe(0);
      }
      const byDigest = await ferry(['inspect', '--json', `${transport}:${file}:${repo}@${exp.multi.digest}`]);
      expect(byDigest.code, byDigest.stderr).toBe(0);
      expect(byDigest.stdout).toContain(exp.multi.digest);
      const elsewhere = await ferry(['inspect', `${transport}:${file}:example.com/other@${exp.multi.digest}`]);
      expect(elsewhere.code).toBe(2);
      expect(elsewhere.stderr).toContain(`no image of example.com/other has digest ${exp.multi.digest}`);
    }
  });
});
