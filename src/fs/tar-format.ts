import { FerryError } from '../errors.js';

/**
 * The byte-level tar format: 512-byte ustar/GNU/v7 header blocks, numeric fields (octal and
 * GNU base-256) and PAX records. Names are kept as "binary strings" (latin1: one char per byte)
 * so that any byte sequence round-trips exactly; `display()` turns them into text for messages.
 */

export const BLOCK = 512;
/** Largest PAX header, GNU long name or sparse map accepted (Go's archive/tar uses the same cap). */
export const MAX_SPECIAL_BYTES = 1 << 20;

export type Format = 'ustar' | 'gnu' | 'star' | 'v7';

export interface RawHeader {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  format: Format;
}

export interface Xattr {
  name: string;
  value: Buffer;
}

const bad = (offset: number, what: string) => new FerryError('INVALID_INPUT', `invalid tar header at byte ${offset}: ${what}`);

/** Text for messages: the name's bytes as UTF-8, quoted, control characters escaped. */
export function display(name: string): string {
  const s = Buffer.from(name, 'latin1').toString('utf8');
  return JSON.stringify(s.length > 200 ? s.slice(0, 200) + '…' : s);
}

export function isZeroBlock(b: Buffer, off: number): boolean {
  for (let i = off; i < off + BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/** A NUL-terminated string field. */
function str(b: Buffer, off: number, len: number): string {
  let end = off;
  const stop = off + len;
  while (end < stop && b[end] !== 0) end++;
  return b.toString('latin1', off, end);
}

/**
 * A numeric field as Go's archive/tar reads it: base-256 when the high bit is set (GNU),
 * otherwise octal with leading/trailing spaces and NULs ignored. Anything else is refused.
 */
export function parseNumeric(b: Buffer, off: number, len: number, field: string, at: number): number {
  if (b[off]! & 0x80) {
    const negative = (b[off]! & 0x40) !== 0;
    let x = 0n;
    for (let i = 0; i < len; i++) {
      let c = b[off + i]!;
      if (negative) c ^= 0xff;
      if (i === 0) c &= 0x7f;
      x = (x << 8n) | BigInt(c);
    }
    if (x > BigInt(Number.MAX_SAFE_INTEGER)) throw bad(at, `${field} is out of range`);
    return negative ? -Number(x) - 1 : Number(x);
  }
  let s = off;
  let e = off + len;
  while (s < e && (b[s] === 0x20 || b[s] === 0)) s++;
  while (e > s && (b[e - 1] === 0x20 || b[e - 1] === 0)) e--;
  if (s === e) return 0;
  let n = 0;
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (c === 0) break; // Go parses up to the first NUL
    if (c < 0x30 || c > 0x37) throw bad(at, `${field} field is not an octal number (${JSON.stringify(b.toString('latin1', off, off + len))})`);
    n = n * 8 + (c - 0x30);
  }
  if (n > Number.MAX_SAFE_INTEGER) throw bad(at, `${field} is out of range`);
  return n;
}

const USTAR_MAGIC = Buffer.from('ustar\0', 'latin1');
const GNU_MAGIC = Buffer.from('ustar ', 'latin1');

function bytesAre(b: Buffer, off: number, want: Buffer): boolean {
  for (let i = 0; i < want.length; i++) if (b[off + i] !== want[i]) return false;
  return true;
}

function formatOf(b: Buffer, off: number): Format {
  if (bytesAre(b, off + 257, USTAR_MAGIC)) {
    return b[off + 508] === 0x74 && b[off + 509] === 0x61 && b[off + 510] === 0x72 && b[off + 511] === 0 ? 'star' : 'ustar';
  }
  if (bytesAre(b, off + 257, GNU_MAGIC) && b[off + 263] === 0x20 && b[off + 264] === 0) return 'gnu';
  return 'v7';
}

/** Checks the header checksum, accepting the signed variant some old writers produce. */
function checksumOk(b: Buffer, off: number, at: number): boolean {
  let want: number;
  try {
    want = parseNumeric(b, off + 148, 8, 'checksum', at);
  } catch {
    return false;
  }
  let unsigned = 8 * 0x20;
  for (let i = off; i < off + 148; i++) unsigned += b[i]!;
  for (let i = off + 156; i < off + BLOCK; i++) unsigned += b[i]!;
  if (want === unsigned) return true;
  let signed = 8 * 0x20;
  for (let i = off; i < off + BLOCK; i++) {
    if (i >= off + 148 && i < off + 156) continue;
    const c = b[i]!;
    signed += c > 127 ? c - 256 : c;
  }
  return want === signed;
}

/** Decodes one header block; `at` is its byte offset in the stream, for messages. */
export function decodeHeader(b: Buffer, off: number, at: number): RawHeader {
  if (!checksumOk(b, off, at)) throw bad(at, 'checksum mismatch (corrupt or not a tar archive)');
  const format = formatOf(b, off);
  const typeflag = b.toString('latin1', off + 156, off + 157);
  let name = str(b, off, 100);
  const h: RawHeader = {
    name,
    mode: parseNumeric(b, off + 100, 8, 'mode', at),
    uid: parseNumeric(b, off + 108, 8, 'uid', at),
    gid: parseNumeric(b, off + 116, 8, 'gid', at),
    size: parseNumeric(b, off + 124, 12, 'size', at),
    mtime: parseNumeric(b, off + 136, 12, 'mtime', at),
    typeflag,
    linkname: str(b, off + 157, 100),
    uname: '',
    gname: '',
    devmajor: 0,
    devminor: 0,
    format,
  };
  if (format !== 'v7') {
    h.uname = str(b, off + 265, 32);
    h.gname = str(b, off + 297, 32);
    if (typeflag === '3' || typeflag === '4') {
      h.devmajor = parseNumeric(b, off + 329, 8, 'devmajor', at);
      h.devminor = parseNumeric(b, off + 337, 8, 'devminor', at);
    }
    // GNU headers keep atime/ctime/sparse data where ustar keeps the name prefix.
    const prefix = format === 'ustar' ? str(b, off + 345, 155) : format === 'star' ? str(b, off + 345, 131) : '';
    if (prefix) name = `${prefix}/${name}`;
    h.name = name;
  }
  if (h.size < 0) throw bad(at, `negative size ${h.size}`);
  if (h.uid < 0 || h.gid < 0) throw bad(at, 'negative uid or gid');
  return h;
}

/** The old-GNU sparse map inside a type 'S' header: up to 4 (offset, length) pairs. */
export function decodeOldGnuSparse(b: Buffer, off: number, at: number, entries: number, base: number): { map: Array<[number, number]>; extended: boolean } {
  const map: Array<[number, number]> = [];
  for (let i = 0; i < entries; i++) {
    const p = off + base + i * 24;
    if (b[p] === 0) break; // GNU and BSD tar stop at the first empty slot
    map.push([parseNumeric(b, p, 12, 'sparse offset', at), parseNumeric(b, p + 12, 12, 'sparse length', at)]);
  }
  return { map, extended: b[off + base + entries * 24] !== 0 };
}

// ------------------------------------------------------------------------------------- PAX

export interface PaxRecord {
  key: string;
  value: Buffer;
}

/**
 * Parses PAX records ("<len> <key>=<value>\n") from raw bytes. Values stay bytes: xattr values
 * are binary. Any malformed record refuses the whole header, as Go's archive/tar does.
 */
export function parsePax(body: Buffer, at: number): PaxRecord[] {
  const out: PaxRecord[] = [];
  let p = 0;
  while (p < body.length) {
    const sp = body.indexOf(0x20, p);
    if (sp < 0 || sp - p > 12) throw bad(at, 'malformed PAX record (no length)');
    const lenText = body.toString('latin1', p, sp);
    if (!/^[0-9]+$/.test(lenText)) throw bad(at, `malformed PAX record length ${JSON.stringify(lenText)}`);
    const len = Number(lenText);
    const end = p + len;
    if (len < 5 || end > body.length || end <= sp + 1 || body[end - 1] !== 0x0a) throw bad(at, 'malformed PAX record (length does not match)');
    const eq = body.indexOf(0x3d, sp + 1);
    if (eq < 0 || eq >= end - 1 || eq === sp + 1) throw bad(at, 'malformed PAX record (no key)');
    const key = body.toString('latin1', sp + 1, eq);
    const value = body.subarray(eq + 1, end - 1);
    if (key.includes('\0')) throw bad(at, 'PAX key contains NUL');
    if ((key === 'path' || key === 'linkpath' || key === 'uname' || key === 'gname') && value.includes(0)) {
      throw bad(at, `PAX ${key} contains NUL`);
    }
    out.push({ key, value });
    p = end;
  }
  return out;
}

/** One PAX record; the length prefix counts itself. */
export function paxRecord(key: string, value: Buffer): Buffer {
  const rest = 3 + key.length + value.length; // ' ', '=' and '\n' around key and value
  let len = rest + String(rest).length;
  while (String(len).length + rest !== len) len = String(len).length + rest;
  const out = Buffer.allocUnsafe(len);
  let o = out.write(`${len} ${key}=`, 0, 'latin1');
  o += value.copy(out, o);
  out[o] = 0x0a;
  return out;
}

/** A decimal PAX number ("123" or "-1.5" for times); refused when malformed. */
export function paxNumber(v: Buffer, key: string, at: number, allowFraction = false): number {
  const s = v.toString('latin1', 0, v.length);
  const ok = allowFraction ? /^-?[0-9]+(\.[0-9]+)?$/.test(s) : /^[0-9]+$/.test(s);
  const n = Number(s);
  if (!ok || !Number.isFinite(n) || Math.abs(n) > Number.MAX_SAFE_INTEGER) throw bad(at, `invalid PAX ${key} ${JSON.stringify(s.slice(0, 40))}`);
  return n;
}

/** libarchive writes xattr names URL-encoded and values base64-encoded. */
export function decodeLibarchiveXattr(key: string, value: Buffer): Xattr {
  const name = key.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));
  return { name, value: Buffer.from(value.toString('latin1', 0, value.length), 'base64') };
}

