/**
 * `npm run demo`: the main job, end to end, on nothing but this repository. Starts `ferry serve`
 * on a free loopback port, seeds it from testdata, then pull -> save (.tar.zst) -> verify -> load
 * into a fresh store -> push under a new name -> pull back by digest, then the nightly backup: sync
 * the repository into a .tar.zst, twice (the second run must leave it untouched). Prints a short
 * report; exits non-zero if any step fails or any digest differs.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = join(import.meta.dirname, '..', '..');
const FERRY = join(ROOT, 'bin', 'ferry');
const TESTDATA = join(ROOT, 'testdata');

interface Step {
  name: string;
  ms: number;
  detail: string;
}

/** Sync state of the demo's runs stays in its work directory (set by main). */
const env = { ...process.env };

function ferry(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(FERRY, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? 1, stdout, stderr }));
  });
}

async function must(args: string[]): Promise<string> {
  const r = await ferry(args);
  if (r.code !== 0) throw new Error(`ferry ${args.join(' ')} failed (exit ${r.code}):\n${r.stderr.trim()}`);
  return r.stdout;
}

/** Starts `ferry serve` on a free port; resolves with host:port once it listens. */
async function serve(store: string): Promise<{ host: string; stop: () => Promise<void> }> {
  const child = spawn(FERRY, ['serve', '--store', store, '--addr', '127.0.0.1:0', '--quiet'], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = createInterface({ input: child.stdout });
  let log = '';
  child.stderr.on('data', (c: Buffer) => (log += c.toString()));
  const host = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`ferry serve did not start:\n${log}`)), 20_000);
    lines.on('line', (line) => {
      const m = /(127\.0\.0\.1:\d+)/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    });
    child.once('exit', (code) => reject(new Error(`ferry serve exited (${code}):\n${log}`)));
  });
  return {
    host,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('close', r));
    },
  };
}

/** "5 tags, 5 copied, 0 unchanged" out of a sync's summary line. */
function summary(out: string): string {
  return /: (\d+ tags, \d+ copied, \d+ unchanged)/.exec(out)?.[1] ?? out.trim();
}

/** Image name -> digest, from an archive's index.json. */
async function readArchiveDigests(file: string): Promise<Map<string, string>> {
  const { ArchiveSource } = await import('../archive/source.js');
  const src = await ArchiveSource.open(file);
  try {
    return new Map(src.images().flatMap((i) => i.names.map((n) => [n.name ?? n.tag, i.ref] as [string, string])));
  } finally {
    await src.close();
  }
}

async function imagesIn(store: string): Promise<Array<{ name?: string; digest: string }>> {
  return JSON.parse(await must(['--store', store, 'images', '--json'])) as Array<{ name?: string; digest: string }>;
}

