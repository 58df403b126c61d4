import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ZstdDecompress, ZstdFrameWalker } from '../src/blob/zstd-frames.js';
import { cleanPath, entryHeader, indexTar, linkTargetPath, readTar, BLOCK } from '../src/archive/tar.js';
import { compressionForPath } from '../src/archive/output.js';
import { parsePartName, parseSize, partName, volumePath } from '../src/archive/volumes.js';
import { EntryTap } from '../src/archive/tap.js';
import { archiveExists, archiveFiles, isPattern, shellQuoted, volumePattern } from '../src/archive/patterns.js';
import { decompressBudget } from '../src/blob/compression.js';
import { failure } from './helpers/assert.js';
import { hasTool } from './helpers/tools.js';
import { sha, tarBytes } from './helpers/archives.js';
import { tempDir } from './helpers/fs.js';
import { open, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

async function entries(tar: Buffer, chunk = 1000) {
  const parts: Buffer[] = [];
  for (let i = 0; i < tar.length; i += chunk) parts.push(tar.subarray(i, i + chunk));
  const out: Array<{ name: string; type: string; size: number; linkname: string; data: string }> = [];
  for await (const e of readTar(Readable.from(parts), { where: 't' })) {
    let data = '';
    if (e.type === 'file') for await (const c of e.body()) data += (c as Buffer).toString();
    out.push({ name: e.name, type: e.type, size: e.size, linkname: e.linkname, data });
  }
  return out;
}

async function unzstd(parts: Buffer[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(Readable.from(parts), new ZstdDecompress(), new Writable({ write: (c: Buffer, _e, cb) => (out.push(c), cb()) }));
  return Buffer.concat(out);
}

describe('tar', () => {
  it('writes and reads back files, long names (PAX path), links and directories, in any chunking', async () => {
    const long = `${'d'.repeat(90)}/${'f'.repeat(90)}.txt`;
    const tar = tarBytes([
      { name: 'dir/', type: 'dir' },
      { name: 'dir/a.txt', data: 'hello' },
      { name: long, data: 'long' },
      { name: 'dir/link', type: 'symlink', link: `../${'t'.repeat(120)}` },
      { name: 'dir/hard', type: 'hardlink', link: 'dir/a.txt' },
      { name: 'empty', data: '' },
    ]);
    for (const chunk of [1, 511, 512, 4096, tar.length]) {
      const got = await entries(tar, chunk);
      expect(got.map((e) => [e.name, e.type, e.data])).toEqual([
        ['dir/', 'dir', ''],
        ['dir/a.txt', 'file', 'hello'],
        [long, 'file', 'long'],
        ['dir/link', 'symlink', ''],
        ['dir/hard', 'hardlink', ''],
        ['empty', 'file', ''],
      ]);
      expect(got[3]!.linkname).toBe(`../${'t'.repeat(120)}`);
    }
  });

  it('reads GNU long names and base-256 sizes; writes a PAX size beyond 8 GiB', async () => {
    const name = 'x/'.repeat(80) + 'file';
    const gnu = Buffer.concat([entryHeader('././@LongLink', name.length + 1), Buffer.from(name + '\0'), Buffer.alloc(BLOCK - ((name.length + 1) % BLOCK))]);
    gnu[156] = 'L'.charCodeAt(0);
    // Fix the checksum after changing the type flag.
    gnu.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += gnu[i]!;
    gnu.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
    const body = tarBytes([{ name: 'short', data: 'data' }]);
    const got = await entries(Buffer.concat([gnu, body]));
    expect(got[0]!.name).toBe(name);
    expect(got[0]!.data).toBe('data');

    const huge = entryHeader('big', 9 * 2 ** 30);
    expect(huge.toString('latin1')).toContain(`size=${9 * 2 ** 30}`);
    // The ustar size field is base-256 too, for readers that ignore PAX.
    const main = huge.subarray(huge.length - BLOCK);
    expect(main[124]).toBe(0x80);
  });

  it('refuses a bad header checksum and names where it is (exit 3 class)', async () => {
    const tar = tarBytes([{ name: 'a', data: 'x' }]);
    tar[0] ^= 0xff;
    const err = await failure(entries(tar));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toMatch(/checksum.*|tar header at byte 0/);
  });

  it('B2: a tar cut inside an entry is an integrity failure; garbage after the end is refused (B7)', async () => {
    const tar = tarBytes([{ name: 'a', data: Buffer.alloc(5000, 1) }]);
    const cut = await failure(entries(tar.subarray(0, 3000)));
    expect(cut.code).toBe('INTEGRITY');
    expect(cut.message).toMatch(/truncated/);
    const garbage = await failure(entries(Buffer.concat([tar, Buffer.from('garbage')])));
    expect(garbage.code).toBe('INTEGRITY');
    expect(garbage.message).toMatch(/after the end of the tar archive/);
    // Zero padding after the end marker is normal.
    expect(await entries(Buffer.concat([tar, Buffer.alloc(10240)]))).toHaveLength(1);
  });

  it('indexes a plain tar by its headers (offsets point at the data)', async () => {
    const dir = await tempDir();
    const tar = tarBytes([{ name: 'a', data: 'AAA' }, { name: `${'n'.repeat(150)}`, data: 'BBBB' }]);
    await writeFile(join(dir, 't.tar'), tar);
    const fh = await open(join(dir, 't.tar'));
    try {
      const idx = await indexTar(fh, 't.tar');
      expect(idx.map((h) => [h.name, h.size])).toEqual([['a', 3], ['n'.repeat(150), 4]]);
      expect(tar.toString('latin1', idx[1]!.offset, idx[1]!.offset + 4)).toBe('BBBB');
    } finally {
      await fh.close();
    }
  });

  it('A1/A16: archive paths that climb out or are absolute are never resolved', () => {
    expect(cleanPath('./blobs//sha256/x')).toBe('blobs/sha256/x');
    expect(cleanPath('../etc/passwd')).toBeUndefined();
    expect(cleanPath('a/../../x')).toBeUndefined();
    expect(cleanPath('/etc/shadow')).toBeUndefined();
    expect(linkTargetPath('abc/layer.tar', 'symlink', '../def/layer.tar')).toBe('def/layer.tar');
    expect(linkTargetPath('abc/layer.tar', 'symlink', '../../etc/passwd')).toBeUndefined();
    expect(linkTargetPath('abc/layer.tar', 'symlink', '/etc/passwd')).toBeUndefined();
    expect(linkTargetPath('abc/layer.tar', 'hardlink', 'def/layer.tar')).toBe('def/layer.tar');
  });
});

describe('zstd frames', () => {
  const a = randomBytes(200_000);
  const b = Buffer.alloc(300_000, 7);
  const za = zlib.zstdCompressSync(a);
  const zb = zlib.zstdCompressSync(b, { params: { [zlib.constants.ZSTD_c_checksumFlag]: 1 } });
  const skippable = Buffer.concat([Buffer.from([0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0]), Buffer.from('abc')]);
  const split = (buf: Buffer, n: number) => Array.from({ length: Math.ceil(buf.length / n) }, (_, i) => buf.subarray(i * n, (i + 1) * n));

  it('B4: several frames and skippable frames decode completely, whatever the chunking', async () => {
    const stream = Buffer.concat([skippable, za, zb, skippable]);
    for (const n of [997, 4096, stream.length]) {
      expect((await unzstd(split(stream, n))).equals(Buffer.concat([a, b]))).toBe(true);
    }
    // Byte by byte (headers straddling every boundary), on small frames.
    const small = Buffer.concat([skippable, zlib.zstdCompressSync('hello '), zlib.zstdCompressSync('world', { params: { [zlib.constants.ZSTD_c_checksumFlag]: 1 } })]);
    expect((await unzstd(split(small, 1))).toString()).toBe('hello world');
  });

  it('B7: bytes after the last frame are trailing garbage (node:zlib alone ignores them)', async () => {
    const err = await failure(unzstd([za, Buffer.from('garbage!')]));
    expect(err.code).toBe('INTEGRITY');
    expect(err.message).toMatch(/trailing garbage after zstd frame 1/);
  });

  it('B2: a truncated zstd stream fails', async () => {
    const err = await failure(unzstd([za.subarray(0, za.length - 10)]));
    expect(err.code).toBe('INTEGRITY');
    expect(err.message).toMatch(/truncated/);
  });

  describe('frames of raw blocks are passed on without a decoder', () => {
    const magic = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
    /** A block header: type 0 raw, 1 RLE, 2 compressed. */
    const bh = (type: number, size: number, last: boolean) => {
      const h = (size << 3) | (type << 1) | (last ? 1 : 0);
      return Buffer.from([h & 0xff, (h >> 8) & 0xff, h >> 16]);
    };
    // No single segment, no checksum, no content size; window 2^17 (ferry's stored frames).
    const head = Buffer.concat([magic, Buffer.from([0x00, 7 << 3])]);

    it('raw and RLE blocks, however the input is cut, and as zstd -d reads them', async () => {
      const text = randomBytes(200_000);
      const frame = Buffer.concat([head, bh(0, 131_072, false), text.subarray(0, 131_072), bh(1, 1000, false), Buffer.from('A'), bh(0, 68_928, true), text.subarray(131_072)]);
      const want = Buffer.concat([text.subarray(0, 131_072), Buffer.alloc(1000, 'A'), text.subarray(131_072)]);
      for (const n of [997, 65_536, frame.length]) expect((await unzstd(split(Buffer.concat([frame, za]), n))).equals(Buffer.concat([want, a]))).toBe(true);
      if (hasTool('zstd')) expect(execFileSync('zstd', ['-d', '-c'], { input: frame, maxBuffer: 1 << 24 }).equals(want)).toBe(true);
      // Byte by byte, so that every header straddles a boundary.
      const small = Buffer.concat([head, bh(0, 3, false), Buffer.from('abc'), bh(1, 4, false), Buffer.from('z'), bh(0, 0, false), bh(0, 2, true), Buffer.from('de')]);
      expect((await unzstd(split(small, 1))).toString()).toBe('abczzzzde');
    });

    it('a compressed block after raw ones: a decoder takes over with the window it may refer to', async () => {
      // zstd with a 128 KiB window, no checksum, no content size: random data goes out as a raw
      // block, and the repeats after it as compressed blocks whose matches reach back into it (at
      // level 9; levels 1-3 do not index data they found incompressible).
      const r = randomBytes(160_000);
      const data = Buffer.concat([r, r.subarray(60_000, 150_000), r.subarray(100_000, 160_000), Buffer.alloc(50_000, 9)]);
      const z = zlib.zstdCompressSync(data, { params: { [zlib.constants.ZSTD_c_compressionLevel]: 9, [zlib.constants.ZSTD_c_windowLog]: 17, [zlib.constants.ZSTD_c_contentSizeFlag]: 0, [zlib.constants.ZSTD_c_checksumFlag]: 0 } });
      const blocks = new ZstdFrameWalker().feed(z).filter((x) => x.kind === 'block-header' && x.block).map((x) => x.block!);
      expect(blocks[0]!.type).toBe(0); // the case under test: raw first, compressed later,
      expect(blocks[1]!.type).toBe(2);
      expect(blocks[1]!.size).toBeLessThan(40_000); // mostly matches into the raw block
      for (const n of [211, 4096, 100_000, z.length]) expect((await unzstd(split(z, n))).equals(data)).toBe(true);
    });

    it('a raw block larger than the window, a content size that disagrees, or a cut frame is refused', async () => {
      const big = Buffer.concat([magic, Buffer.from([0x00, 0 << 3]), bh(0, 2048, true), randomBytes(2048)]); // window 1 KiB
      const e1 = await failure(unzstd([big]));
      expect(e1.code).toBe('INTEGRITY');
      expect(e1.message).toMatch(/more than the frame's 1024-byte window/);
      // Frame_Content_Size of 2 bytes (stored as size - 256) says 300; the blocks hold 299.
      const sized = Buffer.concat([magic, Buffer.from([0x40, 7 << 3, 44, 0]), bh(0, 299, true), randomBytes(299)]);
      const e2 = await failure(unzstd([sized]));
      expect(e2.code).toBe('INTEGRITY');
      expect(e2.message).toMatch(/299 bytes of content, its header says 300/);
      const ok = Buffer.concat([magic, Buffer.from([0x40, 7 << 3, 44, 0]), bh(0, 300, true), randomBytes(300)]);
      expect((await unzstd([ok])).length).toBe(300);
      const cut = Buffer.concat([head, bh(0, 1000, true), randomBytes(500)]);
      const e3 = await failure(unzstd([cut]));
      expect(e3.code).toBe('INTEGRITY');
      expect(e3.message).toMatch(/truncated/);
    });
  });

  it('the frame walker finds frame boundaries without decoding', () => {
    const w = new ZstdFrameWalker();
    const runs = w.feed(Buffer.concat([za, skippable, zb]));
    expect(runs.filter((r) => r.start)).toHaveLength(2);
    expect(runs.filter((r) => r.end)).toHaveLength(2);
    expect(runs.reduce((n, r) => n + r.bytes.length, 0)).toBe(za.length + zb.length);
    expect(w.betweenFrames).toBe(true);
  });
});

describe('entry tap', () => {
  it('hashes once, checks the expected digest, and computes the decompressed digest', async () => {
    const plain = Buffer.from('layer content '.repeat(1000));
    const gz = zlib.gzipSync(plain);
    const tap = new EntryTap({ expected: { digest: sha(gz) as `sha256:${string}`, size: gz.length }, where: 'x', diff: true });
    await pipeline(Readable.from([gz]), tap, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(tap.result()).toMatchObject({ digest: sha(gz), compression: 'gzip', diffId: sha(plain) });
  });

  it('B1: a wrong byte fails with both digests named; record mode only reports it', async () => {
    const data = Buffer.from('abc');
    const expected = { digest: sha('abd') as `sha256:${string}`, size: 3 };
    const err = await failure(pipeline(Readable.from([data]), new EntryTap({ expected, where: 'blob X' }), new Writable({ write: (_c, _e, cb) => cb() })));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(sha('abd'));
    expect(err.message).toContain(sha('abc'));
    const rec = new EntryTap({ expected, where: 'blob X', mode: 'record' });
    await pipeline(Readable.from([data]), rec, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(rec.result().mismatch?.code).toBe('DIGEST_MISMATCH');
  });

  it('B2/B7: truncated gzip and trailing garbage are kept as the reason there is no diff_id', async () => {
    const gz = zlib.gzipSync(Buffer.alloc(100_000, 3));
    for (const bad of [gz.subarray(0, gz.length - 8), Buffer.concat([gz, Buffer.from('garbage')])]) {
      const tap = new EntryTap({ where: 'layer', diff: true });
      await pipeline(Readable.from([bad]), tap, new Writable({ write: (_c, _e, cb) => cb() }));
      expect(tap.result().diffId).toBeUndefined();
      expect(tap.result().diffError?.code).toBe('INTEGRITY');
    }
    // A multi-member gzip is one stream (as Go's multistream reader sees it).
    const two = Buffer.concat([zlib.gzipSync('ab'), zlib.gzipSync('cd')]);
    const tap = new EntryTap({ where: 'layer', diff: true });
    await pipeline(Readable.from([two]), tap, new Writable({ write: (_c, _e, cb) => cb() }));
    expect(tap.result().diffId).toBe(sha('abcd'));
  });

  it('B3: the decompression budget is max(1 GiB, 2048 x compressed), or FERRY_MAX_LAYER_BYTES', () => {
    expect(decompressBudget(1000, {})).toBe(2 ** 30);
    expect(decompressBudget(2 ** 20, {})).toBe(2 ** 31);
    expect(decompressBudget(5, { FERRY_MAX_LAYER_BYTES: '1000' })).toBe(1000);
  });

  it('a number in the environment that is not one stops the run naming the variable (they were ignored)', async () => {
    const { envNumber } = await import('../src/util/env.js');
    expect(envNumber('FERRY_LOCK_TIMEOUT', { min: 0, unit: 'seconds' }, 60, {})).toBe(60);
    expect(envNumber('FERRY_LOCK_TIMEOUT', { min: 0, unit: 'seconds' }, 60, { FERRY_LOCK_TIMEOUT: '' })).toBe(60);
    expect(envNumber('FERRY_LOCK_TIMEOUT', { min: 0, unit: 'seconds' }, 60, { FERRY_LOCK_TIMEOUT: '0.3' })).toBe(0.3);
    for (const [name, value] of [['FERRY_LOCK_TIMEOUT', 'abc'], ['FERRY_LOCK_TIMEOUT', '-1'], ['FERRY_RETRY_BACKOFF_MS', '5s']]) {
      expect(() => envNumber(name!, { min: 0, unit: 'seconds' }, 1, { [name!]: value })).toThrow(`${name} must be a number of seconds from 0, not ${JSON.stringify(value)}`);
    }
    expect(() => decompressBudget(5, { FERRY_MAX_LAYER_BYTES: '1e3.5' })).toThrow('FERRY_MAX_LAYER_BYTES must be a whole number of bytes above 0');
  });
});

describe('names and sizes', () => {
  it('parses sizes, names volumes and parts, and picks compression from a suffix', () => {
    expect(parseSize('4G')).toBe(4 * 2 ** 30);
    expect(parseSize('700m')).toBe(700 * 2 ** 20);
    expect(parseSize('65536')).toBe(65536);
    expect(parseSize('4GiB')).toBe(4 * 2 ** 30);
    // Decimal with a B, as media are sold: a "32 GB" stick is not 32 GiB.
    expect(parseSize('32GB')).toBe(32e9);
    expect(parseSize('500mb')).toBe(500e6);
    expect(parseSize('65536B')).toBe(65536);
    expect(() => parseSize('4 gallons')).toThrow(/invalid size/);
    expect(volumePath('/m/out.tar.zst', 3)).toBe('/m/out.003.tar.zst');
    expect(volumePath('/m/out.tgz', 12)).toBe('/m/out.012.tgz');
    expect(volumePath('/m/out', 1)).toBe('/m/out.001.tar');
    const d = sha('x') as `sha256:${string}`;
    expect(parsePartName(partName(d, 1234, 2, 3))).toEqual({ blob: d, blobSize: 1234, index: 2, count: 3 });
    expect(parsePartName('ferry-parts/sha256/../x/1/1-of-1')).toBeUndefined();
    expect(compressionForPath('a.tar.gz')).toBe('gzip');
    expect(compressionForPath('a.tgz')).toBe('gzip');
    expect(compressionForPath('a.tar.zst')).toBe('zstd');
    expect(compressionForPath('a.tar')).toBe('none');
  });
});

describe('GC pacing of saves', () => {
  it('counts each byte of a plain save once (twice made minors so frequent that read buffers waited for majors); a compressed save also counts what it compresses', async () => {
    const { saveImages } = await import('../src/archive/operations.js');
    const { streamedTotal } = await import('../src/util/memory.js');
    const { makeLayout } = await import('./helpers/images.js');
    const dir = await tempDir();
    const layer = 8 << 20;
    await makeLayout(join(dir, 'src'), [{ tag: 'x', layers: [layer] }]);
    let before = streamedTotal();
    await saveImages({ images: [`oci:${join(dir, 'src')}:x`], output: join(dir, 'x.tar') });
    const plain = streamedTotal() - before;
    expect(plain).toBeGreaterThanOrEqual(layer);
    expect(plain).toBeLessThan(layer * 1.1);
    before = streamedTotal();
    await saveImages({ images: [`oci:${join(dir, 'src')}:x`], output: join(dir, 'x.tar.zst') });
    expect(streamedTotal() - before).toBeGreaterThanOrEqual(2 * layer);
  });
});

describe('volume set patterns', () => {
  it('a pattern in the file name matches as a shell would (*, ?, [..], [!..]; dot files only by a dot), in name order; the directory is kept as written', async () => {
    const dir = await tempDir();
    for (const n of ['app.002.tar', 'app.001.tar', 'app.010.tar', 'app.001.tar.zst', '.app.003.tar', 'app[1].tar']) await writeFile(join(dir, n), '');
    expect(await archiveFiles(join(dir, 'app.*.tar'))).toEqual(['app.001.tar', 'app.002.tar', 'app.010.tar'].map((n) => join(dir, n)));
    expect(await archiveFiles(join(dir, 'app.00?.tar'))).toEqual(['app.001.tar', 'app.002.tar'].map((n) => join(dir, n)));
    expect(await archiveFiles(join(dir, 'app.0[!0]*.tar'))).toEqual([join(dir, 'app.010.tar')]);
    expect(await archiveFiles(join(dir, '.app.*.tar'))).toEqual([join(dir, '.app.003.tar')]);
    // A file whose very name looks like a pattern is that file.
    expect(await archiveFiles(join(dir, 'app[1].tar'))).toEqual([join(dir, 'app[1].tar')]);
    expect(await archiveFiles(`${dir}/./app.01*.tar`)).toEqual([`${dir}/./app.010.tar`]);
    const none = await failure(archiveFiles(join(dir, 'other.*.tar')));
    expect(none.code).toBe('NOT_FOUND');
    expect(none.message).toContain(`${join(dir, 'other.*.tar')}: no file matches`);
    expect(await archiveExists(join(dir, 'app.*.tar'))).toBe(true);
    expect(await archiveExists(join(dir, 'other.*.tar'))).toBe(false);
    expect(isPattern(join('a*b', 'x.tar'))).toBe(false);
  });

  it('a set is named in hints by the pattern of its volumes, quoted for a shell', () => {
    expect(volumePattern('/mnt/usb/app.003.tar')).toBe('/mnt/usb/app.*.tar');
    expect(volumePattern('set.0001.tar.zst')).toBe('set.*.tar.zst');
    expect(shellQuoted('/mnt/usb/app.*.tar')).toBe("'/mnt/usb/app.*.tar'");
    expect(shellQuoted("it's.*.tar")).toBe("'it'\\''s.*.tar'");
    expect(shellQuoted('/mnt/usb/app.001.tar')).toBe('/mnt/usb/app.001.tar');
  });
});
