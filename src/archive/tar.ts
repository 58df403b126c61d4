import type { FileHandle } from 'node:fs/promises';
import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';

/**
 * The tar dialect image archives need: ustar headers with PAX extended headers (path, linkpath,
 * size) and GNU long names when reading; ustar plus PAX when writing. Entry bodies stream; nothing
 * is ever extracted to disk by path.
 */
export const BLOCK = 512;
/** PAX records and GNU long names larger than this are refused (catalogue A13). */
export const MAX_META_BYTES = 1 << 20;
/** Entries per archive; a docker save of 500 layers has about 1500. */
export const MAX_ENTRIES = 200_000;

export type EntryType = 'file' | 'dir' | 'symlink' | 'hardlink' | 'other';

export interface TarHeader {
  /** As written in the archive (PAX/GNU long name applied). */
  name: string;
  type: EntryType;
  size: number;
  linkname: string;
  /** Byte offset of the entry's data in the uncompressed tar. */
  offset: number;
}

function field(b: Buffer, start: number, len: number): string {
  const end = b.indexOf(0, start);
  return b.toString('utf8', start, end === -1 || end > start + len ? start + len : end);
}

function octal(b: Buffer, start: number, len: number, where: string): number {
  if (b[start]! & 0x80) {
    // GNU base-256: big-endian two's complement, high bit set.
    let v = 0;
    for (let i = start + 1; i < start + len; i++) v = v * 256 + b[i]!;
    v += (b[start]! & 0x7f) * 256 ** (len - 1);
    if (!Number.isSafeInteger(v)) throw new FerryError('INVALID_INPUT', `${where}: tar size field out of range`);
    return v;
  }
  const s = field(b, start, len).trim();
  if (s === '') return 0;
  if (!/^[0-7]+$/.test(s)) throw new FerryError('INVALID_INPUT', `${where}: invalid tar numeric field "${s}"`);
  return parseInt(s, 8);
}

function checksumOk(b: Buffer): boolean {
  let unsigned = 0;
  let signed = 0;
  for (let i = 0; i < BLOCK; i++) {
    const v = i >= 148 && i < 156 ? 32 : b[i]!;
    unsigned += v;
    signed += v > 127 ? v - 256 : v;
  }
  const stored = parseInt(field(b, 148, 8).trim() || '-1', 8);
  return stored === unsigned || stored === signed;
}

const isZero = (b: Buffer) => b.every((x) => x === 0);

/** Parses `len key=value\n` records. */
export function parsePax(data: Buffer, where: string): Map<string, string> {
  const out = new Map<string, string>();
  let i = 0;
  while (i < data.length) {
    if (data[i] === 0) break;
    const sp = data.indexOf(0x20, i);
    const len = sp > i ? Number(data.toString('latin1', i, sp)) : NaN;
    if (!Number.isInteger(len) || len <= 0 || i + len > data.length || data[i + len - 1] !== 0x0a) {
      throw new FerryError('INVALID_INPUT', `${where}: malformed PAX extended header`);
    }
    const rec = data.toString('utf8', sp + 1, i + len - 1);
    const eq = rec.indexOf('=');
    if (eq > 0) out.set(rec.slice(0, eq), rec.slice(eq + 1));
    i += len;
  }
  return out;
}

const padTo = (n: number) => (BLOCK - (n % BLOCK)) % BLOCK;

/**
 * Turns raw 512-byte blocks into entries: applies PAX (`x`, and `g` for path-less defaults) and
 * GNU `L`/`K` headers to the entry that follows, as GNU and Go tar do.
 */
class HeaderState {
  private pax?: Map<string, string>;
  private longName?: string;
  private longLink?: string;
  count = 0;

  constructor(private readonly where: string) {}

