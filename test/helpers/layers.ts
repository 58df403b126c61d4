import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, rename, writeFile } from 'node:fs/promises';
import { once } from 'node:events';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gzipSync, zstdCompressSync } from 'node:zlib';

/**
 * A tar writer for tests, independent of src/fs: it writes exactly what it is told, including
 * names, types, sizes and extension headers no sane writer produces, so malicious and malformed
 * layers can be built (catalogue group A).
 */

export interface TEntry {
  name: string;
  /** file | dir | symlink | hardlink | char | block | fifo, or a raw typeflag character. */
  type?: string;
  mode?: number;
  uid?: number;
  gid?: number;
  mtime?: number;
  content?: Buffer | string;
  /** Header size field, when it must differ from the content length. */
  size?: number;
  linkname?: string;
  devmajor?: number;
  devminor?: number;
  uname?: string;
  gname?: string;
  /** PAX records written in an 'x' header before the entry (values as given). */
  pax?: Array<[string, string | Buffer]>;
  /** A GNU 'L' long-name block before the entry. */
  gnuLongName?: string;
  gnuLongLink?: string;
}

const TYPEFLAGS: Record<string, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };
export const MTIME = 1700000000;

function octal(b: Buffer, off: number, len: number, n: number): void {
  if (n >= 8 ** (len - 1)) throw new Error(`test tar: ${n} does not fit a ${len}-byte octal field`);
  b.write(n.toString(8).padStart(len - 1, '0').slice(-(len - 1)), off, 'latin1');
  b[off + len - 1] = 0;
}

export function checksum(b: Buffer): void {
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < 512; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0'), 148, 'latin1');
  b[154] = 0;
  b[155] = 0x20;
}

export function header(e: { name: string; typeflag: string; mode?: number; uid?: number; gid?: number; size: number; mtime?: number; linkname?: string; devmajor?: number; devminor?: number; uname?: string; gname?: string }): Buffer {
  const b = Buffer.alloc(512);
  Buffer.from(e.name, 'latin1').copy(b, 0, 0, 100);
  octal(b, 100, 8, e.mode ?? 0o644);
  octal(b, 108, 8, e.uid ?? 0);
  octal(b, 116, 8, e.gid ?? 0);
  octal(b, 124, 12, e.size);
  octal(b, 136, 12, e.mtime ?? MTIME);
  b.write(e.typeflag, 156, 'latin1');
  if (e.linkname) Buffer.from(e.linkname, 'latin1').copy(b, 157, 0, 100);
  b.write('ustar\x0000', 257, 'latin1');
  if (e.uname) b.write(e.uname, 265, 'latin1');
  if (e.gname) b.write(e.gname, 297, 'latin1');
  octal(b, 329, 8, e.devmajor ?? 0);
  octal(b, 337, 8, e.devminor ?? 0);
  checksum(b);
  return b;
}

