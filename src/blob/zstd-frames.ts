import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { FerryError } from '../errors.js';

/** 2^27 = 128 MiB, zstd's default maximum; a frame asking for more is refused before allocation. */
export const ZSTD_MAX_WINDOW_LOG = 27;

const MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE = 0x184d2a50;

type State = 'magic' | 'fhd' | 'header' | 'block-header' | 'block' | 'checksum' | 'skip-size' | 'skip';

export interface FrameRun {
  bytes: Buffer;
  /** First bytes of a new frame. */
  start: boolean;
  /** Last bytes of the current frame. */
  end: boolean;
}

/**
 * Walks zstd framing (RFC 8878 §3.1) without decoding: reports where each compressed frame starts
 * and ends, drops skippable frames, and rejects bytes that are not a frame (trailing garbage).
 */
export class ZstdFrameWalker {
  private state: State = 'magic';
  private need = 4;
  private readonly head = Buffer.alloc(4);
  private have = 0;
  private checksum = false;
  private lastBlock = false;
  private frames = 0;

  /** True when the data seen so far ends exactly at a frame boundary. */
  get betweenFrames(): boolean {
    return this.state === 'magic' && this.have === 0 && this.frames > 0;
  }

  feed(chunk: Buffer): FrameRun[] {
    const out: FrameRun[] = [];
    const inFrame = () => this.state !== 'magic' && this.state !== 'skip-size' && this.state !== 'skip';
    let runStart = inFrame() ? 0 : -1;
    let i = 0;
    while (i < chunk.length) {
      switch (this.state) {
        case 'magic':
        case 'skip-size':
        case 'fhd':
        case 'block-header': {
          this.head[this.have++] = chunk[i++]!;
          if (this.have < this.need) break;
          const bytes = this.head.subarray(0, this.have);
          this.have = 0;
          if (this.state === 'magic') {
            const m = bytes.readUInt32LE(0);
            if (m === MAGIC) {
              // The magic may straddle chunks: hand it over as its own run.
              out.push({ bytes: Buffer.from(bytes), start: true, end: false });
              this.frames++;
              this.state = 'fhd';
              this.need = 1;
              runStart = i;
            } else if ((m & SKIPPABLE_MASK) >>> 0 === SKIPPABLE) {
              this.state = 'skip-size';
              this.need = 4;
            } else {
              throw new FerryError('INTEGRITY', this.frames === 0 ? 'not a zstd stream' : `trailing garbage after zstd frame ${this.frames}`);
            }
          } else if (this.advance(bytes)) {
            out.push({ bytes: chunk.subarray(runStart, i), start: false, end: true });
            runStart = -1;
          }
          break;
        }
        default: {
          const n = Math.min(this.need, chunk.length - i);
          i += n;
          this.need -= n;
          if (this.need === 0 && this.advance(EMPTY) && runStart >= 0) {
            out.push({ bytes: chunk.subarray(runStart, i), start: false, end: true });
            runStart = -1;
          }
        }
      }
    }
    if (runStart >= 0 && runStart < chunk.length) out.push({ bytes: chunk.subarray(runStart), start: false, end: false });
    return out;
  }

  /** Moves on once `need` bytes were seen; true at the end of a frame. */
  private advance(bytes: Buffer): boolean {
    switch (this.state) {
      case 'fhd': {
        const fhd = bytes[0]!;
        if (fhd & 0x08) throw new FerryError('INTEGRITY', 'corrupt zstd frame header (reserved bit set)');
        const single = (fhd >> 5) & 1;
        this.checksum = ((fhd >> 2) & 1) === 1;
        const did = [0, 1, 2, 4][fhd & 3]!;
        const fcs = [single, 2, 4, 8][fhd >> 6]!;
        const rest = (single ? 0 : 1) + did + fcs;
        return this.go(rest > 0 ? 'header' : 'block-header', rest > 0 ? rest : 3);
      }
      case 'header':
        return this.go('block-header', 3);
      case 'block-header': {
        const h = bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16);
        const type = (h >> 1) & 3;
        if (type === 3) throw new FerryError('INTEGRITY', 'corrupt zstd block (reserved block type)');
        this.lastBlock = (h & 1) === 1;
        const body = type === 1 ? 1 : h >>> 3;
        return body > 0 ? this.go('block', body) : this.afterBlock();
      }
      case 'block':
        return this.afterBlock();
      case 'checksum':
        this.go('magic', 4);
        return true;
      case 'skip-size': {
        const size = bytes.readUInt32LE(0);
        return size > 0 ? this.go('skip', size) : this.go('magic', 4);
      }
      case 'skip':
        return this.go('magic', 4);
      default:
        return false;
    }
  }

  private go(state: State, need: number): false {
    this.state = state;
    this.need = need;
    return false;
  }

  private afterBlock(): boolean {
    if (!this.lastBlock) return this.go('block-header', 3);
    if (this.checksum) return this.go('checksum', 4);
    this.go('magic', 4);
    return true;
  }
}

const EMPTY = Buffer.alloc(0);

/**
 * zstd decoding that handles what node:zlib's stream does not: several frames (it stops after the
 * first), skippable frames, and trailing garbage (which it ignores silently). Each frame goes to a
 * fresh decoder; output respects backpressure, so memory stays flat whatever the ratio.
 */
export class ZstdDecompress extends Transform {
  private readonly walker = new ZstdFrameWalker();
  private dec?: zlib.ZstdDecompress;
  private decError?: unknown;
  private wakeReader?: () => void;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.process(chunk).then(() => cb(), (e: unknown) => cb(asIntegrity(e) as Error));
  }

  override _flush(cb: TransformCallback): void {
    if (!this.walker.betweenFrames || this.dec) cb(new FerryError('INTEGRITY', 'truncated zstd stream (unexpected end of data)'));
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
        const dec = zlib.createZstdDecompress({ chunkSize: 1 << 17, params: { [zlib.constants.ZSTD_d_windowLogMax]: ZSTD_MAX_WINDOW_LOG } });
        dec.on('error', (e) => (this.decError ??= e));
        this.dec = dec;
      }
      await this.pump(run.bytes);
      if (run.end) {
        await this.pump(null);
        this.dec = undefined;
      }
    }
  }

  /** Writes `bytes` (or the end, for null) to the frame decoder, forwarding what it produces. */
  private async pump(bytes: Buffer | null): Promise<void> {
    const dec = this.dec!;
    let accepted = false;
    if (bytes === null) dec.end();
    else accepted = dec.write(bytes);
    for (;;) {
      let c: Buffer | null;
      while ((c = dec.read() as Buffer | null) !== null) {
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
