import { Transform, type TransformCallback } from 'node:stream';
import type * as Zlib from 'node:zlib';
import { FerryError } from '../errors.js';
import { zlib } from '../util/builtins.js';

/** 2^27 = 128 MiB, zstd's default maximum; a frame asking for more is refused before allocation. */
export const ZSTD_MAX_WINDOW_LOG = 27;

const MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE = 0x184d2a50;

/** A frame header with only a Window_Descriptor: no single segment, checksum, dictionary or content size. */
export function zstdFrameHeader(windowDescriptor: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt32LE(MAGIC, 0);
  b[5] = windowDescriptor;
  return b;
}

/** A Block_Header (RFC 8878 §3.1.1.2) for a raw block of `size` bytes. */
export function zstdRawBlockHeader(size: number, last: boolean): Buffer {
  const h = (size << 3) | (last ? 1 : 0);
  return Buffer.from([h & 0xff, (h >> 8) & 0xff, (h >> 16) & 0xff]);
}

type State = 'magic' | 'fhd' | 'header' | 'block-header' | 'block' | 'checksum' | 'skip-size' | 'skip';

/** zstd's largest block, and the window up to which a frame of raw blocks is passed through. */
const BLOCK_MAX = 128 << 10;

export interface FrameRun {
  bytes: Buffer;
  /** First bytes of a new frame. */
  start: boolean;
  /** Last bytes of the current frame. */
  end: boolean;
  /** What the bytes are: frame header (magic included), block header, block body, checksum. */
  kind: 'header' | 'block-header' | 'block' | 'checksum';
  /** The frame's header, on every run after it (the walker may already be in the next frame). */
  frame?: FrameHeader;
  /** On a block's runs, and on the run that completes its header: type (0 raw, 1 RLE, 2 compressed) and Block_Size. */
  block?: { type: number; size: number };
}

/** What a frame's header says (RFC 8878 §3.1.1.1). */
export interface FrameHeader {
  singleSegment: boolean;
  checksum: boolean;
  dictionary: boolean;
  /** Window_Size, or the content size for a single-segment frame. */
  window: number;
  /** The Window_Descriptor byte (0 for a single-segment frame). */
  descriptor: number;
  contentSize?: number;
}

/**
 * Walks zstd framing (RFC 8878 §3.1) without decoding: reports each frame's bytes in runs by
 * kind (header, block header, block body, checksum) with where frames start and end, drops
 * skippable frames, and rejects bytes that are not a frame (trailing garbage).
 */
export class ZstdFrameWalker {
  private state: State = 'magic';
  private need = 4;
  private readonly head = Buffer.alloc(14);
  private have = 0;
  private lastBlock = false;
  private frames = 0;
  private frame?: FrameHeader;
  private block = { type: 0, size: 0 };

  /** True when the data seen so far ends exactly at a frame boundary. */
  get betweenFrames(): boolean {
    return this.state === 'magic' && this.have === 0 && this.frames > 0;
  }

  feed(chunk: Buffer): FrameRun[] {
    const out: FrameRun[] = [];
    let i = 0;
    while (i < chunk.length) {
      const st = this.state;
      if (st === 'skip') {
        const n = Math.min(this.need, chunk.length - i);
        i += n;
        this.need -= n;
        if (this.need === 0) this.go('magic', 4);
        continue;
      }
      if (st === 'block') {
        const n = Math.min(this.need, chunk.length - i);
        out.push({ bytes: chunk.subarray(i, i + n), start: false, end: false, kind: 'block', frame: this.frame, block: this.block });
        i += n;
        this.need -= n;
        if (this.need === 0 && this.afterBlock()) out.at(-1)!.end = true;
        continue;
      }
      // A fixed-size field: gather it (it may straddle chunks), then act on it.
      const from = i;
      const n = Math.min(this.need - this.have, chunk.length - i);
      chunk.copy(this.head, this.have, i, i + n);
      this.have += n;
      i += n;
      const inFrame = st !== 'magic' && st !== 'skip-size';
      if (inFrame) out.push({ bytes: chunk.subarray(from, i), start: false, end: false, kind: st === 'block-header' ? 'block-header' : st === 'checksum' ? 'checksum' : 'header', frame: this.frame });
      if (this.have < this.need) continue;
      const field = this.head.subarray(0, this.need);
      this.have = 0;
      if (st === 'magic') {
        const m = field.readUInt32LE(0);
        if (m === MAGIC) {
          // Handed over as a run of its own: it may have come in pieces.
          out.push({ bytes: Buffer.from(field), start: true, end: false, kind: 'header' });
          this.frames++;
          this.frame = undefined;
          this.go('fhd', 1);
        } else if ((m & SKIPPABLE_MASK) >>> 0 === SKIPPABLE) {
          this.go('skip-size', 4);
        } else {
          throw new FerryError('INTEGRITY', this.frames === 0 ? 'not a zstd stream' : `trailing garbage after zstd frame ${this.frames}`);
        }
      } else if (st === 'skip-size') {
        const size = field.readUInt32LE(0);
        if (size > 0) this.go('skip', size);
        else this.go('magic', 4);
      } else {
        const ended = this.advance(st, field);
        if (st === 'block-header') out.at(-1)!.block = this.block;
        if (ended) out.at(-1)!.end = true;
      }
    }
    return out;
  }

