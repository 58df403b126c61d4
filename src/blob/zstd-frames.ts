import { once } from 'node:events';
import { Transform, type TransformCallback } from 'node:stream';
import zlib from 'node:zlib';
import { FerryError } from '../errors.js';

/** 2^27 = 128 MiB, zstd's default maximum; a frame asking for more is refused before allocation. */
export const ZSTD_MAX_WINDOW_LOG = 27;

const MAGIC = 0xfd2fb528;
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE = 0x184d2a50;

type State = 'magic' | 'fhd' | 'header' | 'block-header' | 'block' | 'checksum' | 'skip-size' | 'skip';

/**
 * Walks zstd framing (RFC 8878 §3.1) without decoding: reports where each compressed frame starts
 * and ends, drops skippable frames, and rejects bytes that are not a frame (trailing garbage).
 */
export class ZstdFrameWalker {
  private state: State = 'magic';
  private need = 4;
  private head = Buffer.alloc(4);
  private have = 0;
  private checksum = false;
  private frames = 0;

  get betweenFrames(): boolean {
    return this.state === 'magic' && this.have === 0;
  }

  /** Splits `chunk` into runs of frame bytes; `start`/`end` mark frame boundaries. */
  feed(chunk: Buffer): Array<{ bytes: Buffer; start: boolean; end: boolean }> {
    const out: Array<{ bytes: Buffer; start: boolean; end: boolean }> = [];
    let runStart = -1;
    let startFlag = false;
    const flush = (to: number, end: boolean) => {
      if (runStart >= 0) out.push({ bytes: chunk.subarray(runStart, to), start: startFlag, end });
      runStart = -1;
      startFlag = false;
    };
    let i = 0;
    while (i < chunk.length) {
      const inFrame = this.state !== 'skip-size' && this.state !== 'skip' && !(this.state === 'magic');
      if (this.state === 'block' || this.state === 'header' || this.state === 'checksum' || this.state === 'skip') {
        const n = Math.min(this.need, chunk.length - i);
        if (this.state !== 'skip' && runStart < 0) runStart = i;
        i += n;
        this.need -= n;
        if (this.need === 0) {
          const ended = this.advance(Buffer.alloc(0));
          if (ended) flush(i, true);
        }
        continue;
      }
      // States whose bytes must be interpreted: collect them.
      if (inFrame && runStart < 0) runStart = i;
      if (this.state === 'magic' && this.have === 0) {
        // The magic may be a real frame (kept) or a skippable one (dropped); decide once read.
        runStart = -1;
      }
      this.head[this.have++] = chunk[i++]!;
      if (this.have === this.need) {
        const bytes = Buffer.from(this.head.subarray(0, this.have));
        this.have = 0;
        if (this.state === 'magic') {
          const m = bytes.readUInt32LE(0);
          if (m === MAGIC) {
            // The 4 magic bytes may straddle chunks; re-emit them as the frame's first bytes.
            const inChunk = Math.min(4, i);
            const before = 4 - inChunk;
            if (before > 0) out.push({ bytes: Buffer.from(bytes.subarray(0, before)), start: true, end: false });
            runStart = i - inChunk;
            startFlag = before === 0;
            this.frames++;
            this.state = 'fhd';
            this.need = 1;
          } else if (((m & SKIPPABLE_MASK) >>> 0) === SKIPPABLE) {
            this.state = 'skip-size';
            this.need = 4;
          } else {
            throw new FerryError('INTEGRITY', this.frames === 0 ? 'not a zstd stream' : `trailing garbage after zstd frame ${this.frames}`);
          }
          continue;
        }
        const ended = this.advance(bytes);
        if (ended) flush(i, true);
      }
    }
    flush(chunk.length, false);
    return out;
  }

