import type { IngestEvent } from '../archive/ingest.js';
import type { CopyEvent } from '../copy.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { humanSize } from './format.js';

/** What the progress printers show: copies (pull, push, copy, save, sync) and archive loads. */
export type ProgressEvent = CopyEvent | IngestEvent;

type State = 'Waiting' | 'Copying' | 'Complete' | 'Already exists' | 'Mounted' | 'Retrying';
const FINAL: ReadonlySet<State> = new Set(['Complete', 'Already exists', 'Mounted']);

interface Row {
  id: string;
  state: State;
  bytes: number;
  size: number;
}

const BAR = 30;
/** Narrower than this, a bar says little: the line keeps only the sizes. */
const MIN_BAR = 10;
const FRAME_MS = 100;

function bar(done: number, total: number, cells: number): string {
  const filled = total > 0 ? Math.min(cells, Math.floor((done / total) * cells)) : cells;
  return `[${'='.repeat(Math.max(0, filled - 1))}${filled > 0 ? '>' : ''}${' '.repeat(cells - filled)}]`;
}

/** Screen rows `lines` take at `width` columns once a terminal rewraps them (after a resize). */
function rowsAt(lines: string[], width: number): number {
  return lines.reduce((n, l) => n + Math.max(1, Math.ceil(l.length / width)), 0);
}

function eta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
}

/**
 * Docker-style live progress on a terminal: one line per blob (`a803e7c4b030: Copying [==>  ]
 * 12.3MB/45.6MB`) and a total line with throughput and ETA, redrawn in place at most ten times a
 * second. Only for TTYs; logs get one plain line per state change instead. The total is what the
 * copies announced (`queued`), or the archive bytes read (`read`, for loads), else the blobs seen.
 */
export class TtyProgress {
  private readonly rows = new Map<Digest, Row>();
  /** Rows still redrawn; finished ones leave from the top when the screen is full. */
  private live: Row[] = [];
  /** The lines of the last frame still on screen, below which the cursor stands. */
  private drawn: string[] = [];
  /** The cursor went back over the last frame: what is left of it below the new one goes. */
  private overdrawn = false;
  private timer?: NodeJS.Timeout;
  private readonly started = Date.now();
  private queued = 0;
  private read?: { bytes: number; size?: number };

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  readonly onEvent = (e: ProgressEvent): void => {
    if (e.type === 'queued' || e.type === 'read') {
      if (e.type === 'queued') this.queued += e.bytes;
      else this.read = { bytes: e.bytes, size: e.size };
      return this.schedule();
    }
    if (!e.type.startsWith('blob-') || !('digest' in e)) return;
    let row = this.rows.get(e.digest);
    if (!row) {
      row = { id: shortDigest(e.digest), state: 'Waiting', bytes: 0, size: 'size' in e ? e.size : 0 };
      this.rows.set(e.digest, row);
      this.live.push(row);
    }
    switch (e.type) {
      case 'blob-start': row.state = 'Copying'; row.size = e.size; break;
      case 'blob-progress': row.bytes = e.bytes; row.size = e.size; break;
      case 'blob-done': row.state = 'Complete'; row.bytes = e.size; break;
      case 'blob-skip': row.state = 'Already exists'; break;
      case 'blob-mount': row.state = 'Mounted'; break;
      case 'blob-retry': row.state = 'Retrying'; row.bytes = 0; break;
    }
    this.schedule();
  };