  /** Acts on a complete field of the current frame; true at the end of the frame. */
  private advance(st: State, field: Buffer): boolean {
    switch (st) {
      case 'fhd': {
        const fhd = field[0]!;
        if (fhd & 0x08) throw new FerryError('INTEGRITY', 'corrupt zstd frame header (reserved bit set)');
        const single = (fhd >> 5) & 1;
        this.head[0] = fhd; // kept for parsing the rest of the header
        const rest = (single ? 0 : 1) + [0, 1, 2, 4][fhd & 3]! + [single, 2, 4, 8][fhd >> 6]!;
        if (rest === 0) {
          this.parseHeader(Buffer.from([fhd]));
          return this.go('block-header', 3);
        }
        this.have = 1;
        return this.go('header', rest + 1);
      }
      case 'header':
        this.parseHeader(field);
        return this.go('block-header', 3);
      case 'block-header': {
        const h = field[0]! | (field[1]! << 8) | (field[2]! << 16);
        const type = (h >> 1) & 3;
        if (type === 3) throw new FerryError('INTEGRITY', 'corrupt zstd block (reserved block type)');
        this.lastBlock = (h & 1) === 1;
        this.block = { type, size: h >>> 3 };
        const body = type === 1 ? 1 : this.block.size;
        return body > 0 ? this.go('block', body) : this.afterBlock();
      }
      case 'checksum':
        this.go('magic', 4);
        return true;
      default:
        return false;
    }
  }

  /** Reads Frame_Header_Descriptor and what follows it; `h` starts with the descriptor. */
  private parseHeader(h: Buffer): void {
    const fhd = h[0]!;
    const single = ((fhd >> 5) & 1) === 1;
    const didLen = [0, 1, 2, 4][fhd & 3]!;
    const fcsLen = [single ? 1 : 0, 2, 4, 8][fhd >> 6]!;
    let at = 1;
    let window = 0;
    let wd = 0;
    if (!single) {
      wd = h[at++]!;
      const log = 10 + (wd >> 3);
      window = 2 ** log + (2 ** log / 8) * (wd & 7);
    }
    at += didLen;
    let contentSize: number | undefined;
    if (fcsLen === 1) contentSize = h[at]!;
    else if (fcsLen === 2) contentSize = h.readUInt16LE(at) + 256;
    else if (fcsLen === 4) contentSize = h.readUInt32LE(at);
    else if (fcsLen === 8) contentSize = Number(h.readBigUInt64LE(at));
    this.frame = { singleSegment: single, checksum: ((fhd >> 2) & 1) === 1, dictionary: didLen > 0, window: single ? (contentSize ?? 0) : window, descriptor: wd, contentSize };
  }

  private go(state: State, need: number): false {
    this.state = state;
    this.need = need;
    return false;
  }

  private afterBlock(): boolean {
    if (!this.lastBlock) return this.go('block-header', 3);
    if (this.frame?.checksum) return this.go('checksum', 4);
    this.go('magic', 4);
    return true;
  }
}

