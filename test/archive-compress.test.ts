import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { EarlySync } from '../src/blob/early-sync.js';
import { compressedBound, decompressor, ParallelCompress } from '../src/blob/compression.js';
import { ZstdFrameWalker } from '../src/blob/zstd-frames.js';
import { gzipSync, zstdCompressSync } from 'node:zlib';
import { sha, tarBytes } from './helpers/archives.js';
import { makeTarLayout } from './helpers/layers.js';
import { ferry } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { hasTool } from './helpers/tools.js';

/** Text with some random bytes: compresses, but not to nothing. */
function mixed(n: number): Buffer {
  const text = Buffer.from(Array.from({ length: 4000 }, (_, i) => `line ${i % 97} of /usr/lib/lib${i % 13}.so\n`).join(''));
  const out = Buffer.alloc(n);
  for (let at = 0; at < n; at += text.length) text.copy(out, at);
  for (let at = 0; at < n; at += 4096) randomBytes(512).copy(out, at);
  return out;
}

/** Compresses `data` fed in pieces of `piece` bytes. */
async function compress(c: 'gzip' | 'zstd', data: Buffer, piece: number, o: { chunk?: number; level?: number; asIs?: Array<[number, number]> } = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  const pieces = function* () {
    for (let at = 0; at < data.length; at += piece) yield data.subarray(at, at + piece);
  };
  const pc = new ParallelCompress(c, { chunk: o.chunk, level: o.level, inFlight: 3 });
  for (const [start, length] of o.asIs ?? []) pc.storeAsIs(start, length);
  await pipeline(Readable.from(pieces()), pc, new Writable({ write: (b: Buffer, _e, cb) => void (parts.push(b), cb()) }));
  return Buffer.concat(parts);
}

async function decode(c: 'gzip' | 'zstd', data: Buffer): Promise<Buffer> {
  const parts: Buffer[] = [];
  await pipeline(Readable.from([data]), decompressor(c), new Writable({ write: (b: Buffer, _e, cb) => void (parts.push(b), cb()) }));
  return Buffer.concat(parts);
}

/** Members of a gzip stream written at the default level: they start with this exact header. */
function gzipMembers(data: Buffer): number {
  const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3]);
  let n = 0;
  for (let at = data.indexOf(header); at >= 0; at = data.indexOf(header, at + 1)) n++;
  return n;
}

function zstdFrames(data: Buffer): number {
  const w = new ZstdFrameWalker();
  return w.feed(data).filter((r) => r.start).length;
}

const tools = { zstd: hasTool('zstd'), gzip: hasTool('gzip') };
const skopeo = hasTool('skopeo');

