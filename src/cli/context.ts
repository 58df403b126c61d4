import type { CopyEvent } from '../copy.js';
import { FerryError } from '../errors.js';
import type { RegistrySettings } from '../locations/location.js';
import { shortDigest } from '../oci/digest.js';

/** Options every command accepts. */
export interface GlobalArgs {
  store?: string;
  quiet?: boolean;
  json?: boolean;
  debug?: boolean;
  insecure?: boolean;
  'plain-http'?: boolean;
}

/** Registry settings from the global flags. */
export function registrySettings(args: GlobalArgs): RegistrySettings {
  return {
    insecure: args.insecure,
    plainHttp: args['plain-http'],
    debug: args.debug ? (line) => process.stderr.write(`ferry: debug: ${line}\n`) : undefined,
    onRetry: args.quiet || args.json ? undefined : (r) => process.stderr.write(`ferry: retrying ${r.url} in ${(r.delayMs / 1000).toFixed(1)} s (${r.reason}, attempt ${r.attempt})\n`),
  };
}

/** Docker-style per-blob status lines on stderr. */
export function progressPrinter(args: GlobalArgs): (e: CopyEvent) => void {
  return (e) => {
    const id = 'digest' in e ? shortDigest(e.digest) : '';
    if (e.type === 'blob-skip') status(args, `${id}: Already exists`);
    else if (e.type === 'blob-mount') status(args, `${id}: Mounted from another repository`);
    else if (e.type === 'blob-done') status(args, `${id}: Complete (${humanSize(e.size)})`);
    else if (e.type === 'blob-retry') status(args, `${id}: Retrying (${e.reason})`);
  };
}

/** Aborted by SIGINT/SIGTERM; commands pass it to the library. */
export const interrupt = new AbortController();

export function out(line = ''): void {
  process.stdout.write(line + '\n');
}

/** Progress and status lines go to stderr so stdout stays parseable. */
export function status(args: GlobalArgs, line: string): void {
  if (!args.quiet && !args.json) process.stderr.write(line + '\n');
}

export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function humanSize(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  return u === 0 ? `${n}B` : `${v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)}${units[u]}`;
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]! + 3))).join('').trimEnd()).join('\n');
}

export function usage(message: string): FerryError {
  return new FerryError('USAGE', message);
}