// ---------------------------------------------------------------------------------- writing

/** Writes an octal field (zero-padded, NUL-terminated); false if the value does not fit. */
function octal(b: Buffer, off: number, len: number, n: number): boolean {
  const s = n.toString(8);
  if (n < 0 || !Number.isInteger(n) || s.length > len - 1) {
    b.fill(0x30, off, off + len - 1);
    b[off + len - 1] = 0;
    return false;
  }
  b.write(s.padStart(len - 1, '0'), off, 'latin1');
  b[off + len - 1] = 0;
  return true;
}

export interface HeaderFields {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
}

/**
 * Encodes a ustar header. Fields that do not fit are truncated or zeroed here; the caller puts
 * the exact values in a PAX header first (see needsPax).
 */
export function encodeHeader(f: HeaderFields): Buffer {
  const b = Buffer.allocUnsafe(BLOCK).fill(0);
  b.write(f.name.slice(0, 100), 0, 'latin1');
  octal(b, 100, 8, f.mode & 0o7777);
  octal(b, 108, 8, f.uid);
  octal(b, 116, 8, f.gid);
  octal(b, 124, 12, f.size);
  octal(b, 136, 12, Math.max(0, Math.floor(f.mtime)));
  b.write(f.typeflag, 156, 'latin1');
  if (f.linkname) b.write(f.linkname.slice(0, 100), 157, 'latin1');
  b.write('ustar\x0000', 257, 'latin1');
  if (f.uname) b.write(f.uname.slice(0, 32), 265, 'latin1');
  if (f.gname) b.write(f.gname.slice(0, 32), 297, 'latin1');
  octal(b, 329, 8, f.devmajor ?? 0);
  octal(b, 337, 8, f.devminor ?? 0);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0'), 148, 'latin1');
  b[154] = 0;
  b[155] = 0x20;
  return b;
}

