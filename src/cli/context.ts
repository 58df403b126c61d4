import { exitCodeFor, FerryError } from '../errors.js';
import type { RegistrySettings } from '../locations/location.js';
import { shortDigest } from '../oci/digest.js';
import { humanSize } from '../progress/format.js';
import { TtyProgress, type ProgressEvent } from '../progress/tty.js';

export { humanSize };

/** Options every command accepts. */
export interface GlobalArgs {
  store?: string;
  quiet?: boolean;
  json?: boolean;
  debug?: boolean;
  insecure?: boolean;
  'plain-http'?: boolean;
  timeout?: number;
}

/** Registry settings from the global flags. */
export function registrySettings(args: GlobalArgs): RegistrySettings {
  return {
    insecure: args.insecure,
    plainHttp: args['plain-http'],
    timeoutMs: args.timeout === undefined ? undefined : args.timeout * 1000, // checked as --timeout was read (numbers.ts)
    debug: args.debug ? (line) => stderrLine(`ferry: debug: ${line}`) : undefined,
    onRetry: args.quiet || args.json ? undefined : (r) => stderrLine(`ferry: retrying ${r.url} in ${(r.delayMs / 1000).toFixed(1)} s (${r.reason}, attempt ${r.attempt})`),
  };
}

/** The live progress drawn on stderr, while there is one. */
let live: TtyProgress | undefined;

/** A line on stderr; while live progress is drawn there, above it, so neither overwrites the other. */
export function stderrLine(line: string): void {
  if (live) live.print(`${line}\n`);
  else process.stderr.write(`${line}\n`);
}

/**
 * Live bars only where a cursor can be moved: stderr is a terminal, and not one that says it
 * cannot (`TERM=dumb`: Emacs shells, some CI consoles).
 */
function drawsLive(): boolean {
  return process.stderr.isTTY === true && process.env.TERM !== 'dumb';
}

export type ProgressPrinter = ((e: ProgressEvent) => void) & { done: () => void };

/**
 * Progress for copies and loads: live bars on a terminal, one plain line per state change in
 * logs, JSON lines with --json (not the byte counts), nothing with --quiet. Call `done()` when the
 * operation ends.
 */
export function progressPrinter(args: GlobalArgs): ProgressPrinter {
  if (args.json) {
    return Object.assign((e: ProgressEvent) => {
      if (e.type !== 'blob-progress' && e.type !== 'read') process.stdout.write(JSON.stringify({ event: e.type, ...e, type: undefined }) + '\n');
    }, { done: () => {} });
  }
  if (!args.quiet && drawsLive()) {
    const tty = new TtyProgress();
    live = tty;
    return Object.assign(tty.onEvent, {
      done: () => {
        tty.finish();
        if (live === tty) live = undefined;
      },
    });
  }
  return Object.assign((e: ProgressEvent) => {
    const id = 'digest' in e ? shortDigest(e.digest) : '';
    if (e.type === 'blob-skip') status(args, `${id}: Already exists`);
    else if (e.type === 'blob-mount') status(args, `${id}: Mounted from another repository`);
    else if (e.type === 'blob-done') status(args, `${id}: Complete (${humanSize(e.size)})`);
    else if (e.type === 'blob-retry') status(args, `${id}: Retrying (${e.reason})`);
  }, { done: () => {} });
}

/** The command line as given (main() records it): yargs drops a lone "-" from variadic positionals. */
export const commandLine: string[] = [];

/** Whether "-" stands on the command line as an argument of its own, not as the value of one of `valued`. */
export function dashArgument(valued: string[]): boolean {
  const end = commandLine.indexOf('--');
  const args = end < 0 ? commandLine : commandLine.slice(0, end);
  return args.some((a, i) => a === '-' && !valued.includes(args[i - 1] ?? ''));
}

/**
 * `-o /dev/stdout` (or /dev/fd/1, /proc/self/fd/1) means what `-o -` means: this process's
 * standard output, with the same checks (not a terminal) and the same end when the reader leaves.
 * As a path it was refused as existing when stdout was a file, and was published by rename.
 */
export function outputArgument(output: string | undefined): string | undefined {
  const stdout = ['/dev/stdout', '/dev/fd/1', '/proc/self/fd/1', `/proc/${process.pid}/fd/1`];
  return output !== undefined && stdout.includes(output) ? '-' : output;
}

/** Aborted by SIGINT/SIGTERM; commands pass it to the library. */
export const interrupt = new AbortController();

export function out(line = ''): void {
  process.stdout.write(line + '\n');
}

/**
 * `Digest:` names the image as the source does, as docker prints it: after a platform choice, the
 * index's digest (what `NAME@DIGEST` pulls again), followed by what was written in its place.
 */
export function printDigests(i: { digest: string; source?: string; platforms: string[] }): void {
  if (!i.source) return out(`Digest: ${i.digest}`);
  out(`Digest: ${i.source}`);
  out(`Written: ${i.digest} (${i.platforms.join(', ')})`);
}

/**
 * A referrer carried by --referrers gets a line of its own: a `Copied`/`Digest:` block would read
 * as if the tag now pointed at the signature. Returns whether `i` was one.
 */
export function printReferrer(i: { digest: string; subject?: string; artifactType?: string; names: Array<{ tag: string }> }): boolean {
  if (!i.subject) return false;
  const tags = i.names.map((n) => n.tag);
  out(`Referrer: ${i.digest}${i.artifactType ? ` (${i.artifactType})` : ''} for ${i.subject}${tags.length ? `, tagged ${tags.join(', ')}` : ''}`);
  return true;
}

/** Progress and status lines go to stderr so stdout stays parseable. */
export function status(args: GlobalArgs, line: string): void {
  if (!args.quiet && !args.json) stderrLine(line);
}

let resultPrinted = false;
let stdoutIsData = false;

/**
 * `save -o -`: stdout carries the archive, so a failed --json run must not append an error line
 * to it (the reader would take it for the archive's end); the error goes to stderr alone.
 */
export function stdoutCarriesData(): void {
  stdoutIsData = true;
}

/** The last line of a --json run of a transfer command: `{"event":"result", …}` after the event lines. */
export function printResult(value: object): void {
  process.stdout.write(JSON.stringify({ event: 'result', ...value }) + '\n');
  resultPrinted = true;
}

/** The one JSON document of a --json run of any other command. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  resultPrinted = true;
}

/**
 * A failed --json run ends with one error line on stdout, unless the command already printed its
 * result (verify and sync report their problems there, then exit non-zero) or stdout is an archive.
 */
export function printError(err: FerryError, exitCode = exitCodeFor(err)): void {
  if (resultPrinted || stdoutIsData) return;
  process.stdout.write(JSON.stringify({ event: 'error', code: err.code, exitCode, message: err.message, ...(err.hint ? { hint: err.hint } : {}) }) + '\n');
}


export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n');
}

export function usage(message: string): FerryError {
  return new FerryError('USAGE', message);
}
