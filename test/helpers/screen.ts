/**
 * A small terminal for renderer tests: a stream with `columns` and `rows` whose output lands on a
 * grid of rows (as tall as needed: nothing scrolls away). It understands what the progress printer
 * sends: text (wrapping at the right margin), `\n` (a pty's onlcr: next row, first column), `\r`,
 * and `ESC[nA` (up, stopping at the top), `ESC[2K`, `ESC[K`, `ESC[J`. `resize` rewraps the lines
 * as tmux, VTE and most terminals do. Anything else fails the test.
 */
export class Screen {
  /** Each row's text and whether it continues the row above (a wrapped line). */
  private grid: Array<{ text: string; wrapped: boolean }> = [{ text: '', wrapped: false }];
  private y = 0;
  private x = 0;
  /** Everything written, escape sequences and all. */
  written = '';

  constructor(public columns: number, public rows = 100) {}

  /** A stand-in for `process.stderr` on a terminal. */
  get stream(): NodeJS.WriteStream {
    return this as unknown as NodeJS.WriteStream;
  }

  write(s: string): boolean {
    this.written += s;
    // eslint-disable-next-line no-control-regex
    for (const [, esc, n, cmd, ch] of s.matchAll(/(\x1b\[([0-9]*)([A-Za-z]))|([\s\S])/g)) {
      if (esc) this.escape(cmd!, n ? Number(n) : undefined);
      else if (ch === '\n') {
        this.moveTo(this.y + 1, 0);
        this.row().wrapped = false;
      }
      else if (ch === '\r') this.x = 0;
      else this.put(ch!);
    }
    return true;
  }

  private escape(cmd: string, n: number | undefined): void {
    if (cmd === 'A') this.y = Math.max(0, this.y - (n ?? 1));
    else if (cmd === 'K' && n === 2) this.row().text = '';
    else if (cmd === 'K' && n === undefined) this.row().text = this.row().text.slice(0, this.x);
    else if (cmd === 'J' && n === undefined) {
      this.row().text = this.row().text.slice(0, this.x);
      this.grid.length = this.y + 1;
    } else throw new Error(`unexpected escape sequence ESC[${n ?? ''}${cmd}`);
  }

  private put(ch: string): void {
    if (ch < ' ') throw new Error(`unexpected control character ${JSON.stringify(ch)}`);
    if (this.x >= this.columns) {
      this.moveTo(this.y + 1, 0);
      this.row().wrapped = true;
    }
    const row = this.row();
    row.text = row.text.padEnd(this.x).slice(0, this.x) + ch + row.text.slice(this.x + 1);
    this.x++;
  }

  private moveTo(y: number, x: number): void {
    while (this.grid.length <= y) this.grid.push({ text: '', wrapped: false });
    this.y = y;
    this.x = x;
  }

  private row(): { text: string; wrapped: boolean } {
    return this.grid[this.y]!;
  }

  /** The terminal gets `columns` wide: lines are rewrapped, the cursor stays where it was in its line. */
  resize(columns: number): void {
    const lines: string[] = [];
    let cursor = { line: 0, offset: 0 };
    this.grid.forEach((r, i) => {
      if (!r.wrapped || !lines.length) lines.push('');
      if (i === this.y) cursor = { line: lines.length - 1, offset: lines.at(-1)!.length + this.x };
      lines[lines.length - 1] += r.text.padEnd(i === this.y ? this.x : 0);
    });
    this.columns = columns;
    this.grid = [];
    lines.forEach((l, i) => {
      for (let at = 0; at === 0 || at < l.length; at += columns) {
        this.grid.push({ text: l.slice(at, at + columns), wrapped: at > 0 });
        if (i === cursor.line && cursor.offset >= at && (cursor.offset < at + columns || at + columns >= l.length)) {
          this.y = this.grid.length - 1;
          this.x = Math.min(cursor.offset - at, columns);
        }
      }
    });
  }

  /** The rows with text, trailing spaces and empty rows at the end dropped. */
  text(): string[] {
    const rows = this.grid.map((r) => r.text.trimEnd());
    while (rows.length && !rows.at(-1)) rows.pop();
    return rows;
  }
}