/**
 * zstd decoding that handles what node:zlib's stream does not: several frames (it stops after the
 * first), skippable frames, and trailing garbage (which it ignores silently). Each frame goes to a
 * fresh decoder; output respects backpressure, so memory stays flat whatever the ratio.
 *
 * A frame of raw blocks (what ferry writes for layers that are compressed already) needs no
 * decoder: its blocks are passed on as they are. That holds while a frame has no checksum (XXH64,
 * which node lacks), no dictionary and a window of at most one block; if such a frame turns out to
 * hold a compressed block after all, a decoder takes over, first given the window it may refer to.
 */
export class ZstdDecompress extends Transform {
  private readonly walker = new ZstdFrameWalker();
  private dec?: Zlib.ZstdDecompress;
  private decError?: unknown;
  private wakeReader?: () => void;
  /** The current frame is passed through (raw and RLE blocks so far), not decoded. */
  private passing = false;
  /** Header bytes of the current frame, until its first block says which way it goes. */
  private header: Buffer[] = [];
  /** Block-header bytes in pass mode, until the block's type is known. */
  private blockHead: Buffer[] = [];
  /** The last bytes passed on in this frame (at most a window), in case a decoder takes over. */
  private recent: Buffer[] = [];
  private recentBytes = 0;
  /** Content bytes of the current frame passed on (checked against Frame_Content_Size). */
  private frameBytes = 0;
  /** Raw block bytes taken from the current input chunk, not pushed yet. */
  private out: Buffer[] = [];
  /** Decoder output to drop: the window it was given again when it took over. */
  private skip = 0;
  private frame?: FrameHeader;

  constructor() {
    // Small queues: a chunk that waits in them outlives two minor GCs and needs a major to go
    // (a 180 MB .tar.zst load: 1 MiB each way peaked at 102-110 MiB, these at 96-97).
    super({ writableHighWaterMark: 16 << 10, readableHighWaterMark: 64 << 10 });
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.process(chunk).then(() => cb(), (e: unknown) => cb(asIntegrity(e) as Error));
  }

  override _flush(cb: TransformCallback): void {
    if (!this.walker.betweenFrames || this.dec || this.passing) cb(new FerryError('INTEGRITY', 'truncated zstd stream (unexpected end of data)'));
    else cb();
  }

  override _read(size: number): void {
    const wake = this.wakeReader;
    this.wakeReader = undefined;
    wake?.();
    super._read(size);
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.dec?.destroy();
    const wake = this.wakeReader;
    this.wakeReader = undefined;
    wake?.();
    cb(err);
  }

  private async process(chunk: Buffer): Promise<void> {
    for (const run of this.walker.feed(chunk)) {
      if (run.start) {
        this.header = [];
        this.passing = false;
        this.frameBytes = 0;
      }
      if (run.kind === 'header') {
        this.header.push(run.bytes);
      } else if (!this.dec && !this.passing) {
        // The header is complete: choose how this frame is read.
        const f = run.frame!;
        if (!f.checksum && !f.dictionary && !f.singleSegment && f.window <= BLOCK_MAX) {
          this.passing = true;
          this.frame = f;
          this.recent = [];
          this.recentBytes = 0;
          this.blockHead = [];
        } else {
          this.startDecoder();
          await this.pump(Buffer.concat(this.header));
        }
      }
      if (run.kind !== 'header') {
        if (this.passing) await this.pass(run);
        else await this.pump(run.bytes);
      }
      if (run.end) await this.endFrame(run.frame?.contentSize);
    }
    await this.flushOut();
  }

  /** Pushes what pass mode took from this input chunk (pieces of it, not copies). */
  private async flushOut(): Promise<void> {
    if (this.out.length === 0) return;
    const parts = this.out;
    this.out = [];
    let room = true;
    for (const p of parts) room = this.push(p);
    if (!room) await new Promise<void>((r) => (this.wakeReader = r));
  }

  private startDecoder(): void {
    const dec = zlib().createZstdDecompress({ chunkSize: 1 << 17, params: { [zlib().constants.ZSTD_d_windowLogMax]: ZSTD_MAX_WINDOW_LOG } });
    dec.on('error', (e) => (this.decError ??= e));
    this.dec = dec;
  }

