import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

// Self-contained (no vitest, no other helpers) so bench/run.mjs can import it too.
const FERRY = join(import.meta.dirname, '..', '..', 'bin', 'ferry');

export interface Served {
  /** http(s)://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT, for docker:// references. */
  host: string;
  port: number;
  store: string;
  child: ChildProcess;
  /** Everything the server wrote to stderr so far (the access log among it). */
  stderr(): string;
  /** Sends a signal and waits for the exit. */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }>;
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

/**
 * Starts `ferry --store STORE serve --addr 127.0.0.1:0 ARGS…` as a child process and waits for the
 * address it prints. Servers still running when the process ends are killed.
 */
export function startServe(store: string, args: string[] = [], opts: { env?: Record<string, string | undefined> } = {}): Promise<Served> {
  const child = spawn(FERRY, ['--store', store, 'serve', '--addr', '127.0.0.1:0', ...args], { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ferry serve did not start within 15 s:\n${stderr}`)), 15_000);
    void exited.then(({ code }) => {
      clearTimeout(timer);
      reject(new Error(`ferry serve exited with ${code} before listening:\n${stderr}`));
    });
    child.stdout!.on('data', () => {
      const m = /listening on (https?):\/\/([^\s]+):(\d+)/.exec(stdout);
      if (!m) return;
      clearTimeout(timer);
      const port = Number(m[3]);
      resolve({
        url: `${m[1]}://${m[2]}:${port}`,
        host: `${m[2]}:${port}`,
        port,
        store,
        child,
        stderr: () => stderr,
        async stop(signal: NodeJS.Signals = 'SIGTERM') {
          if (!child.killed && child.exitCode === null) child.kill(signal);
          const r = await exited;
          // Let the last stderr chunks arrive.
          await new Promise((ok) => setImmediate(ok));
          return { ...r, stderr };
        },
      });
    });
  });
}