  /** Returns the entry for a real header, or the size of metadata to read first. */
  header(block: Buffer, at: number): { meta: 'x' | 'g' | 'L' | 'K'; size: number } | { entry: Omit<TarHeader, 'offset'> } {
    const where = `${this.where} (tar header at byte ${at})`;
    if (!checksumOk(block)) throw new FerryError('INVALID_INPUT', `${where}: bad tar header checksum (not a tar archive, or corrupt)`);
    const flag = String.fromCharCode(block[156]!);
    let size = octal(block, 124, 12, where);
    if (flag === 'x' || flag === 'g' || flag === 'L' || flag === 'K') {
      if (size > MAX_META_BYTES) throw new FerryError('TOO_LARGE', `${where}: tar extended header of ${size} bytes exceeds limit of ${MAX_META_BYTES}`);
      return { meta: flag, size };
    }
    if (++this.count > MAX_ENTRIES) throw new FerryError('TOO_LARGE', `${this.where}: more than ${MAX_ENTRIES} tar entries, exceeds limit`);
    let name = field(block, 0, 100);
    const magic = block.toString('latin1', 257, 263);
    if (magic.startsWith('ustar')) {
      const prefix = field(block, 345, 155);
      if (prefix && magic === 'ustar\0') name = `${prefix}/${name}`;
    }
    let linkname = field(block, 157, 100);
    if (this.longName !== undefined) name = this.longName;
    if (this.longLink !== undefined) linkname = this.longLink;
    const pax = this.pax;
    if (pax?.has('path')) name = pax.get('path')!;
    if (pax?.has('linkpath')) linkname = pax.get('linkpath')!;
    if (pax?.has('size')) {
      const s = Number(pax.get('size'));
      if (!Number.isSafeInteger(s) || s < 0) throw new FerryError('INVALID_INPUT', `${where}: invalid PAX size`);
      size = s;
    }
    this.pax = undefined;
    this.longName = undefined;
    this.longLink = undefined;
    const type: EntryType =
      flag === '0' || flag === '\0' || flag === '7' ? 'file' : flag === '5' ? 'dir' : flag === '2' ? 'symlink' : flag === '1' ? 'hardlink' : 'other';
    // Links and directories carry no data whatever their size field says (GNU and Go agree).
    if (type === 'symlink' || type === 'hardlink' || type === 'dir') size = 0;
    return { entry: { name, type, size, linkname } };
  }

  meta(kind: 'x' | 'g' | 'L' | 'K', data: Buffer, at: number): void {
    const where = `${this.where} (tar header at byte ${at})`;
    if (kind === 'x') this.pax = new Map([...(this.pax ?? []), ...parsePax(data, where)]);
    else if (kind === 'L') this.longName = field(data, 0, data.length);
    else if (kind === 'K') this.longLink = field(data, 0, data.length);
    // 'g' (global) headers set defaults for later entries; image archives do not rely on them.
  }
}

/** Pulls exact byte counts out of a chunked stream. */
class Bytes {
  private chunks: Buffer[] = [];
  private have = 0;
  private done = false;
  offset = 0;
  private readonly it: AsyncIterator<Buffer>;