  private schedule(): void {
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      this.draw();
    }, FRAME_MS);
  }

  /** Fits `width`: the bar narrows, then goes, so the sizes stay in view. */
  private line(r: Row, width: number): string {
    if (r.state === 'Copying') {
      const sizes = `${humanSize(r.bytes)}/${humanSize(r.size)}`;
      const cells = Math.min(BAR, width - 1 - `${r.id}: Copying [] ${sizes}`.length);
      return cells < MIN_BAR ? `${r.id}: Copying ${sizes}` : `${r.id}: Copying ${bar(r.bytes, r.size, cells)} ${sizes}`;
    }
    return `${r.id}: ${r.state}${r.state === 'Complete' ? ` ${humanSize(r.size)}` : ''}`;
  }

  private totals(): { done: number; total?: number; present: number } {
    if (this.read) return { done: this.read.bytes, total: this.read.size, present: 0 };
    let done = 0;
    let seen = 0;
    let present = 0;
    for (const r of this.rows.values()) {
      if (r.state === 'Already exists' || r.state === 'Mounted') present += r.size;
      else {
        done += r.bytes;
        seen += r.size;
      }
    }
    return { done, total: Math.max(seen, this.queued - present), present };
  }

  private draw(): void {
    const { done, total, present } = this.totals();
    const secs = (Date.now() - this.started) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    const left = total !== undefined && rate > 0 ? (total - done) / rate : Infinity;
    // Every blob already there: a rate and an ETA of nothing say nothing.
    const totalLine = total === 0 && done === 0
      ? `Total: nothing to copy${present > 0 ? `, ${humanSize(present)} already present` : ''}`
      : total === undefined
        ? `Total: ${humanSize(done)} ${humanSize(rate)}/s`
        : `Total: ${humanSize(done)}/${humanSize(total)} ${humanSize(rate)}/s ETA ${eta(left)}`;
    // Redrawing moves the cursor up, which cannot go above the screen: once the frame would not
    // fit, finished rows are printed one last time above the others and left behind.
    // A pty that was never sized (`script`, some CI runners) reports 0 rows and columns: unknown.
    const room = Math.max(2, (this.out.rows || 24) - 1);
    const over = this.live.length + 1 - room;
    const leaving = over > 0 ? this.live.filter((r) => FINAL.has(r.state)).slice(0, over) : [];
    this.live = this.live.filter((r) => !leaving.includes(r));
    // Still more blobs in flight than a very short terminal has rows: the rest are only counted.
    const shown = this.live.length + 1 > room ? this.live.slice(0, room - 2) : this.live;
    const width = this.out.columns || 120;
    const lines = [...leaving, ...shown].map((r) => this.line(r, width));
    if (shown.length < this.live.length) lines.push(`(${this.live.length - shown.length} more)`);
    lines.push(totalLine);
    const cut = lines.map((l) => l.slice(0, width - 1));
    let frame = this.backUp() + this.overwrite(cut);
    // Cleared below the new frame, never from its top (see overwrite()).
    if (this.overdrawn) frame += '\x1b[J';
    this.overdrawn = false;
    this.out.write(frame);
    this.drawn = cut.slice(leaving.length);
  }

  /**
   * Moves the cursor back to the first row of the last frame. A terminal made narrower since
   * rewraps those lines into more rows: count the rows they take now.
   */
  private backUp(): string {
    if (!this.drawn.length) return '';
    const up = rowsAt(this.drawn, this.out.columns || 120);
    this.drawn = [];
    this.overdrawn = true;
    return `\x1b[${up}A\r`;
  }

  /**
   * `lines`, each clearing what was on the rows it takes. Not a clear to the end of the screen
   * from the frame's top: some terminals (tmux) push a screen cleared from its first row into the
   * scrollback, one copy per frame.
   */
  private overwrite(lines: string[]): string {
    const width = this.out.columns || 120;
    return lines.map((l) => `\x1b[2K${l}${l.length % width ? '\x1b[K' : ''}\n`).join('');
  }

  /**
   * Prints `text` (whole lines: a warning, a retry, a status line) above the live lines, which are
   * drawn again below it, so that neither overwrites the other.
   */
  print(text: string): void {
    if (!this.drawn.length) return void this.out.write(text);
    this.out.write(this.backUp() + this.overwrite(text.replace(/\n$/, '').split('\n')));
    this.draw();
  }

  /** Draws the final state and stops redrawing; what is printed afterwards goes below it. */
  finish(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.rows.size || this.read) this.draw();
    this.drawn = [];
  }
}