export function paxRecord(key: string, value: string | Buffer): Buffer {
  const v = typeof value === 'string' ? Buffer.from(value, 'utf8') : value;
  const body = Buffer.concat([Buffer.from(` ${key}=`, 'utf8'), v, Buffer.from('\n')]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

export function padTo512(b: Buffer): Buffer {
  const rem = b.length % 512;
  return rem === 0 ? b : Buffer.concat([b, Buffer.alloc(512 - rem)]);
}

/** A special block (PAX 'x'/'g', GNU 'L'/'K') with its body. */
export function special(typeflag: string, body: Buffer, name = '././@LongLink'): Buffer {
  return Buffer.concat([header({ name, typeflag, size: body.length }), padTo512(body)]);
}

export function entryBytes(e: TEntry): Buffer {
  const content = e.content === undefined ? Buffer.alloc(0) : typeof e.content === 'string' ? Buffer.from(e.content) : e.content;
  const parts: Buffer[] = [];
  // Names that do not fit get a PAX path record, as any real writer does (unless the test sets PAX itself).
  if (!e.pax && e.gnuLongName === undefined && Buffer.byteLength(e.name, 'latin1') > 100) e = { ...e, pax: [['path', Buffer.from(e.name, 'latin1')]] };
  if (e.pax?.length) parts.push(special('x', Buffer.concat(e.pax.map(([k, v]) => paxRecord(k, v))), 'PaxHeaders/x'));
  if (e.gnuLongName !== undefined) parts.push(special('L', Buffer.concat([Buffer.from(e.gnuLongName, 'latin1'), Buffer.alloc(1)])));
  if (e.gnuLongLink !== undefined) parts.push(special('K', Buffer.concat([Buffer.from(e.gnuLongLink, 'latin1'), Buffer.alloc(1)])));
  const type = e.type ?? 'file';
  parts.push(
    header({
      name: e.name,
      typeflag: TYPEFLAGS[type] ?? type,
      mode: e.mode ?? (type === 'dir' ? 0o755 : type === 'symlink' ? 0o777 : 0o644),
      uid: e.uid,
      gid: e.gid,
      size: e.size ?? content.length,
      mtime: e.mtime,
      linkname: e.linkname,
      devmajor: e.devmajor,
      devminor: e.devminor,
      uname: e.uname,
      gname: e.gname,
    }),
  );
  if (content.length) parts.push(padTo512(content));
  return Buffer.concat(parts);
}

/** A whole archive; `end: false` leaves out the two zero blocks. */
export function tarOf(entries: TEntry[], o: { end?: boolean } = {}): Buffer {
  return Buffer.concat([...entries.map(entryBytes), ...(o.end === false ? [] : [Buffer.alloc(1024)])]);
}

export const dir = (name: string, extra: Partial<TEntry> = {}): TEntry => ({ name, type: 'dir', ...extra });
export const file = (name: string, content: string | Buffer = '', extra: Partial<TEntry> = {}): TEntry => ({ name, type: 'file', content, ...extra });
export const symlink = (name: string, linkname: string, extra: Partial<TEntry> = {}): TEntry => ({ name, type: 'symlink', linkname, ...extra });
export const hardlink = (name: string, linkname: string, extra: Partial<TEntry> = {}): TEntry => ({ name, type: 'hardlink', linkname, ...extra });

// ----------------------------------------------------------------------------- layouts

export const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

export type Compression = 'gzip' | 'zstd' | 'none';
export type LayerSpec =
  | Buffer
  | { tar: Buffer; compression?: Compression; mediaType?: string; diffId?: string }
  | { file: { digest: string; size: number; diffId?: string }; diffId?: string; mediaType?: string };

export interface BuiltImage {
  manifest: { digest: string; size: number };
  config: { digest: string; size: number };
  layers: Array<{ digest: string; size: number; diffId: string }>;
}

const MEDIA: Record<Compression, string> = {
  gzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  zstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  none: 'application/vnd.oci.image.layer.v1.tar',
};

async function put(dir: string, body: Buffer | string): Promise<{ digest: string; size: number }> {
  const digest = sha256(body);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), body);
  return { digest, size: Buffer.byteLength(body) };
}

/**
 * Writes an OCI layout whose images have real tar layers (gzip by default), with correct
 * diff_ids unless a layer overrides it. Returns what was written.
 */
