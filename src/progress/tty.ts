import type { CopyEvent } from '../copy.js';
import { shortDigest, type Digest } from '../oci/digest.js';
import { humanSize } from './format.js';

type State = 'Waiting' | 'Copying' | 'Complete' | 'Already exists' | 'Mounted' | 'Retrying';

interface Row {
  id: string;
  state: State;
  bytes: number;
  size: number;
}

const BAR = 30;
const FRAME_MS = 100;


function bar(done: number, total: number): string {
  const filled = total > 0 ? Math.min(BAR, Math.floor((done / total) * BAR)) : BAR;
  return `[${'='.repeat(Math.max(0, filled - 1))}${filled > 0 ? '>' : ''}${' '.repeat(BAR - filled)}]`;
}

function eta(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--';
  if (seconds < 60) return `${Math.ceil(seconds)}s`;
  return `${Math.floor(seconds / 60)}m${String(Math.ceil(seconds % 60)).padStart(2, '0')}s`;
}

/**
 * Docker-style live progress on a terminal: one line per blob (`a803e7c4b030: Copying [==>  ]
 * 12.3MB/45.6MB`) and a total line with throughput and ETA, redrawn in place at most ten times a
 * second. Only for TTYs; logs get one plain line per state change instead.
 */
export class TtyProgress {
  private readonly rows = new Map<Digest, Row>();
  private drawn = 0;
  private timer?: NodeJS.Timeout;
  private readonly started = Date.now();

  constructor(private readonly out: NodeJS.WriteStream = process.stderr) {}

  readonly onEvent = (e: CopyEvent): void => {
    if (!('digest' in e) || e.type === 'resolved' || e.type === 'manifest' || e.type === 'tagged') return;
    const row = this.rows.get(e.digest) ?? { id: shortDigest(e.digest), state: 'Waiting' as State, bytes: 0, size: 'size' in e ? e.size : 0 };
    this.rows.set(e.digest, row);
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

  private line(r: Row): string {
    if (r.state === 'Copying') return `${r.id}: Copying ${bar(r.bytes, r.size)} ${humanSize(r.bytes)}/${humanSize(r.size)}`;
    return `${r.id}: ${r.state}${r.state === 'Complete' ? ` ${humanSize(r.size)}` : ''}`;
  }

  private draw(): void {
    const rows = [...this.rows.values()];
    let done = 0;
    let total = 0;
    for (const r of rows) {
      if (r.state === 'Already exists' || r.state === 'Mounted') continue;
      done += r.bytes;
      total += r.size;
    }
    const secs = (Date.now() - this.started) / 1000;
    const rate = secs > 0 ? done / secs : 0;
    const lines = rows.map((r) => this.line(r));
    lines.push(`Total: ${humanSize(done)}/${humanSize(total)} ${humanSize(rate)}/s ETA ${eta(rate > 0 ? (total - done) / rate : Infinity)}`);
    const width = this.out.columns ?? 120;
    let frame = this.drawn > 0 ? `\x1b[${this.drawn}A` : '';
    for (const l of lines) frame += `\x1b[2K${l.slice(0, width - 1)}\n`;
    this.out.write(frame);
    this.drawn = lines.length;
  }

  /** Draws the final state and stops redrawing. */
  finish(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.rows.size) this.draw();
  }
}