  constructor(input: AsyncIterable<Buffer>, private readonly signal?: AbortSignal) {
    this.it = input[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<boolean> {
    while (this.have < n && !this.done) {
      this.signal?.throwIfAborted();
      const r = await this.it.next();
      if (r.done) this.done = true;
      else if (r.value.length) {
        this.chunks.push(r.value);
        this.have += r.value.length;
      }
    }
    return this.have >= n;
  }

  /** Exactly n bytes, or fewer at the end of the input. */
  async take(n: number): Promise<Buffer> {
    await this.fill(n);
    const want = Math.min(n, this.have);
    const out = Buffer.allocUnsafe(want);
    let got = 0;
    while (got < want) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, want - got);
      c.copy(out, got, 0, k);
      got += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    this.have -= want;
    this.offset += want;
    return out;
  }

  /** Up to `max` bytes without copying; empty at the end of the input. */
  async some(max: number): Promise<Buffer> {
    if (this.have === 0) await this.fill(1);
    if (this.have === 0) return Buffer.alloc(0);
    const c = this.chunks[0]!;
    const k = Math.min(c.length, max);
    if (k === c.length) this.chunks.shift();
    else this.chunks[0] = c.subarray(k);
    this.have -= k;
    this.offset += k;
    return c.subarray(0, k);
  }

  async atEnd(): Promise<boolean> {
    return !(await this.fill(1));
  }
}

export interface TarEntry extends TarHeader {
  /**
   * The entry's bytes (exactly `size`). Read it fully, or destroy it, before asking for the next
   * entry; an entry whose body is never requested is skipped.
   */
  body(): Readable;
}

export interface ReadTarOptions {
  /** Names the input in messages. */
  where: string;
  signal?: AbortSignal;
  /** Called with the bytes that follow the end-of-archive marker (zero padding is normal). */
  trailing?: (bytes: Buffer) => void;
}

/** Reads a tar stream entry by entry, in one pass; the body of each entry is a stream. */
export async function* readTar(input: AsyncIterable<Buffer>, o: ReadTarOptions): AsyncGenerator<TarEntry> {
  const src = new Bytes(input, o.signal);
  const state = new HeaderState(o.where);
  for (;;) {
    const at = src.offset;
    const block = await src.take(BLOCK);
    if (block.length === 0) {
      // Missing end-of-archive blocks: accepted (many writers omit them), as GNU tar does.
      return;
    }
    if (block.length < BLOCK) {
      // Less than one header in all: not an archive that was cut, but not one at all.
      if (at === 0) throw new FerryError('INVALID_INPUT', `${o.where}: not a tar archive (${block.length} bytes, less than one tar header)`);
      throw new FerryError('INTEGRITY', `${o.where}: truncated tar archive (partial header at byte ${at})`);
    }
    if (isZero(block)) {
      // End of archive. What follows must be zero padding.
      for (;;) {
        const rest = await src.some(1 << 20);
        if (rest.length === 0) return;
        o.trailing?.(rest);
        if (!isZero(rest)) {
          throw new FerryError('INTEGRITY', `${o.where}: unexpected data after the end of the tar archive (byte ${src.offset - rest.length})`, {
            hint: 'the archive was appended to or corrupted',
          });
        }
      }
    }
    const h = state.header(block, at);
    if ('meta' in h) {
      const data = await src.take(h.size + padTo(h.size));
      if (data.length < h.size) throw new FerryError('INTEGRITY', `${o.where}: truncated tar archive (in an extended header at byte ${at})`);
      state.meta(h.meta, data.subarray(0, h.size), at);
      continue;
    }
    const entry = h.entry;
    const offset = src.offset;
    let remaining = entry.size;
    let started = false;
    let finished: Promise<void> = Promise.resolve();
    const where = o.where;
    const body = (): Readable => {
      if (started) throw new Error('tar entry body requested twice');
      started = true;
      let resolveDone!: () => void;
      finished = new Promise<void>((r) => (resolveDone = r));
      async function* gen(): AsyncGenerator<Buffer> {
        try {
          while (remaining > 0) {
            const c = await src.some(Math.min(remaining, 1 << 20));
            if (c.length === 0) throw new FerryError('INTEGRITY', `${where}: truncated tar archive (entry "${entry.name}" ends early)`);
            remaining -= c.length;
            yield c;
          }
        } finally {
          resolveDone();
        }
      }
      return Readable.from(gen(), { objectMode: false, highWaterMark: 1 << 20 });
    };
    yield { ...entry, offset, body };
    if (started) await finished;
    // Whatever the consumer left, and the padding.
    let skip = remaining + padTo(entry.size);
    remaining = 0;
    while (skip > 0) {
      const c = await src.some(Math.min(skip, 1 << 20));
      if (c.length === 0) {
        if (skip > padTo(entry.size)) throw new FerryError('INTEGRITY', `${o.where}: truncated tar archive (entry "${entry.name}" ends early)`);
        return; // missing final padding: tolerated like a missing end marker
      }
      skip -= c.length;
    }
  }
}

/** Scans a plain tar file by its headers only (bodies are skipped by seeking): path -> entry. */
export async function indexTar(fh: FileHandle, where: string, signal?: AbortSignal): Promise<TarHeader[]> {
  const { size: fileSize } = await fh.stat();
  const state = new HeaderState(where);
  const out: TarHeader[] = [];
  const block = Buffer.alloc(BLOCK);
  let pos = 0;
  while (pos + BLOCK <= fileSize) {
    signal?.throwIfAborted();
    await fh.read(block, 0, BLOCK, pos);
    if (isZero(block)) break;
    const h = state.header(block, pos);
    pos += BLOCK;
    if ('meta' in h) {
      const data = Buffer.alloc(h.size);
      const { bytesRead } = await fh.read(data, 0, h.size, pos);
      if (bytesRead < h.size) throw new FerryError('INTEGRITY', `${where}: truncated tar archive (in an extended header at byte ${pos - BLOCK})`);
      state.meta(h.meta, data, pos - BLOCK);
      pos += h.size + padTo(h.size);
      continue;
    }
    if (pos + h.entry.size > fileSize) throw new FerryError('INTEGRITY', `${where}: truncated tar archive (entry "${h.entry.name}" ends early)`);
    out.push({ ...h.entry, offset: pos });
    pos += h.entry.size + padTo(h.entry.size);
  }
  if (pos === 0 && fileSize > 0 && fileSize < BLOCK) throw new FerryError('INVALID_INPUT', `${where}: not a tar archive (${fileSize} bytes, less than one tar header)`);
  if (pos + BLOCK > fileSize && pos < fileSize) throw new FerryError('INTEGRITY', `${where}: truncated tar archive (partial header at byte ${pos})`);
  return out;
}

/**
 * An archive-relative path: `./` and duplicate slashes removed. Returns undefined for a path that
 * is absolute or climbs out with `..` (never resolved against anything).
 */
export function cleanPath(name: string): string | undefined {
  if (name.startsWith('/') || name.includes('\0')) return undefined;
  const parts: string[] = [];
  for (const p of name.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') return undefined;
    parts.push(p);
  }
  return parts.length ? parts.join('/') : undefined;
}

/** Where a link entry points, as an archive path; undefined when it leaves the archive. */
export function linkTargetPath(entryPath: string, type: 'symlink' | 'hardlink', linkname: string): string | undefined {
  if (linkname.startsWith('/')) return undefined;
  const joined = type === 'symlink' ? posix.join(posix.dirname(entryPath), linkname) : posix.normalize(linkname);
  if (joined === '..' || joined.startsWith('../')) return undefined;
  return cleanPath(joined);
}

// --- writing ---

function putString(b: Buffer, s: string, start: number, len: number): void {
  b.write(s, start, len, 'utf8');
}

function putOctal(b: Buffer, v: number, start: number, len: number): void {
  b.write(v.toString(8).padStart(len - 1, '0') + '\0', start, len, 'latin1');
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const base = Buffer.byteLength(body);
  // The length counts its own digits.
  let n = base + 1;
  while (base + String(n).length !== n) n = base + String(n).length;
  return `${n}${body}`;
}

function rawHeader(name: string, size: number, type: '0' | '1' | '2' | '5' | 'x', mode: number, mtime: number, linkname = ''): Buffer {
  const b = Buffer.alloc(BLOCK);
  putString(b, name, 0, 100);
  putString(b, linkname, 157, 100);
  putOctal(b, mode, 100, 8);
  putOctal(b, 0, 108, 8);
  putOctal(b, 0, 116, 8);
  if (size < 8 ** 11) putOctal(b, size, 124, 12);
  else {
    // Base-256 for readers that ignore the PAX size record.
    b[124] = 0x80;
    let v = size;
    for (let i = 135; i > 124; i--) {
      b[i] = v % 256;
      v = Math.floor(v / 256);
    }
  }
  putOctal(b, mtime, 136, 12);
  b.write(type, 156, 1, 'latin1');
  b.write('ustar\0', 257, 6, 'latin1');
  b.write('00', 263, 2, 'latin1');
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8, 'latin1');
  return b;
}