  /** A run of a frame read without a decoder. */
  private async pass(run: FrameRun): Promise<void> {
    if (run.kind === 'block-header') {
      this.blockHead.push(run.bytes);
      // The run that completes a block header carries the block's type and size.
      const b = run.block;
      if (!b) return;
      if (b.type === 2) return this.takeOver();
      if (b.size > this.frame!.window) throw new FerryError('INTEGRITY', `corrupt zstd block (${b.size} bytes, more than the frame's ${this.frame!.window}-byte window)`);
      this.blockHead = [];
      return;
    }
    if (run.kind !== 'block') throw new FerryError('INTERNAL', `zstd: unexpected ${run.kind} in a frame without checksum`);
    this.passOn(run.block!.type === 1 ? Buffer.alloc(run.block!.size, run.bytes[0]!) : run.bytes);
  }

  /** A compressed block in a frame being passed through: a decoder goes on from here. */
  private async takeOver(): Promise<void> {
    this.startDecoder();
    this.passing = false;
    const seen = Buffer.concat(this.recent);
    const history = seen.subarray(seen.length - Math.min(seen.length, this.frame!.window));
    // The frame again, with no content size: the window as one raw block, then this block.
    const parts = [zstdFrameHeader(this.frame!.descriptor)];
    if (history.length > 0) parts.push(zstdRawBlockHeader(history.length, false), history);
    this.skip = history.length;
    this.recent = [];
    await this.pump(Buffer.concat([...parts, ...this.blockHead]));
    this.blockHead = [];
  }

  /** Passes bytes on, keeping the last window's worth in case a decoder must take over. */
  private passOn(b: Buffer): void {
    this.frameBytes += b.length;
    this.recent.push(b);
    this.recentBytes += b.length;
    while (this.recentBytes - this.recent[0]!.length >= this.frame!.window) this.recentBytes -= this.recent.shift()!.length;
    this.out.push(b);
  }

  private async endFrame(size: number | undefined): Promise<void> {
    if (this.dec) {
      await this.pump(null);
      this.dec = undefined;
    }
    if (size !== undefined && this.frameBytes !== size) throw new FerryError('INTEGRITY', `corrupt zstd frame (${this.frameBytes} bytes of content, its header says ${size})`);
    this.passing = false;
    this.recent = [];
    this.recentBytes = 0;
  }

  /** Writes `bytes` (or the end, for null) to the frame decoder, forwarding what it produces. */
  private async pump(bytes: Buffer | null): Promise<void> {
    await this.flushOut();
    const dec = this.dec!;
    let accepted = false;
    if (bytes === null) dec.end();
    else accepted = dec.write(bytes);
    for (;;) {
      let c: Buffer | null;
      while ((c = dec.read() as Buffer | null) !== null) {
        if (this.skip > 0) {
          const n = Math.min(this.skip, c.length);
          this.skip -= n;
          c = c.subarray(n);
          if (c.length === 0) continue;
        }
        this.frameBytes += c.length;
        if (!this.push(c)) await new Promise<void>((r) => (this.wakeReader = r));
        if (this.destroyed) return;
      }
      if (this.decError) throw this.decError;
      // 'drain' may have fired while we waited for our reader: ask rather than wait for it.
      if (accepted || (bytes !== null && !dec.writableNeedDrain)) return;
      if (bytes === null && dec.readableEnded) return;
      const ev = await nextEvent(dec, bytes === null ? ['readable', 'end', 'close'] : ['readable', 'drain', 'close']);
      if (this.decError) throw this.decError;
      if (ev === 'drain') accepted = true;
      if (ev === 'end') return;
      if (ev === 'close') throw new FerryError('INTEGRITY', 'zstd decoder closed unexpectedly');
    }
  }
}

/**
 * The first of `names` (or 'error') that `em` emits. Plain listeners, removed as soon as one
 * fires: events.once() with an AbortSignal to drop the losers built an AbortError and a
 * DOMException, stack traces and all, for each of them: ~0.5 s of CPU per GiB decoded.
 */
function nextEvent(em: NodeJS.EventEmitter, names: string[]): Promise<string> {
  return new Promise((resolve) => {
    const all = [...names, 'error'];
    const handlers = all.map((n) => {
      const h = (): void => {
        all.forEach((m, i) => em.removeListener(m, handlers[i]!));
        resolve(n);
      };
      return h;
    });
    all.forEach((n, i) => em.on(n, handlers[i]!));
  });
}

function asIntegrity(e: unknown): unknown {
  if (e instanceof FerryError) return e;
  const err = e as NodeJS.ErrnoException;
  return new FerryError('INTEGRITY', `corrupt zstd data (${err?.message ?? String(e)})`, { cause: e });
}
