import type { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import {
  BLOCK,
  decodeHeader,
  decodeLibarchiveXattr,
  decodeOldGnuSparse,
  display,
  isZeroBlock,
  MAX_SPECIAL_BYTES,
  padding,
  parseNumeric,
  parsePax,
  paxNumber,
  type PaxRecord,
  type Xattr,
} from './tar-format.js';

export type EntryType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

/** One archive member after PAX / GNU extensions are applied. Names are binary strings. */
export interface TarEntry {
  name: string;
  type: EntryType;
  mode: number;
  uid: number;
  gid: number;
  /** Bytes of content delivered through `data` (a sparse file's full, expanded size). */
  size: number;
  mtime: number;
  /** The PAX mtime text when it carries more than whole seconds. */
  mtimePax?: string;
  linkname: string;
  uname: string;
  gname: string;
  devmajor: number;
  devminor: number;
  xattrs?: Xattr[];
  /** Byte offset of the entry's header in the (uncompressed) stream. */
  offset: number;
  /** Index of the entry among the archive's real members (extension headers not counted). */
  ordinal: number;
}

/** Callbacks may return a promise; the parser waits for it before consuming more input. */
export interface TarHandler {
  entry(e: TarEntry): void | Promise<void>;
  data?(chunk: Buffer, e: TarEntry): void | Promise<void>;
  entryEnd?(e: TarEntry): void | Promise<void>;
}

const TYPES: Record<string, EntryType> = {
  '0': 'file',
  '\0': 'file',
  '7': 'file',
  S: 'file',
  '1': 'hardlink',
  '2': 'symlink',
  '3': 'char',
  '4': 'block',
  '5': 'dir',
  '6': 'fifo',
};

type State = 'header' | 'special' | 'data' | 'sparse-ext' | 'sparse-map' | 'sparse' | 'entry-end' | 'skip' | 'zero' | 'end';

interface Special {
  kind: 'x' | 'g' | 'L' | 'K';
  buf: Buffer;
  have: number;
  at: number;
}

interface Sparse {
  map: Array<[number, number]>;
  realsize: number;
  logical: number;
  i: number;
  /** Bytes of the 1.0 map text collected so far (format 1.0 only). */
  text?: Buffer[];
  textBytes?: number;
}

const NEED_INPUT = Symbol('need-input');
const ZEROS = Buffer.alloc(1 << 16);
const MAX_SPARSE_SEGMENTS = 1 << 16;

const invalid = (at: number, what: string) => new FerryError('INVALID_INPUT', `invalid tar archive at byte ${at}: ${what}`);

/**
 * A streaming tar parser: feed it chunks with write(), call end() at the end of input. It reads
 * ustar, PAX (per-entry; global headers are read and ignored, as Go's archive/tar and Docker do),
 * GNU long names/links and GNU sparse files (old format, PAX 0.0/0.1/1.0; holes are expanded).
 * Extension headers apply to the next real member only; their own size is the one in their
 * header (a PAX `size` never resizes a GNU long-name block: CVE-2026-53655). Ambiguous input a
 * different reader could see differently (two PAX headers for one member; both a PAX path and a
 * GNU long name) is refused. Member content is handed over as slices of the input, never copied.
 */
export class TarParser {
  private buf: Buffer = ZEROS.subarray(0, 0);
  private pos = 0;
  private offset = 0;
  private state: State = 'header';
  private readonly hdr = Buffer.alloc(BLOCK);
  private hdrHave = 0;
  private special?: Special;
  private pax?: PaxRecord[];
  private longName?: string;
  private longLink?: string;
  private current?: TarEntry;
  private remaining = 0;
  private stored = 0;
  private skipLeft = 0;
  private sparse?: Sparse;
  private ordinal = 0;
  private ended = false;
  private content = 0;

  /**
   * `maxContent`: the most file content the archive may hold once sparse files are expanded, so
   * that a few hundred bytes of sparse map cannot stand for a terabyte of zeros.
   */
  constructor(
    private readonly handler: TarHandler,
    private readonly o: { maxContent?: number; where?: string } = {},
  ) {}

  /** Bytes consumed so far. */
  get position(): number {
    return this.offset;
  }

  /** True once the end-of-archive marker was read. */
  get finished(): boolean {
    return this.state === 'end';
  }

  /** Consumes a chunk. Returns a promise when a callback is pending; do not write again before it settles. */
  write(chunk: Buffer): Promise<void> | undefined {
    this.buf = chunk;
    this.pos = 0;
    for (;;) {
      const r = this.step();
      if (r === NEED_INPUT) return undefined;
      if (r !== undefined) return r.then(() => this.drain());
    }
  }

  private async drain(): Promise<void> {
    for (;;) {
      const r = this.step();
      if (r === NEED_INPUT) return;
      if (r !== undefined) await r;
    }
  }

  /** Call at the end of input: a stream cut inside a member is an error. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    const clean = (this.state === 'header' || this.state === 'zero') && this.hdrHave === 0 && !this.pax && !this.longName && !this.longLink;
    if (clean || this.state === 'end') return;
    const what = this.current ? `inside ${display(this.current.name)}` : 'inside a header';
    throw invalid(this.offset, `unexpected end of archive ${what} (truncated)`);
  }

  private avail(): number {
    return this.buf.length - this.pos;
  }

  private take(n: number): Buffer {
    const out = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    this.offset += n;
    return out;
  }

  /** Reads one 512-byte block, from the chunk when it is all there, else assembled. */
  private block(): { b: Buffer; off: number; at: number } | undefined {
    if (this.hdrHave === 0 && this.avail() >= BLOCK) {
      const off = this.pos;
      this.take(BLOCK);
      return { b: this.buf, off, at: this.offset - BLOCK };
    }
    const n = Math.min(BLOCK - this.hdrHave, this.avail());
    this.buf.copy(this.hdr, this.hdrHave, this.pos, this.pos + n);
    this.take(n);
    this.hdrHave += n;
    if (this.hdrHave < BLOCK) return undefined;
    this.hdrHave = 0;
    return { b: this.hdr, off: 0, at: this.offset - BLOCK };
  }

  private step(): Promise<void> | typeof NEED_INPUT | undefined {
    switch (this.state) {
      case 'header': {
        if (this.avail() === 0) return NEED_INPUT;
        const blk = this.block();
        if (!blk) return NEED_INPUT;
        return this.onHeader(blk.b, blk.off, blk.at);
      }
      case 'zero': {
        if (this.avail() === 0) return NEED_INPUT;
        const blk = this.block();
        if (!blk) return NEED_INPUT;
        if (!isZeroBlock(blk.b, blk.off)) throw invalid(blk.at, 'a zero block followed by data (corrupt archive)');
        this.state = 'end';
        return undefined;
      }
      case 'end':
        // Anything after the end-of-archive marker is ignored, as every tar reader does.
        this.offset += this.avail();
        this.pos = this.buf.length;
        return NEED_INPUT;
      case 'skip': {
        if (this.skipLeft > 0) {
          if (this.avail() === 0) return NEED_INPUT;
          const n = Math.min(this.skipLeft, this.avail());
          this.take(n);
          this.skipLeft -= n;
          if (this.skipLeft > 0) return NEED_INPUT;
        }
        this.state = 'header';
        return undefined;
      }
      case 'special': {
        const s = this.special!;
        if (this.remaining > 0) {
          if (this.avail() === 0) return NEED_INPUT;
          const n = Math.min(this.remaining, this.avail());
          this.buf.copy(s.buf, s.have, this.pos, this.pos + n);
          this.take(n);
          s.have += n;
          this.remaining -= n;
          if (this.remaining > 0) return NEED_INPUT;
        }
        this.onSpecial(s);
        this.special = undefined;
        this.skipTo(padding(s.buf.length));
        return undefined;
      }
      case 'data': {
        if (this.avail() === 0) return NEED_INPUT;
        const n = Math.min(this.remaining, this.avail());
        const chunk = this.take(n);
        this.remaining -= n;
        if (this.remaining === 0) this.state = 'entry-end';
        return this.handler.data?.(chunk, this.current!) ?? undefined;
      }
      case 'entry-end': {
        const e = this.current!;
        this.current = undefined;
        this.skipTo(padding(this.stored));
        return this.handler.entryEnd?.(e) ?? undefined;
      }
      case 'sparse-ext': {
        if (this.avail() === 0) return NEED_INPUT;
        const blk = this.block();
        if (!blk) return NEED_INPUT;
        const { map, extended } = decodeOldGnuSparse(blk.b, blk.off, blk.at, 21, 0);
        this.addSegments(map, blk.at);
        if (!extended) this.startSparseData();
        return undefined;
      }
      case 'sparse-map':
        return this.readSparseMap();
      case 'sparse':
        return this.sparseStep();
    }
  }

  private skipTo(n: number): void {
    this.skipLeft = n;
    this.state = 'skip';
  }

  private onHeader(b: Buffer, off: number, at: number): Promise<void> | undefined {
    if (isZeroBlock(b, off)) {
      this.state = 'zero';
      return undefined;
    }
    const raw = decodeHeader(b, off, at);
    const t = raw.typeflag;
    if (t === 'x' || t === 'g' || t === 'L' || t === 'K') {
      if (raw.size > MAX_SPECIAL_BYTES) {
        const what = t === 'L' || t === 'K' ? 'GNU long name' : 'PAX header';
        throw new FerryError('TOO_LARGE', `invalid tar archive at byte ${at}: ${what} of ${raw.size} bytes exceeds limit of ${MAX_SPECIAL_BYTES} bytes`);
      }
      if ((t === 'x' && this.pax) || (t === 'L' && this.longName !== undefined) || (t === 'K' && this.longLink !== undefined)) {
        throw invalid(at, `two '${t}' extension headers for one member (ambiguous; refused)`);
      }
      this.special = { kind: t, buf: Buffer.alloc(raw.size), have: 0, at };
      this.remaining = raw.size;
      this.state = 'special';
      return undefined;
    }
    return this.onMember(raw, b, off, at);
  }

  private onSpecial(s: Special): void {
    if (s.kind === 'g') return; // read and ignored (Go's archive/tar and Docker do the same)
    if (s.kind === 'x') {
      this.pax = parsePax(s.buf, s.at);
      return;
    }
    const end = s.buf.indexOf(0);
    const text = s.buf.toString('latin1', 0, end < 0 ? s.buf.length : end);
    if (s.kind === 'L') this.longName = text;
    else this.longLink = text;
  }

  private onMember(raw: ReturnType<typeof decodeHeader>, b: Buffer, off: number, at: number): Promise<void> | undefined {
    const pax = this.pax ?? [];
    this.pax = undefined;
    const e: TarEntry = {
      name: raw.name,
      type: 'file',
      mode: raw.mode,
      uid: raw.uid,
      gid: raw.gid,
      size: raw.size,
      mtime: raw.mtime,
      linkname: raw.linkname,
      uname: raw.uname,
      gname: raw.gname,
      devmajor: raw.devmajor,
      devminor: raw.devminor,
      offset: at,
      ordinal: this.ordinal++,
    };
    let paxPath = false;
    let paxLink = false;
    const xattrs = new Map<string, Buffer>();
    const libarchive = new Map<string, Buffer>();
    const sparseKeys = new Map<string, string>();
    const sparsePairs: string[] = [];
    for (const { key, value } of pax) {
      if (value.length === 0 && !key.startsWith('SCHILY.xattr.')) continue; // an empty value unsets the key
      switch (key) {
        case 'path':
          e.name = value.toString('latin1', 0, value.length);
          paxPath = true;
          break;
        case 'linkpath':
          e.linkname = value.toString('latin1', 0, value.length);
          paxLink = true;
          break;
        case 'size':
          e.size = paxNumber(value, key, at);
          break;
        case 'uid':
          e.uid = paxNumber(value, key, at);
          break;
        case 'gid':
          e.gid = paxNumber(value, key, at);
          break;
        case 'uname':
          e.uname = value.toString('latin1', 0, value.length);
          break;
        case 'gname':
          e.gname = value.toString('latin1', 0, value.length);
          break;
        case 'mtime': {
          const n = paxNumber(value, key, at, true);
          e.mtime = Math.floor(n);
          if (!Number.isInteger(n)) e.mtimePax = value.toString('latin1', 0, value.length);
          break;
        }
        case 'GNU.sparse.offset':
        case 'GNU.sparse.numbytes':
          if ((sparsePairs.length % 2 === 0) !== (key === 'GNU.sparse.offset')) throw invalid(at, 'GNU sparse 0.0 records out of order');
          sparsePairs.push(value.toString('latin1', 0, value.length));
          break;
        default:
          if (key.startsWith('SCHILY.xattr.')) xattrs.set(key.slice(13), Buffer.from(value));
          else if (key.startsWith('LIBARCHIVE.xattr.')) {
            const x = decodeLibarchiveXattr(key.slice(17), value);
            libarchive.set(x.name, x.value);
          } else if (key.startsWith('GNU.sparse.')) sparseKeys.set(key.slice(11), value.toString('latin1', 0, value.length));
      }
    }
    for (const [name, value] of libarchive) {
      const schily = xattrs.get(name);
      if (schily && !schily.equals(value)) throw invalid(at, `xattr ${display(name)} has two different values (SCHILY and LIBARCHIVE records)`);
      xattrs.set(name, value);
    }
    if (xattrs.size > 0) e.xattrs = [...xattrs].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([name, value]) => ({ name, value }));
    if (this.longName !== undefined) {
      if (paxPath) throw invalid(at, 'member has both a PAX path and a GNU long name (ambiguous; refused)');
      e.name = this.longName;
      this.longName = undefined;
    }
    if (this.longLink !== undefined) {
      if (paxLink) throw invalid(at, 'member has both a PAX linkpath and a GNU long link name (ambiguous; refused)');
      e.linkname = this.longLink;
      this.longLink = undefined;
    }

    const type = TYPES[raw.typeflag];
    if (!type) {
      throw invalid(at, `member ${display(e.name)} has unsupported type ${JSON.stringify(raw.typeflag)}`);
    }
    e.type = raw.typeflag === '\0' && e.name.endsWith('/') ? 'dir' : type;
    this.current = e;
    this.stored = e.size;
    // Go's archive/tar: links, directories, devices and FIFOs carry no data whatever `size` says.
    if (e.type !== 'file') {
      this.stored = 0;
      e.size = 0;
    }

    // GNU sparse files: the stored data is the non-hole segments; `size` becomes the real size.
    if (raw.typeflag === 'S' && raw.format === 'gnu') {
      const { map, extended } = decodeOldGnuSparse(b, off, at, 4, 386);
      e.size = parseNumeric(b, off + 483, 12, 'sparse realsize', at);
      this.sparse = { map: [], realsize: e.size, logical: 0, i: 0 };
      this.addSegments(map, at);
      this.remaining = this.stored;
      this.state = extended ? 'sparse-ext' : 'sparse';
      if (!extended) this.startSparseData();
    } else if (sparsePairs.length > 0 || sparseKeys.size > 0) {
      this.paxSparse(e, sparseKeys, sparsePairs, at);
    } else {
      this.remaining = this.stored;
      this.state = this.stored > 0 ? 'data' : 'entry-end';
    }
    this.content += e.size;
    if (this.o.maxContent !== undefined && this.content > this.o.maxContent) {
      throw new FerryError('TOO_LARGE', `${this.o.where ?? 'tar archive'}: its files hold more than ${this.o.maxContent} bytes once sparse files are expanded (${display(e.name)} at byte ${at}; a decompression bomb?)`, {
        hint: 'if the layer is genuine, raise the limit with FERRY_MAX_LAYER_BYTES',
      });
    }
    return this.handler.entry(e) ?? undefined;
  }

  private paxSparse(e: TarEntry, keys: Map<string, string>, pairs: string[], at: number): void {
    const major = keys.get('major');
    const minor = keys.get('minor');
    let v1 = false;
    if (major === '1' && minor === '0') v1 = true;
    else if (major === '0' && (minor === '0' || minor === '1')) v1 = false;
    else if (major !== undefined || minor !== undefined) throw invalid(at, `unsupported GNU sparse format ${major}.${minor}`);
    else if (!keys.has('map') && pairs.length === 0) {
      this.remaining = this.stored;
      this.state = this.stored > 0 ? 'data' : 'entry-end';
      return;
    }
    if (e.type !== 'file') throw invalid(at, `GNU sparse records on ${display(e.name)}, which is not a regular file`);
    const name = keys.get('name');
    if (name) e.name = name;
    const real = keys.get('size') ?? keys.get('realsize');
    if (real !== undefined) e.size = paxNumber(Buffer.from(real, 'latin1'), 'GNU.sparse.size', at);
    this.sparse = { map: [], realsize: e.size, logical: 0, i: 0 };
    this.remaining = this.stored;
    if (v1) {
      this.sparse.text = [];
      this.sparse.textBytes = 0;
      this.state = 'sparse-map';
      return;
    }
    const flat = pairs.length > 0 ? pairs : (keys.get('map') ?? '').split(',').filter((x) => x !== '');
    if (flat.length % 2 !== 0) throw invalid(at, 'GNU sparse map has an odd number of values');
    const map: Array<[number, number]> = [];
    for (let i = 0; i < flat.length; i += 2) {
      map.push([paxNumber(Buffer.from(flat[i]!, 'latin1'), 'sparse offset', at), paxNumber(Buffer.from(flat[i + 1]!, 'latin1'), 'sparse length', at)]);
    }
    this.addSegments(map, at);
    this.startSparseData();
  }

  private addSegments(map: Array<[number, number]>, at: number): void {
    const s = this.sparse!;
    for (const seg of map) s.map.push(seg);
    if (s.map.length > MAX_SPARSE_SEGMENTS) throw new FerryError('TOO_LARGE', `invalid tar archive at byte ${at}: sparse map exceeds limit of ${MAX_SPARSE_SEGMENTS} segments`);
  }

  /** Validates the sparse map against the sizes (as Go does), then streams segments and holes. */
  private startSparseData(): void {
    const s = this.sparse!;
    const e = this.current!;
    let end = 0;
    let sum = 0;
    for (const [o, l] of s.map) {
      if (o < end || o + l > s.realsize) throw invalid(e.offset, `sparse map of ${display(e.name)} is out of order or beyond the file size`);
      end = o + l;
      sum += l;
    }
    if (sum !== this.remaining) {
      throw invalid(e.offset, `sparse map of ${display(e.name)} describes ${sum} bytes but ${this.remaining} are stored`);
    }
    this.state = 'sparse';
  }

  /** Format 1.0: the map is decimal text at the start of the data, padded to a block. */
  private readSparseMap(): typeof NEED_INPUT | undefined {
    const s = this.sparse!;
    const e = this.current!;
    if (this.remaining < BLOCK) throw invalid(this.offset, `sparse map of ${display(e.name)} is truncated`);
    if (this.avail() === 0) return NEED_INPUT;
    const blk = this.block();
    if (!blk) return NEED_INPUT;
    this.remaining -= BLOCK;
    s.text!.push(Buffer.from(blk.b.subarray(blk.off, blk.off + BLOCK)));
    s.textBytes! += BLOCK;
    if (s.textBytes! > MAX_SPECIAL_BYTES) throw new FerryError('TOO_LARGE', `sparse map of ${display(e.name)} exceeds limit of ${MAX_SPECIAL_BYTES} bytes`);
    const text = Buffer.concat(s.text!).toString('latin1');
    const parts = text.split('\n');
    const count = parts.length > 1 ? Number(parts[0]) : NaN;
    if (parts.length > 1 && (!/^[0-9]+$/.test(parts[0]!) || count > MAX_SPARSE_SEGMENTS)) throw invalid(e.offset, `bad sparse map in ${display(e.name)}`);
    if (parts.length - 1 < 1 + 2 * count || Number.isNaN(count)) return undefined; // need more blocks
    const map: Array<[number, number]> = [];
    for (let i = 0; i < count; i++) {
      const o = parts[1 + 2 * i]!;
      const l = parts[2 + 2 * i]!;
      if (!/^[0-9]+$/.test(o) || !/^[0-9]+$/.test(l)) throw invalid(e.offset, `bad sparse map in ${display(e.name)}`);
      map.push([Number(o), Number(l)]);
    }
    s.text = undefined;
    this.addSegments(map, e.offset);
    this.startSparseData();
    return undefined;
  }

  private sparseStep(): Promise<void> | typeof NEED_INPUT | undefined {
    const s = this.sparse!;
    const e = this.current!;
    const seg = s.map[s.i];
    const holeEnd = seg ? seg[0] : s.realsize;
    if (s.logical < holeEnd) {
      const n = Math.min(holeEnd - s.logical, ZEROS.length);
      s.logical += n;
      return this.handler.data?.(ZEROS.subarray(0, n), e) ?? undefined;
    }
    if (!seg) {
      this.sparse = undefined;
      this.state = 'entry-end';
      return undefined;
    }
    const left = seg[0] + seg[1] - s.logical;
    if (left === 0) {
      s.i++;
      return undefined;
    }
    if (this.avail() === 0) return NEED_INPUT;
    const n = Math.min(left, this.avail());
    const chunk = this.take(n);
    s.logical += n;
    this.remaining -= n;
    return this.handler.data?.(chunk, e) ?? undefined;
  }
}

/** Runs a parser over a whole stream; `onChunk` sees every byte first (hashing, counting). */
export async function parseTarStream(stream: Readable, handler: TarHandler, onChunk?: (chunk: Buffer) => void): Promise<TarParser> {
  const parser = new TarParser(handler);
  for await (const chunk of stream) {
    onChunk?.(chunk as Buffer);
    const p = parser.write(chunk as Buffer);
    if (p) await p;
  }
  parser.end();
  return parser;
}