export interface HeaderOptions {
  type?: 'file' | 'dir' | 'symlink' | 'hardlink';
  /** Target of a link. */
  linkname?: string;
  mode?: number;
  /** Seconds since the epoch; fixed by default so the same images give the same archive. */
  mtime?: number;
}

/** The header block(s) for one entry: a PAX header first when the name or size needs it. */
export function entryHeader(name: string, size: number, o: HeaderOptions = {}): Buffer {
  const type = ({ dir: '5', symlink: '2', hardlink: '1', file: '0' } as const)[o.type ?? 'file'];
  const mode = o.mode ?? (o.type === 'dir' ? 0o755 : o.type === 'symlink' ? 0o777 : 0o644);
  const mtime = o.mtime ?? 0;
  const records: string[] = [];
  let shortName = name;
  if (Buffer.byteLength(name) > 100 || /[^\x20-\x7e]/.test(name)) {
    records.push(paxRecord('path', name));
    shortName = name.slice(0, 99).replace(/[^\x20-\x7e]/g, '_');
  }
  const linkname = o.linkname ?? '';
  let shortLink = linkname;
  if (Buffer.byteLength(linkname) > 100 || /[^\x20-\x7e]/.test(linkname)) {
    records.push(paxRecord('linkpath', linkname));
    shortLink = linkname.slice(0, 99).replace(/[^\x20-\x7e]/g, '_');
  }
  if (size >= 8 ** 11) records.push(paxRecord('size', String(size)));
  const main = rawHeader(shortName, size, type, mode, mtime, shortLink);
  if (records.length === 0) return main;
  const data = Buffer.from(records.join(''));
  return Buffer.concat([rawHeader('PaxHeader', data.length, 'x', 0o644, mtime), data, Buffer.alloc(padTo(data.length)), main]);
}

/** Zero bytes that complete an entry of `size` bytes to a whole block. */
export function entryPadding(size: number): Buffer {
  return Buffer.alloc(padTo(size));
}

/** Two zero blocks end an archive. */
export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);

/** Bytes an entry of `size` takes in the archive, header (no PAX) and padding included. */
export function entryBytes(name: string, size: number): number {
  return entryHeader(name, 0).length + size + padTo(size) + (size >= 8 ** 11 ? 2 * BLOCK : 0);
}