describe('parallel whole-archive compression (ParallelCompress)', () => {
  const data = mixed(700_000);
  const chunk = 64 * 1024;

  for (const c of ['gzip', 'zstd'] as const) {
    it(`${c}: several independent members/frames that our decoder reads back as one stream`, async () => {
      const out = await compress(c, data, 10_000, { chunk });
      expect(out.length).toBeLessThan(data.length / 2);
      expect((await decode(c, out)).equals(data)).toBe(true);
      const expected = Math.ceil(data.length / chunk);
      if (c === 'zstd') expect(zstdFrames(out)).toBe(expected);
      else expect(gzipMembers(out)).toBe(expected);
    });

    it(`${c}: output is the same whatever the input's piece sizes and concurrency (deterministic)`, async () => {
      const a = await compress(c, data, 10_000, { chunk, level: 3 });
      const b = await compress(c, data, 65_537, { chunk, level: 3 });
      const d = await compress(c, data, 1_000_000, { chunk, level: 3 });
      expect(b.equals(a)).toBe(true);
      expect(d.equals(a)).toBe(true);
      const other = await compress(c, data, 10_000, { chunk, level: 1 });
      expect(other.equals(a)).toBe(false);
    });

    it(`${c}: empty input is one valid empty ${c === 'gzip' ? 'member' : 'frame'}`, async () => {
      const out = await compress(c, Buffer.alloc(0), 1);
      expect(out.length).toBeGreaterThan(0);
      expect((await decode(c, out)).length).toBe(0);
    });
  }

  it('gzip members carry a fixed OS byte (3), so the output does not depend on the platform', async () => {
    const out = await compress('gzip', data, 10_000, { chunk });
    expect(out[9]).toBe(3);
  });

  describe('ranges that are compressed already go out stored (storeAsIs)', () => {
    // The ranges hold text here, so a codec would shrink them: finding them verbatim in the output
    // shows they were stored. Ranges: one inside the first chunk, one spanning several chunks and
    // many blocks, one right after it, one at the very end.
    const text = mixed(400_000);
    const input = Buffer.concat([randomBytes(50_000), text, randomBytes(30_000), text.subarray(0, 70_000), randomBytes(200_000), text.subarray(0, 1000)]);
    const ranges: Array<[number, number]> = [
      [10_000, 20_000],
      [50_000, 400_000],
      [450_000, 30_000],
      [480_000, 70_000],
      [input.length - 1000, 1000],
    ];
    for (const c of ['gzip', 'zstd'] as const) {
      it(`${c}: the stream still decodes to the input, and stored bytes are there as they are`, async () => {
        const out = await compress(c, input, 10_000, { chunk, asIs: ranges });
        expect((await decode(c, out)).equals(input)).toBe(true);
        // Stored blocks hold 128 KiB (zstd) or 64 KiB - 1 (gzip): shorter pieces appear verbatim.
        expect(out.includes(text.subarray(0, 60_000))).toBe(true);
        expect(out.includes(text.subarray(200_000, 260_000))).toBe(true);
        expect(out.length).toBeGreaterThan(input.length);
        if (tools[c]) expect(execFileSync(c, ['-d', '-c'], { input: out, maxBuffer: 1 << 24 }).equals(input)).toBe(true);
        if (c === 'zstd') expect(zstdFrames(out)).toBeGreaterThan(ranges.length);
        // The same text outside a declared range is compressed.
        const plain = await compress(c, input, 10_000, { chunk });
        expect(plain.includes(text.subarray(0, 60_000))).toBe(false);
        expect(plain.length).toBeLessThan(out.length - 300_000);
      });

      it(`${c}: stored output is the same whatever the input's piece sizes (deterministic)`, async () => {
        const a = await compress(c, input, 10_000, { chunk, level: 3, asIs: ranges });
        const b = await compress(c, input, 65_537, { chunk, level: 3, asIs: ranges });
        const d = await compress(c, input, 1 << 20, { chunk, level: 3, asIs: ranges });
        expect(b.equals(a)).toBe(true);
        expect(d.equals(a)).toBe(true);
      });

      it(`${c}: input that ends inside a stored range is an error, not a short stream`, async () => {
        await expect(compress(c, input.subarray(0, 100_000), 10_000, { chunk, asIs: [[50_000, 400_000]] })).rejects.toThrow(/inside a stored range/);
      });
    }
  });

  it('compressedBound is never exceeded: incompressible data through the codec, stored ranges, tiny inputs', async () => {
    const noise = randomBytes(3_000_000);
    const cases: Array<{ data: Buffer; asIs: Array<[number, number]> }> = [
      { data: noise, asIs: [] },
      { data: noise.subarray(0, 100), asIs: [] },
      { data: Buffer.alloc(0), asIs: [] },
      { data: noise, asIs: [[1000, 70_000], [71_000, 1], [80_000, 2_500_000]] },
      { data: noise.subarray(0, 200_000), asIs: Array.from({ length: 50 }, (_, i) => [i * 4000, 3000] as [number, number]) },
    ];
    for (const c of ['gzip', 'zstd'] as const) {
      for (const { data, asIs } of cases) {
        for (const level of c === 'gzip' ? [1, 6, 9] : [1, 3, 19]) {
          const out = await compress(c, data, 65_536, { level, asIs });
          expect(out.length, `${c} -${level}, ${data.length} bytes, ${asIs.length} stored`).toBeLessThanOrEqual(compressedBound(data.length, c, asIs.length));
        }
      }
    }
    // Close, not just safe: within 0.1 % + 4 kB of incompressible data's real size.
    const real = (await compress('gzip', noise, 65_536)).length;
    expect(compressedBound(noise.length, 'gzip', 0)).toBeLessThan(real * 1.001 + 4096);
  });

  for (const c of ['gzip', 'zstd'] as const) {
    it.skipIf(!tools[c])(`${c} -d reads the concatenated ${c === 'gzip' ? 'members' : 'frames'}`, async () => {
      const out = await compress(c, data, 10_000, { chunk });
      expect(execFileSync(c, ['-d', '-c'], { input: out, maxBuffer: 1 << 24 }).equals(data)).toBe(true);
    });
  }
});