  /** Moves to the next state once `need` bytes were seen; returns true at the end of a frame. */
  private advance(bytes: Buffer): boolean {
    switch (this.state) {
      case 'fhd': {
        const fhd = bytes[0]!;
        if (fhd & 0x08) throw new FerryError('INTEGRITY', 'corrupt zstd frame header (reserved bit set)');
        const fcsFlag = fhd >> 6;
        const single = (fhd >> 5) & 1;
        this.checksum = ((fhd >> 2) & 1) === 1;
        const did = [0, 1, 2, 4][fhd & 3]!;
        const fcs = fcsFlag === 0 ? single : [0, 2, 4, 8][fcsFlag]!;
        const rest = (single ? 0 : 1) + did + fcs;
        this.state = rest > 0 ? 'header' : 'block-header';
        this.need = rest > 0 ? rest : 3;
        return false;
      }
      case 'header':
        this.state = 'block-header';
        this.need = 3;
        return false;
      case 'block-header': {
        const h = bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16);
        const last = h & 1;
        const type = (h >> 1) & 3;
        const size = h >>> 3;
        if (type === 3) throw new FerryError('INTEGRITY', 'corrupt zstd block (reserved block type)');
        this.lastBlock = last === 1;
        const body = type === 1 ? 1 : size;
        if (body > 0) {
          this.state = 'block';
          this.need = body;
          return false;
        }
        return this.afterBlock();
      }
      case 'block':
        return this.afterBlock();
      case 'checksum':
        this.state = 'magic';
        this.need = 4;
        return true;
      case 'skip-size': {
        const size = bytes.readUInt32LE(0);
        this.state = size > 0 ? 'skip' : 'magic';
        this.need = size > 0 ? size : 4;
        return false;
      }
      case 'skip':
        this.state = 'magic';
        this.need = 4;
        return false;
      default:
        return false;
    }
  }

  private lastBlock = false;

  private afterBlock(): boolean {
    if (!this.lastBlock) {
      this.state = 'block-header';
      this.need = 3;
      return false;
    }
    if (this.checksum) {
      this.state = 'checksum';
      this.need = 4;
      return false;
    }
    this.state = 'magic';
    this.need = 4;
    return true;
  }
}

/**
 * zstd decoding that handles what node:zlib's stream does not: several frames (it stops after the
 * first), skippable frames, and trailing garbage (which it ignores silently). Each frame goes to a
 * fresh decoder; output respects backpressure, so memory stays flat whatever the ratio.
 */
export class ZstdDecompress extends Transform {
  private readonly walker = new ZstdFrameWalker();
  private dec?: zlib.ZstdDecompress;
  private wakeReader?: () => void;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.process(chunk).then(() => cb(), (e: unknown) => cb(e as Error));
  }

  override _flush(cb: TransformCallback): void {
    const finish = async () => {
      if (!this.walker.betweenFrames || this.dec) throw new FerryError('INTEGRITY', 'truncated zstd stream (unexpected end of data)');
    };
    finish().then(() => cb(), (e: unknown) => cb(e as Error));
  }

  override _read(size: number): void {
    const wake = this.wakeReader;
    this.wakeReader = undefined;
    wake?.();
    super._read(size);
  }

  override _destroy(err: Error | null, cb: (e: Error | null) => void): void {
    this.dec?.destroy();
    this.wakeReader?.();
    cb(err);
  }

  private async process(chunk: Buffer): Promise<void> {
    for (const run of this.walker.feed(chunk)) {
      if (run.start || !this.dec) {
        this.dec = zlib.createZstdDecompress({ params: { [zlib.constants.ZSTD_d_windowLogMax]: ZSTD_MAX_WINDOW_LOG } });
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
      if (accepted) return;
      if (bytes === null && dec.readableEnded) return;
      const ev = await nextEvent(dec, bytes === null ? ['readable', 'end'] : ['readable', 'drain']);
      if (ev === 'drain') accepted = true;
      if (ev === 'end') return;
    }
  }
}

async function nextEvent(em: NodeJS.EventEmitter, names: string[]): Promise<string> {
  const ac = new AbortController();
  try {
    return await Promise.race(names.map((n) => once(em, n, { signal: ac.signal }).then(() => n)));
  } catch (e) {
    if ((e as Error).name === 'AbortError') return 'aborted';
    throw mapZstdError(e);
  } finally {
    ac.abort();
  }
}

function mapZstdError(e: unknown): unknown {
  if (e instanceof FerryError) return e;
  const err = e as NodeJS.ErrnoException;
  return new FerryError('INTEGRITY', `corrupt zstd data (${err.message})`, { cause: e });
}
