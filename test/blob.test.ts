import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { ByteLimit, compressor, decompress, decompressor, sniff } from '../src/blob/compression.js';
import { publishStream } from '../src/blob/publish.js';
import { hashSink, hashStream, readCapped, readVerified, verifying } from '../src/blob/verify.js';
import { digestOf } from '../src/oci/digest.js';
import { failure } from './helpers/assert.js';
import { tempDir } from './helpers/fs.js';

const data = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(1000));
const good = { digest: digestOf(data), size: data.byteLength };
const chunks = (b: Buffer, n = 7) => Readable.from(Array.from({ length: Math.ceil(b.length / n) }, (_, i) => b.subarray(i * n, (i + 1) * n)));


describe('verifying stream', () => {
  it('passes correct content through unchanged', async () => {
    expect(await readVerified(chunks(data), good)).toEqual(data);
  });

  it('B1: a flipped byte fails at the end naming expected and actual digest', async () => {
    const bad = Buffer.from(data);
    bad[100] ^= 1;
    const err = await failure(readVerified(chunks(bad), good));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(`expected ${good.digest}`);
    expect(err.message).toContain(`got ${digestOf(bad)}`);
  });

  it('stops as soon as more than size bytes arrive', async () => {
    let pulled = 0;
    const endless = new Readable({
      read() {
        pulled += 1024;
        this.push(Buffer.alloc(1024));
      },
    });
    const err = await failure(readCapped(verifying(endless, { digest: good.digest, size: 4096 }), 1 << 20, 'x'));
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(pulled).toBeLessThan(1 << 20);
  });

  it('big chunks (hashed a macrotask later) are refused past the size too, before they are hashed or passed on', async () => {
    let pulled = 0;
    const big = Buffer.alloc(256 << 10, 1);
    const endless = new Readable({
      highWaterMark: 256 << 10,
      read() {
        pulled += big.length;
        this.push(big);
      },
    });
    let passed = 0;
    const v = verifying(endless, { digest: good.digest, size: 600 << 10 });
    v.on('data', (c: Buffer) => (passed += c.length));
    const err = await failure(new Promise((resolve, reject) => v.on('end', resolve).on('error', reject)));
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(passed).toBeLessThanOrEqual(512 << 10);
    expect(pulled).toBeLessThan(4 << 20);
  });

  it('a short body fails with the sizes', async () => {
    const err = await failure(readVerified(chunks(data.subarray(0, 100)), good));
    expect(err.code).toBe('SIZE_MISMATCH');
    expect(err.message).toMatch(/expected \d+ bytes, got 100/);
  });

  it('an upstream error propagates', async () => {
    const broken = new Readable({ read() { this.destroy(new Error('boom')); } });
    expect((await failure(readVerified(broken, good))).message).toBe('boom');
  });

  it('hashStream counts and hashes', async () => {
    expect(await hashStream(chunks(data))).toEqual(good);
  });
});

describe('hashSink', () => {
  it('hashes what a decoder emits, in order, though each chunk is hashed later', async () => {
    const h = createHash('sha256');
    let counted = 0;
    await pipeline(chunks(zlib.gzipSync(data), 100), decompressor('gzip', { chunk: 4096 }), hashSink(h, (n) => (counted += n)));
    expect(`sha256:${h.digest('hex')}`).toBe(good.digest);
    expect(counted).toBe(data.byteLength);
  });

  it('a decoder error still fails the pipeline', async () => {
    const cut = zlib.gzipSync(data).subarray(0, 200);
    await expect(pipeline(Readable.from([cut]), decompressor('gzip', { chunk: 1 << 20 }), hashSink(createHash('sha256')))).rejects.toThrow();
  });
});