const fitsOctal = (n: number, len: number) => Number.isInteger(n) && n >= 0 && n.toString(8).length <= len - 1;
// eslint-disable-next-line no-control-regex
const plainAscii = (s: string, max: number) => s.length <= max && /^[\x01-\x7f]*$/.test(s);

/** The PAX records an entry needs so that nothing is lost in the ustar fields. */
export function paxFor(f: HeaderFields & { mtimePax?: string; xattrs?: Xattr[] }): Buffer[] {
  const r: Buffer[] = [];
  const text = (k: string, v: string) => r.push(paxRecord(k, Buffer.from(v, 'latin1')));
  if (!plainAscii(f.name, 100)) text('path', f.name);
  if (f.linkname && !plainAscii(f.linkname, 100)) text('linkpath', f.linkname);
  if (!fitsOctal(f.size, 12)) text('size', String(f.size));
  if (!fitsOctal(f.uid, 8)) text('uid', String(f.uid));
  if (!fitsOctal(f.gid, 8)) text('gid', String(f.gid));
  if (f.uname && !plainAscii(f.uname, 32)) text('uname', f.uname);
  if (f.gname && !plainAscii(f.gname, 32)) text('gname', f.gname);
  if (f.mtimePax !== undefined) text('mtime', f.mtimePax);
  else if (!fitsOctal(f.mtime, 12)) text('mtime', String(f.mtime));
  for (const x of f.xattrs ?? []) r.push(paxRecord(`SCHILY.xattr.${x.name}`, x.value));
  return r;
}

export function padding(size: number): number {
  const rem = size % BLOCK;
  return rem === 0 ? 0 : BLOCK - rem;
}
