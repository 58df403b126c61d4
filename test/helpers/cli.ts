import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const FERRY = join(import.meta.dirname, '..', '..', 'bin', 'ferry');

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: string | Buffer;
  /** Wrap the command, e.g. ['setpriv', '--reuid=65534', ...] to run it as another user. */
  wrap?: string[];
  /** Run this executable instead of bin/ferry (the single-file binary). */
  binary?: string;
  /** Working directory (default: the test's). */
  cwd?: string;
}

/** Runs the real CLI (bin/ferry -> dist) as a child process. */
export function ferry(args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const child = start(args, opts);
  if (opts.input !== undefined) {
    // A command that refuses its input early exits before reading it all: EPIPE here is expected.
    child.stdin!.on('error', () => {});
    child.stdin!.end(opts.input);
  }
  return finish(child);
}

export function start(args: string[], opts: RunOptions = {}): ChildProcess {
  const exe = opts.binary ?? FERRY;
  const [cmd, ...pre] = opts.wrap ? [...opts.wrap, exe] : [exe];
  // A binary run "with no node on PATH" must not inherit one either.
  return spawn(cmd!, [...pre, ...args], {
    env: opts.binary ? { ...opts.env } : { ...process.env, ...opts.env },
    cwd: opts.cwd,
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export function finish(child: ChildProcess): Promise<RunResult> {
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  child.stdin?.end();
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}