export async function makeTarLayout(
  dir: string,
  images: Array<{ tag: string; layers: LayerSpec[]; diffIdCount?: number; platform?: { os: string; architecture: string; variant?: string } }>,
): Promise<BuiltImage[]> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const out: BuiltImage[] = [];
  const entries: unknown[] = [];
  for (const img of images) {
    const layers: Array<{ mediaType: string; digest: string; size: number }> = [];
    const diffIds: string[] = [];
    for (const spec of img.layers) {
      if ('file' in spec) {
        layers.push({ mediaType: spec.mediaType ?? MEDIA.none, digest: spec.file.digest, size: spec.file.size });
        diffIds.push(spec.diffId ?? spec.file.diffId ?? spec.file.digest);
        continue;
      }
      const l = Buffer.isBuffer(spec) ? { tar: spec } : spec;
      const c = l.compression ?? 'gzip';
      const blob = c === 'gzip' ? gzipSync(l.tar) : c === 'zstd' ? zstdCompressSync(l.tar) : l.tar;
      layers.push({ mediaType: l.mediaType ?? MEDIA[c], ...(await put(dir, blob)) });
      diffIds.push(l.diffId ?? sha256(l.tar));
    }
    const platform = img.platform ?? { os: 'linux', architecture: 'amd64' };
    const cfg = JSON.stringify({ ...platform, rootfs: { type: 'layers', diff_ids: diffIds.slice(0, img.diffIdCount ?? diffIds.length) } });
    const config = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(dir, cfg)) };
    const m = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers });
    const manifest = await put(dir, m);
    entries.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest, annotations: { 'org.opencontainers.image.ref.name': img.tag } });
    out.push({ manifest, config, layers: layers.map((l, i) => ({ digest: l.digest, size: l.size, diffId: diffIds[i]! })) });
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries }));
  return out;
}

/**
 * Streams a generated tar into a layout blob without holding it in memory; for big layers (many
 * files, big files). Plain by default (digest = diff_id); with `gzip`, the blob is compressed and
 * `diffId` is the uncompressed tar's digest. Big files are random-looking unless `pattern`.
 */
export async function writeTarBlob(
  layoutDir: string,
  entries: Iterable<TEntry | { name: string; bigFile: number; seed?: number }>,
  o: { gzip?: boolean } = {},
): Promise<{ digest: string; size: number; diffId: string }> {
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  const tmp = join(layoutDir, 'blobs', 'sha256', `incoming-${process.pid}-${Math.random().toString(36).slice(2)}`);
  const out = createWriteStream(tmp);
  const plainHash = createHash('sha256');
  const blobHash = createHash('sha256');
  let size = 0;
  const sink = o.gzip ? createGzip() : undefined;
  const done = sink ? pipeline(sink, new Transform({ transform(c, _e, cb) { blobHash.update(c); size += c.length; cb(null, c); } }), out) : undefined;
  const target = sink ?? out;
  const write = async (b: Buffer) => {
    plainHash.update(b);
    if (!sink) {
      blobHash.update(b);
      size += b.length;
    }
    if (!target.write(b)) await once(target, 'drain');
  };
  for (const e of entries) {
    if ('bigFile' in e) {
      // 8 GiB and up does not fit the 11 octal digits of the size field: a PAX size record, as GNU tar writes.
      if (e.bigFile >= 8 ** 11) await write(special('x', paxRecord('size', String(e.bigFile)), 'PaxHeaders/x'));
      await write(header({ name: e.name, typeflag: '0', size: e.bigFile >= 8 ** 11 ? 0 : e.bigFile }));
      const block = randomBytes(1 << 20);
      block[0] = (e.seed ?? 7) & 0xff;
      for (let left = e.bigFile, i = 0; left > 0; i++) {
        block.writeUInt32LE(i, 4);
        const piece = Buffer.from(block.subarray(0, Math.min(left, block.length)));
        await write(piece);
        left -= piece.length;
      }
      const rem = e.bigFile % 512;
      if (rem) await write(Buffer.alloc(512 - rem));
    } else await write(entryBytes(e));
  }
  await write(Buffer.alloc(1024));
  target.end();
  if (done) await done;
  else await once(out, 'finish');
  const digest = `sha256:${blobHash.digest('hex')}`;
  await rename(tmp, join(layoutDir, 'blobs', 'sha256', digest.slice(7)));
  return { digest, size, diffId: `sha256:${plainHash.digest('hex')}` };
}
