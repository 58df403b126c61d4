import { createHash } from 'node:crypto';
import { readFile, truncate, writeFile, open } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FerryError } from '../src/errors.js';
import { TarParser, type TarEntry } from '../src/fs/tar-reader.js';
import { contentPadding, encodeEntry, END_OF_ARCHIVE, type OutEntry } from '../src/fs/tar-writer.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { mustRun, runTool, testdataImages } from './helpers/expected-images.js';
import { checksum, dir, entryBytes, file, hardlink, header, padTo512, paxRecord, special, symlink, tarOf } from './helpers/layers.js';

interface Parsed {
  entry: TarEntry;
  content: Buffer;
}

/** Parses a whole archive, feeding it in chunks of `chunk` bytes (1 exercises every boundary). */
async function parse(bytes: Buffer, chunk = 1 << 16): Promise<Parsed[]> {
  const out: Parsed[] = [];
  let parts: Buffer[] = [];
  const p = new TarParser({
    entry: (e) => {
      parts = [];
      out.push({ entry: e, content: Buffer.alloc(0) });
    },
    data: (c) => void parts.push(Buffer.from(c)),
    entryEnd: () => {
      out[out.length - 1]!.content = Buffer.concat(parts);
    },
  });
  for (let i = 0; i < bytes.length; i += chunk) {
    const r = p.write(bytes.subarray(i, i + chunk));
    if (r) await r;
  }
  p.end();
  return out;
}