describe('publishing', () => {
  it('B1: a failed verification leaves neither the blob nor a temp file', async () => {
    const dir = await tempDir();
    const bad = Buffer.from(data);
    bad[0] ^= 1;
    const dest = join(dir, 'blob');
    const err = await failure(publishStream(dest, verifying(chunks(bad), good)));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(await readdir(dir)).toEqual([]);
  });

  it('publishes verified content under its final name only', async () => {
    const dir = await tempDir();
    await publishStream(join(dir, 'blob'), verifying(chunks(data), good));
    expect(await readdir(dir)).toEqual(['blob']);
  });

  it('an aborted write removes its temp file', async () => {
    const dir = await tempDir();
    const ac = new AbortController();
    const slow = new Readable({
      read() {
        setTimeout(() => this.push(Buffer.alloc(1024)), 5);
      },
    });
    setTimeout(() => ac.abort(), 30);
    const err = await failure(publishStream(join(dir, 'blob'), slow, { signal: ac.signal }));
    expect(err.code ?? (err as { name?: string }).name).toMatch(/ABORT/);
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('compression', () => {
  it('sniffs gzip, zstd, bzip2, xz and plain by magic bytes', () => {
    expect(sniff(zlib.gzipSync(data))).toBe('gzip');
    expect(sniff(zlib.zstdCompressSync(data))).toBe('zstd');
    expect(sniff(Buffer.from('BZh91AY'))).toBe('bzip2');
    expect(sniff(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))).toBe('xz');
    expect(sniff(data)).toBe('none');
    expect(sniff(Buffer.alloc(0))).toBe('none');
  });

  it.each(['gzip', 'zstd', 'none'] as const)('decodes %s transparently', async (kind) => {
    const enc = kind === 'gzip' ? zlib.gzipSync(data) : kind === 'zstd' ? zlib.zstdCompressSync(data) : data;
    const { compression, stream } = await decompress(chunks(enc, 3));
    expect(compression).toBe(kind);
    expect(await readCapped(stream, 1 << 20, 'x')).toEqual(data);
  });

  it('B2: truncated gzip and zstd fail', async () => {
    for (const enc of [zlib.gzipSync(data), zlib.zstdCompressSync(data)]) {
      const { stream } = await decompress(Readable.from([enc.subarray(0, enc.length - 20)]));
      await expect(readCapped(stream, 1 << 20, 'x')).rejects.toThrow();
    }
  });

  it('B3: a decompression budget stops a bomb early', async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(64 << 20));
    const { stream } = await decompress(Readable.from([bomb]));
    const err = await failure(pipeline(stream, new ByteLimit(1 << 20, 'layer'), async function* (src) { for await (const _ of src) { /* drain */ } }));
    expect(err.code).toBe('TOO_LARGE');
  });

  /** Compresses `data` in two halves, ending the stream in one of the ways a pipeline can. */
  async function twoHalves(c: 'gzip' | 'zstd', how: 'end-at-once' | 'end-later'): Promise<Buffer> {
    const z: Transform = compressor(c);
    const parts: Buffer[] = [];
    z.on('data', (d: Buffer) => parts.push(d));
    const done = new Promise((resolve, reject) => z.on('end', resolve).on('error', reject));
    const half = data.length >> 1;
    z.write(data.subarray(0, half));
    // end() while the second half still waits for the codec: node:zlib then finished twice.
    if (how === 'end-later') await new Promise((r) => setTimeout(r, 20));
    z.write(data.subarray(half));
    if (how === 'end-later') await new Promise((r) => setTimeout(r, 20));
    z.end();
    await done;
    return Buffer.concat(parts);
  }

  it.each(['gzip', 'zstd'] as const)('compressor(%s) gives the same bytes however the input ends: one frame, no empty one after it', async (c) => {
    const atOnce = await twoHalves(c, 'end-at-once');
    const later = await twoHalves(c, 'end-later');
    expect(atOnce.toString('hex')).toBe(later.toString('hex'));
    const { stream } = await decompress(Readable.from([atOnce]));
    expect(await readCapped(stream, 1 << 20, 'x')).toEqual(data);
    if (c === 'zstd') {
      const emptyFrame = Buffer.from('28b52ffd2000010000', 'hex');
      expect(atOnce.subarray(-emptyFrame.length).equals(emptyFrame)).toBe(false);
      expect(atOnce.indexOf(Buffer.from([0x28, 0xb5, 0x2f, 0xfd]), 1)).toBe(-1);
    }
  });

  it('B4: a zstd frame declaring a huge window is refused (for its window: the same frame with 128 MiB decodes)', async () => {
    // A whole frame: magic, descriptor 0x00 (a window descriptor follows), the window descriptor
    // (exponent in the top 5 bits: 2^(10+e) bytes), then one last raw block of 0 bytes.
    const frame = (wd: number) => Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, wd, 0x01, 0x00, 0x00]);
    for (const wd of [0xf8 /* 2 TiB */, 0xa8 /* 2 GiB */, 0x90 /* 256 MiB */]) {
      const { stream } = await decompress(Readable.from([frame(wd)]));
      const err = await failure(readCapped(stream, 1 << 20, 'x'));
      expect(err.code, wd.toString(16)).toBe('INTEGRITY');
      expect(err.message).toMatch(/too much memory/);
    }
    const { stream } = await decompress(Readable.from([frame(0x88 /* 128 MiB */)]));
    expect((await readCapped(stream, 1 << 20, 'x')).length).toBe(0);
  });
});