describe('save -o .tar.zst / .tar.gz of an image larger than one compression chunk', () => {
  let store: string;
  let dir: string;
  let layer: Buffer;
  beforeAll(async () => {
    dir = await tempDir();
    store = join(dir, 'store');
    layer = mixed(6 << 20);
    await makeLayout(store, [{ tag: 'big', layers: [layer] }]);
  });

  it('a --level the codec does not have, or one for an uncompressed archive, is a usage error (exit 2), and nothing is written', async () => {
    for (const [name, level] of [['x.tar.gz', '12'], ['x.tar.zst', '99'], ['x.tar.zst', '0']]) {
      const out = await tempDir();
      const r = await ferry(['save', '-q', 'big', '-o', join(out, name!), '--level', level!], { env: { FERRY_STORE: store } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(/--level .*levels are 1 to (9|22)/);
      expect(await readdir(out)).toEqual([]);
    }
    // A level for an uncompressed archive was ignored silently.
    const out = await tempDir();
    const plain = await ferry(['save', '-q', 'big', '-o', join(out, 'x.tar'), '--level', '5'], { env: { FERRY_STORE: store } });
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain('x.tar is not compressed');
    expect(await readdir(out)).toEqual([]);
  });

  it('an -o suffix that names a compression ferry does not write (a typo, bzip2, xz) is refused, not written as a plain tar', async () => {
    for (const name of ['x.tar.zs', 'x.tar.bz2', 'x.tar.xz', 'x.tar.gzip']) {
      const out = await tempDir();
      const r = await ferry(['save', '-q', 'big', '-o', join(out, name)], { env: { FERRY_STORE: store } });
      expect(r.code, name).toBe(2);
      expect(r.stderr).toContain('ferry writes plain tar (.tar), gzip (.tar.gz, .tgz) or zstd (.tar.zst)');
      expect(await readdir(out)).toEqual([]);
    }
    // Said on purpose: a plain tar under that name.
    const out = await tempDir();
    expect((await ferry(['save', '-q', 'big', '-o', join(out, 'x.tar.zs'), '--compress', 'none'], { env: { FERRY_STORE: store } })).code).toBe(0);
    expect(await readdir(out)).toEqual(['x.tar.zs']);
  });

  for (const [suffix, tool] of [['tar.zst', 'zstd'], ['tar.gz', 'gzip']] as const) {
    it(`${suffix}: ${tool} -d gives the plain tar, ferry load reads it, and a second save is byte-identical`, async () => {
      const env = { FERRY_STORE: store };
      const a = join(dir, `a.${suffix}`);
      const b = join(dir, `b.${suffix}`);
      for (const f of [a, b]) {
        const r = await ferry(['save', '-q', 'big', '-o', f], { env });
        expect(r.code, r.stderr).toBe(0);
      }
      const bytes = await readFile(a);
      expect((await readFile(b)).equals(bytes)).toBe(true);
      if (tool === 'zstd') expect(zstdFrames(bytes)).toBeGreaterThan(1);
      const plain = await decode(tool, bytes);
      expect(plain.includes(layer.subarray(0, 1 << 20))).toBe(true);
      if (tools[tool]) expect(execFileSync(tool, ['-d', '-c', a], { maxBuffer: 1 << 26 }).equals(plain)).toBe(true);
      // GNU tar detects the compression itself; skopeo reads a zstd docker-archive (it reads no
      // gzip one at all, single-stream or not).
      if (tools[tool]) expect(execFileSync('tar', ['-tf', a]).toString()).toContain('manifest.json');
      if (tool === 'zstd' && skopeo) {
        const info = JSON.parse(execFileSync('skopeo', ['inspect', `docker-archive:${a}`]).toString()) as { Layers: string[] };
        expect(info.Layers).toEqual([sha(layer)]);
      }
      const loaded = join(dir, `loaded-${tool}`);
      const l = await ferry(['--store', loaded, 'load', '-i', a], { env });
      expect(l.code, l.stderr).toBe(0);
      expect(await readFile(join(loaded, 'blobs', 'sha256', sha(layer).slice(7)))).toEqual(layer);
    });
  }
});

describe('save -o .tar.zst / .tar.gz stores gzip and zstd layers as they are', () => {
  let store: string;
  let dir: string;
  const layers: Record<'gzip' | 'zstd', Buffer> = { gzip: Buffer.alloc(0), zstd: Buffer.alloc(0) };
  let diffId: string;
  beforeAll(async () => {
    dir = await tempDir();
    store = join(dir, 'store');
    const tar = tarBytes([{ name: 'data.bin', data: randomBytes(3 << 20) }, { name: 'notes.txt', data: mixed(1 << 20) }]);
    await makeTarLayout(store, [
      { tag: 'gz', layers: [{ tar, compression: 'gzip' }] },
      { tag: 'zst', layers: [{ tar, compression: 'zstd' }] },
    ]);
    diffId = sha(tar);
    layers.gzip = gzipSync(tar);
    layers.zstd = zstdCompressSync(tar);
  });

  /** Where a stored frame (zstd) or member (gzip) begins with the layer's first bytes. */
  function storedStart(c: 'gzip' | 'zstd', layer: Buffer): Buffer {
    if (c === 'zstd') {
      const h = ((128 << 10) << 3) | 0;
      return Buffer.concat([Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x38, h & 0xff, (h >> 8) & 0xff, h >> 16]), layer.subarray(0, 4096)]);
    }
    return Buffer.concat([Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3, 0, 0xff, 0xff, 0, 0]), layer.subarray(0, 4096)]);
  }

  for (const [suffix, c] of [['tar.zst', 'zstd'], ['tar.gz', 'gzip']] as const) {
    it(`${suffix}: each layer goes in stored, the archive decodes, loads back, and is the same on a second save`, async () => {
      const env = { FERRY_STORE: store };
      const a = join(dir, `a.${suffix}`);
      const b = join(dir, `b.${suffix}`);
      for (const f of [a, b]) {
        const r = await ferry(['save', '-q', 'gz', 'zst', '-o', f], { env });
        expect(r.code, r.stderr).toBe(0);
      }
      const bytes = await readFile(a);
      expect((await readFile(b)).equals(bytes)).toBe(true);
      for (const layer of [layers.gzip, layers.zstd]) expect(bytes.includes(storedStart(c, layer))).toBe(true);
      const plain = await decode(c, bytes);
      for (const layer of [layers.gzip, layers.zstd]) expect(plain.includes(layer)).toBe(true);
      if (tools[c]) {
        expect(execFileSync(c, ['-d', '-c', a], { maxBuffer: 1 << 26 }).equals(plain)).toBe(true);
        expect(execFileSync('tar', ['-tf', a]).toString()).toContain(`blobs/sha256/${sha(layers.gzip).slice(7)}`);
      }
      if (c === 'zstd' && skopeo) {
        // skopeo decompresses a docker-archive's layers, and names them by diff_id.
        const info = JSON.parse(execFileSync('skopeo', ['inspect', `docker-archive:${a}:gz:latest`]).toString()) as { Layers: string[] };
        expect(info.Layers).toEqual([diffId]);
      }
      const loaded = join(dir, `loaded-${c}`);
      const l = await ferry(['--store', loaded, 'load', '-i', a], { env });
      expect(l.code, l.stderr).toBe(0);
      const v = await ferry(['--store', loaded, 'verify'], { env });
      expect(v.code, v.stdout + v.stderr).toBe(0);
      for (const layer of [layers.gzip, layers.zstd]) expect(await readFile(join(loaded, 'blobs', 'sha256', sha(layer).slice(7)))).toEqual(layer);
    });
  }

  it('volumes of a .tar.zst set store the layer parts as they are, and load back', async () => {
    const env = { FERRY_STORE: store };
    const out = await tempDir();
    const r = await ferry(['save', '-q', 'gz', '-o', join(out, 'set.tar.zst'), '--volume-size', '2M'], { env });
    expect(r.code, r.stderr).toBe(0);
    const files = (await readdir(out)).sort();
    expect(files.length).toBeGreaterThan(1);
    const all = Buffer.concat(await Promise.all(files.map((f) => readFile(join(out, f)))));
    expect(all.includes(storedStart('zstd', layers.gzip))).toBe(true);
    const loaded = join(out, 'loaded');
    const l = await ferry(['--store', loaded, 'load', '-i', ...files.map((f) => join(out, f))], { env });
    expect(l.code, l.stderr).toBe(0);
    expect(await readFile(join(loaded, 'blobs', 'sha256', sha(layers.gzip).slice(7)))).toEqual(layers.gzip);
  });
});

describe('EarlySync (background flushes of an archive file being written)', () => {
  it('passes every byte through unchanged across several background flushes', async () => {
    const file = join(await tempDir(), 'out.bin');
    const data = randomBytes(1 << 20);
    const pieces = function* () {
      for (let i = 0; i < 70; i++) yield data;
    };
    const out = createWriteStream(file, { flush: true });
    await pipeline(Readable.from(pieces()), new EarlySync(out).counter(), out);
    const back = await readFile(file);
    expect(back.length).toBe(70 << 20);
    expect(sha(back)).toBe(sha(Buffer.concat(Array.from({ length: 70 }, () => data))));
  });
});