async function main(): Promise<number> {
  const expected = JSON.parse(await readFile(join(TESTDATA, 'expected.json'), 'utf8')) as { images: Record<string, { digest: string }> };
  const tags = Object.keys(expected.images);
  const work = await mkdtemp(join(tmpdir(), 'ferry-demo-'));
  env.FERRY_STATE_DIR = join(work, 'state');
  const steps: Step[] = [];
  const step = async <T>(name: string, fn: () => Promise<T>, detail: (r: T) => string): Promise<T> => {
    const t0 = performance.now();
    const r = await fn();
    steps.push({ name, ms: performance.now() - t0, detail: detail(r) });
    return r;
  };
  let registry: Awaited<ReturnType<typeof serve>> | undefined;
  const mismatches: string[] = [];
  try {
    registry = await step('start ferry serve', () => serve(join(work, 'registry')), (r) => r.host);
    const host = registry.host;
    const name = (repo: string, tag: string) => `${host}/${repo}:${tag}`;

    await step('seed it from testdata', async () => {
      for (const t of tags) await must(['copy', '-q', `oci:${join(TESTDATA, 'layout')}:${t}`, `docker://${name('demo/testdata', t)}`]);
    }, () => `${tags.length} images pushed`);

    const pulled = join(work, 'pulled');
    await step('pull every tag, every platform', () => must(['--store', pulled, 'pull', '-q', '-a', '--platform', 'all', `${host}/demo/testdata`]),
      () => `${tags.length} images into a fresh store`);

    const archive = join(work, 'images.tar.zst');
    await step('save to .tar.zst', () => must(['--store', pulled, 'save', '-q', '-o', archive, ...tags.map((t) => name('demo/testdata', t))]),
      () => '');
    steps.at(-1)!.detail = `${(await stat(archive)).size} bytes, docker-loadable OCI archive`;

    await step('verify the archive', () => must(['verify', archive]), (out) => (out.trim().split('\n').pop() ?? '').replace(`${work}/`, ''));

    const loaded = join(work, 'loaded');
    await step('load into a fresh store', () => must(['--store', loaded, 'load', '-q', '-i', archive]), () => `${tags.length} images`);

    await step('push under a new name', async () => {
      for (const t of tags) await must(['--store', loaded, 'push', '-q', name('demo/testdata', t), name('demo/restored', t)]);
    }, () => `${host}/demo/restored`);

    const back = join(work, 'back');
    await step('pull back by digest', async () => {
      for (const t of tags) await must(['--store', back, 'pull', '-q', '--platform', 'all', `${host}/demo/restored@${expected.images[t]!.digest}`]);
    }, () => `${tags.length} images`);

    const byName = async (store: string) => new Map((await imagesIn(store)).map((i) => [i.name, i.digest]));
    const [a, b] = await Promise.all([byName(pulled), byName(loaded)]);
    const c = new Set((await imagesIn(back)).map((i) => i.digest));
    for (const t of tags) {
      const want = expected.images[t]!.digest;
      const seen = [a.get(name('demo/testdata', t)), b.get(name('demo/testdata', t))];
      if (seen.some((d) => d !== want) || !c.has(want)) mismatches.push(`${t}: expected ${want}, pulled ${seen[0]}, loaded ${seen[1]}`);
    }
    await must(['--store', back, 'verify']);

    const backup = join(work, 'backup.tar.zst');
    await step('nightly sync into .tar.zst', () => must(['sync', `${host}/demo/testdata`, backup]), (out) => summary(out));
    await must(['verify', backup]);
    const archived = await readArchiveDigests(backup);
    for (const t of tags) {
      if (archived.get(name('demo/testdata', t)) !== expected.images[t]!.digest) mismatches.push(`${t}: the backup holds ${archived.get(name('demo/testdata', t))}`);
    }
    const before = (await stat(backup)).mtimeMs;
    await step('the same sync the next night', () => must(['sync', `${host}/demo/testdata`, backup]), (out) => summary(out));
    const untouched = (await stat(backup)).mtimeMs === before;
    steps.at(-1)!.detail += untouched ? '; archive untouched' : '; ARCHIVE REWRITTEN';
    if (!untouched) mismatches.push('the second sync rewrote an archive nothing had changed in');
  } catch (e) {
    console.error(`ferry demo failed: ${(e as Error).message}`);
    mismatches.push('a step failed');
  } finally {
    await registry?.stop();
    await rm(work, { recursive: true, force: true });
  }

  console.log('ferry demo: serve -> pull -> save .tar.zst -> verify -> load -> push -> pull by digest -> sync into .tar.zst, twice\n');
  for (const s of steps) console.log(`  ${s.name.padEnd(31)} ${s.ms.toFixed(0).padStart(6)} ms   ${s.detail}`);
  console.log(`\n  digests identical at every step: ${mismatches.length === 0 ? 'yes' : 'NO'}`);
  for (const m of mismatches) console.log(`    ${m}`);
  console.log(`  result: ${mismatches.length === 0 ? 'OK' : 'FAILED'}`);
  return mismatches.length === 0 ? 0 : 1;
}

process.exitCode = await main();