async function parseError(bytes: Buffer): Promise<FerryError> {
  try {
    await parse(bytes);
  } catch (e) {
    expect(e).toBeInstanceOf(FerryError);
    return e as FerryError;
  }
  throw new Error('expected the archive to be refused');
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const bin = (s: string) => Buffer.from(s, 'utf8').toString('latin1');

describe('tar reader', () => {
  it('reads the testdata layer: PAX path, binary SCHILY xattr, hardlink, setuid, uid 1000', async () => {
    const images = await testdataImages();
    const l1 = images.layers.layers![0]!;
    const tar = gunzipSync(await readFile(join(TESTDATA, 'blobs', 'sha256', l1.digest.slice(7))));
    const entries = await parse(tar);
    const byName = new Map(entries.map((x) => [x.entry.name, x]));
    const cap = byName.get('usr/share/cap')!.entry;
    expect(cap.xattrs).toHaveLength(1);
    expect(cap.xattrs![0]!.name).toBe('security.capability');
    expect(cap.xattrs![0]!.value.toString('base64')).toBe('AQAAAgAEAAAAAAAAAAAAAAAAAAA=');
    const long = images.layers.flattenedPaths!.find((p) => p.length > 100)!;
    expect(byName.get(long)?.content.toString()).toBe('long path\n');
    expect(byName.get('bin/tool-link')!.entry).toMatchObject({ type: 'hardlink', linkname: 'bin/tool' });
    expect(byName.get('bin/suid')!.entry.mode).toBe(0o4755);
    expect(byName.get('opt/data/b.txt')!.entry).toMatchObject({ uid: 1000, gid: 1000 });
    expect(byName.get('lib')!.entry).toMatchObject({ type: 'symlink', linkname: '/usr/lib' });
    expect(entries.map((x) => x.entry.ordinal)).toEqual(entries.map((_, i) => i));
  });

  it('gives the same result whatever the chunk boundaries (1, 7, 511, 512, 513 bytes)', async () => {
    const tar = tarOf([
      dir('a/'),
      file('a/x', 'x'.repeat(1000)),
      file('a/' + 'n'.repeat(150), 'long', { pax: [['path', 'a/' + 'n'.repeat(150)]] }),
      file('placeholder', 'gnu', { gnuLongName: 'b/' + 'g'.repeat(200) }),
      symlink('s', 'x', { gnuLongLink: 't'.repeat(300) }),
    ]);
    const want = await parse(tar);
    expect(want.map((x) => x.entry.name)).toEqual(['a/', 'a/x', 'a/' + 'n'.repeat(150), 'b/' + 'g'.repeat(200), 's']);
    expect(want[4]!.entry.linkname).toBe('t'.repeat(300));
    for (const n of [1, 7, 511, 512, 513]) {
      const got = await parse(tar, n);
      expect(got.map((x) => [x.entry.name, x.entry.size, sha(x.content)])).toEqual(want.map((x) => [x.entry.name, x.entry.size, sha(x.content)]));
    }
  });

  it('reads LIBARCHIVE.xattr (URL-encoded name, base64 value) as well as SCHILY.xattr', async () => {
    const value = Buffer.from([0, 1, 2, 10, 61, 255]);
    const tar = tarOf([
      file('f', 'x', {
        pax: [
          ['LIBARCHIVE.xattr.user.a%3Db', value.toString('base64')],
          ['SCHILY.xattr.user.plain', value],
        ],
      }),
    ]);
    const [f] = await parse(tar);
    expect(f!.entry.xattrs!.map((x) => [x.name, x.value.toString('hex')])).toEqual([
      ['user.a=b', value.toString('hex')],
      ['user.plain', value.toString('hex')],
    ]);
  });

  it('refuses an xattr whose SCHILY and LIBARCHIVE values differ (a reader differential)', async () => {
    const tar = tarOf([file('f', 'x', { pax: [['SCHILY.xattr.user.a', 'one'], ['LIBARCHIVE.xattr.user.a', Buffer.from('two').toString('base64')]] })]);
    expect((await parseError(tar)).message).toMatch(/two different values/);
  });

  it('ignores PAX global headers (as Go archive/tar and Docker do), PAX mtime fractions are kept', async () => {
    const tar = Buffer.concat([
      special('g', paxRecord('comment', 'deadbeef'), 'pax_global_header'),
      tarOf([file('f', 'x', { pax: [['mtime', '1700000000.25']] })]),
    ]);
    const [f] = await parse(tar);
    expect(f!.entry).toMatchObject({ name: 'f', mtime: 1700000000, mtimePax: '1700000000.25' });
  });

  it('keeps non-UTF-8 and non-ASCII names byte for byte', async () => {
    const latin = Buffer.from([0x63, 0x61, 0x66, 0xe9]).toString('latin1'); // "café" in Latin-1
    const utf8 = bin('naïve-名前');
    const [a, b] = await parse(tarOf([file(latin, '1'), file('x', '2', { pax: [['path', Buffer.from(utf8, 'latin1')]] })]));
    expect(a!.entry.name).toBe(latin);
    expect(b!.entry.name).toBe(utf8);
  });

  it('A14: a PAX size before a GNU long name applies to the member, not the long-name block (as GNU tar reads it)', async () => {
    const name = 'smuggled/' + 'n'.repeat(120);
    const content = Buffer.from('the real content, 33 bytes long.\n');
    const tar = Buffer.concat([
      special('x', paxRecord('size', String(content.length)), 'PaxHeaders/x'),
      special('L', Buffer.concat([Buffer.from(name), Buffer.alloc(1)])),
      header({ name: 'short', typeflag: '0', size: 0 }),
      padTo512(content),
      tarOf([file('after', 'after')]),
    ]);
    const got = await parse(tar);
    expect(got.map((x) => [x.entry.name, x.content.toString()])).toEqual([
      [name, content.toString()],
      ['after', 'after'],
    ]);
    const dirp = await tempDir();
    await writeFile(join(dirp, 'a.tar'), tar);
    const gnu = await mustRun('tar', ['-tvf', join(dirp, 'a.tar')]);
    const lines = gnu.stdout.toString().trim().split('\n');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toContain(`${content.length} `);
    expect(lines[0]).toContain(name);
    expect(lines[1]).toContain('after');
  });

  it('A14: refuses two PAX headers for one member, and a PAX path together with a GNU long name', async () => {
    const twoPax = Buffer.concat([special('x', paxRecord('path', 'a')), special('x', paxRecord('path', 'b')), tarOf([file('c', '')])]);
    expect((await parseError(twoPax)).message).toMatch(/two 'x' extension headers/);
    const both = Buffer.concat([special('x', paxRecord('path', 'a')), special('L', Buffer.from('b\0')), tarOf([file('c', '')])]);
    expect((await parseError(both)).message).toMatch(/both a PAX path and a GNU long name/);
  });

  it('treats links, directories and devices as header-only whatever their size field says (as Go does)', async () => {
    const tar = Buffer.concat([header({ name: 'l', typeflag: '2', size: 5, linkname: 'x' }), tarOf([file('next', 'n')])]);
    const got = await parse(tar);
    expect(got.map((x) => x.entry.name)).toEqual(['l', 'next']);
  });

  it('reads GNU sparse files written by GNU tar (old GNU format and PAX 1.0), holes expanded', async () => {
    const d = await tempDir();
    const path = join(d, 'sparse.bin');
    const fh = await open(path, 'w');
    await fh.write(Buffer.from('head'), 0, 4, 0);
    await fh.write(Buffer.from('middle'), 0, 6, 3 << 20);
    await fh.close();
    await truncate(path, 8 << 20);
    const want = sha(await readFile(path));
    for (const format of ['gnu', 'posix']) {
      const out = join(d, `${format}.tar`);
      await mustRun('tar', ['--sparse', `--format=${format}`, '-C', d, '-cf', out, 'sparse.bin']);
      const raw = await readFile(out);
      expect(raw.length).toBeLessThan(1 << 20); // it really is stored sparse
      const [f] = await parse(raw, 4096);
      expect(f!.entry.name).toBe('sparse.bin');
      expect(f!.entry.size).toBe(8 << 20);
      expect(sha(f!.content)).toBe(want);
    }
  });

  describe('A15: malformed archives give a clean error, never a crash', () => {
    const good = tarOf([file('a', 'hello'), file('b', 'world')]);
    const cases: Array<[string, () => Buffer, RegExp]> = [
      ['truncated header', () => good.subarray(0, 300), /unexpected end of archive/],
      ['truncated content', () => good.subarray(0, 512 + 2), /unexpected end of archive inside "a"/],
      [
        'bad checksum',
        () => {
          const b = Buffer.from(good);
          b[0] = 0x7a;
          return b;
        },
        /checksum mismatch/,
      ],
      [
        'negative size (base-256)',
        () => {
          const b = header({ name: 'neg', typeflag: '0', size: 0 });
          b.fill(0xff, 124, 136);
          checksum(b);
          return Buffer.concat([b, Buffer.alloc(1024)]);
        },
        /negative size/,
      ],
      [
        'huge size (base-256 beyond 2^53)',
        () => {
          const b = header({ name: 'huge', typeflag: '0', size: 0 });
          b.fill(0x7f, 124, 136);
          b[124] = 0x80 | 0x7f;
          checksum(b);
          return Buffer.concat([b, Buffer.alloc(1024)]);
        },
        /out of range/,
      ],
      [
        'non-octal size',
        () => {
          const b = header({ name: 'x', typeflag: '0', size: 0 });
          b.write('0000000009z\0', 124, 'latin1');
          checksum(b);
          return Buffer.concat([b, Buffer.alloc(1024)]);
        },
        /size field is not an octal number/,
      ],
      [
        'non-octal uid',
        () => {
          const b = header({ name: 'x', typeflag: '0', size: 0 });
          b.write('12-4567\0', 108, 'latin1');
          checksum(b);
          return Buffer.concat([b, Buffer.alloc(1024)]);
        },
        /uid field is not an octal number/,
      ],
      ['zero block followed by data', () => Buffer.concat([Buffer.alloc(512), good]), /zero block followed by data/],
      ['malformed PAX record', () => Buffer.concat([special('x', Buffer.from('99 path=x\n')), good]), /malformed PAX record/],
      ['unknown member type', () => tarOf([{ name: 'v', type: 'V' }]), /unsupported type "V"/],
      ['random bytes', () => Buffer.from(Array.from({ length: 2048 }, (_, i) => (i * 7919) & 0xff)), /checksum mismatch/],
      ['PAX header over 1 MiB', () => Buffer.concat([header({ name: 'p', typeflag: 'x', size: 2 << 20 }), Buffer.alloc(1024)]), /at byte 0: PAX header of 2097152 bytes exceeds limit/],
    ];
    for (const [what, make, message] of cases) {
      it(`A15: ${what}`, async () => {
        const e = await parseError(make());
        expect(['INVALID_INPUT', 'TOO_LARGE']).toContain(e.code);
        expect(e.message).toMatch(message);
      });
    }

    it('A15: an archive without the end-of-archive blocks is accepted, like Go and GNU tar', async () => {
      expect((await parse(tarOf([file('a', 'x')], { end: false }))).map((x) => x.entry.name)).toEqual(['a']);
    });
  });
});

describe('tar writer', () => {
  async function roundTrip(entries: Array<{ e: OutEntry; content?: Buffer }>): Promise<Parsed[]> {
    const parts: Buffer[] = [];
    for (const { e, content } of entries) {
      parts.push(encodeEntry(e));
      if (content) parts.push(content, contentPadding(content.length) ?? Buffer.alloc(0));
    }
    parts.push(END_OF_ARCHIVE);
    return parse(Buffer.concat(parts));
  }

  it('round-trips long and non-ASCII names and link targets, xattrs, big ids, fractional times, devices', async () => {
    const long = 'd/' + 'x'.repeat(200);
    const uni = bin('ünïcödé/ファイル');
    const xattr = { name: 'security.capability', value: Buffer.from([1, 0, 0, 2, 10, 0x3d]) };
    const got = await roundTrip([
      { e: { name: long, type: 'file', mode: 0o4755, uid: 1 << 22, gid: 3, size: 3, mtime: 1700000000, mtimePax: '1700000000.5', xattrs: [xattr] }, content: Buffer.from('abc') },
      { e: { name: uni, type: 'symlink', mode: 0o777, uid: 0, gid: 0, size: 0, mtime: 1, linkname: 'y'.repeat(150) } },
      { e: { name: 'dev/null', type: 'char', mode: 0o666, uid: 0, gid: 0, size: 0, mtime: 1, devmajor: 1, devminor: 3 } },
      { e: { name: 'dir', type: 'dir', mode: 0o755, uid: 0, gid: 0, size: 0, mtime: 1 } },
      { e: { name: 'hl', type: 'hardlink', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 1, linkname: long } },
    ]);
    expect(got[0]!.entry).toMatchObject({ name: long, mode: 0o4755, uid: 1 << 22, mtimePax: '1700000000.5' });
    expect(got[0]!.entry.xattrs).toEqual([xattr]);
    expect(got[0]!.content.toString()).toBe('abc');
    expect(got[1]!.entry).toMatchObject({ name: uni, type: 'symlink', linkname: 'y'.repeat(150) });
    expect(got[2]!.entry).toMatchObject({ type: 'char', devmajor: 1, devminor: 3 });
    expect(got[3]!.entry).toMatchObject({ name: 'dir/', type: 'dir' });
    expect(got[4]!.entry).toMatchObject({ type: 'hardlink', linkname: long });
  });

  it('writes archives GNU tar lists the same way', async () => {
    const d = await tempDir();
    const long = 'd/' + 'x'.repeat(200);
    const parts = [encodeEntry({ name: long, type: 'file', mode: 0o644, uid: 0, gid: 0, size: 2, mtime: 1700000000 }), Buffer.from('hi'), contentPadding(2)!, END_OF_ARCHIVE];
    await writeFile(join(d, 'w.tar'), Buffer.concat(parts));
    const r = await runTool('tar', ['-tf', join(d, 'w.tar')]);
    expect(r.code).toBe(0);
    expect(r.stdout.toString().trim()).toBe(long);
  });

  it('is deterministic: the same entry gives the same bytes', () => {
    const e: OutEntry = { name: 'a/' + 'b'.repeat(120), type: 'file', mode: 0o644, uid: 0, gid: 0, size: 1, mtime: 5, xattrs: [{ name: 'user.x', value: Buffer.from('y') }] };
    expect(encodeEntry(e).equals(encodeEntry({ ...e }))).toBe(true);
  });

  it('hardlink and test helpers agree (sanity of the malicious-layer writer)', async () => {
    const got = await parse(tarOf([file('a', 'x'), hardlink('b', 'a')]));
    expect(got.map((x) => [x.entry.name, x.entry.type])).toEqual([
      ['a', 'file'],
      ['b', 'hardlink'],
    ]);
    expect(entryBytes(file('z', 'q')).length).toBe(1024);
  });
});
