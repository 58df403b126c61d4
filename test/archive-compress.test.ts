import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { beforeAll, describe, expect, it } from 'vitest';
import { EarlySync } from '../src/blob/early-sync.js';
import { decompressor, ParallelCompress } from '../src/blob/compression.js';
import { ZstdFrameWalker } from '../src/blob/zstd-frames.js';
import { sha } from './helpers/archives.js';
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
async function compress(c: 'gzip' | 'zstd', data: Buffer, piece: number, o: { chunk?: number; level?: number } = {}): Promise<Buffer> {
  const parts: Buffer[] = [];
  const pieces = function* () {
    for (let at = 0; at < data.length; at += piece) yield data.subarray(at, at + piece);
  };
  await pipeline(Readable.from(pieces()), new ParallelCompress(c, { chunk: o.chunk, level: o.level, inFlight: 3 }), new Writable({ write: (b: Buffer, _e, cb) => void (parts.push(b), cb()) }));
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
