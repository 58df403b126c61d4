/**
 * `npm run demo`: the main job on what ships with the repository. Copies the testdata images into
 * a fresh store, verifies every blob, lists the store and prints a short report. Exits non-zero if
 * any step fails or a digest differs.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { copy } from '../copy.js';
import { listImages } from '../images.js';
import { OciLayout } from '../locations/layout.js';
import { verifyLayout } from '../verify.js';

const TESTDATA = join(import.meta.dirname, '..', '..', 'testdata');

interface Step {
  name: string;
  ms: number;
  detail: string;
}

async function timed<T>(steps: Step[], name: string, fn: () => Promise<T>, detail: (r: T) => string): Promise<T> {
  const t0 = performance.now();
  const r = await fn();
  steps.push({ name, ms: performance.now() - t0, detail: detail(r) });
  return r;
}

async function main(): Promise<number> {
  const expected = JSON.parse(await readFile(join(TESTDATA, 'expected.json'), 'utf8')) as {
    images: Record<string, { name: string; digest: string }>;
  };
  const tags = Object.keys(expected.images);
  const work = await mkdtemp(join(tmpdir(), 'ferry-demo-'));
  const steps: Step[] = [];
  try {
    const src = await OciLayout.open(join(TESTDATA, 'layout'));
    const store = await OciLayout.open(join(work, 'store'), { create: true });
    const roots = tags.map((t) => ({ ref: t, names: [{ tag: t, name: expected.images[t]!.name }] }));

    const report = await timed(steps, 'copy testdata -> fresh store', () => copy(src, store, roots),
      (r) => `${r.images.length} images, ${r.blobs.copied} blobs, ${r.blobs.bytesCopied} bytes, ${r.manifests.copied} manifests`);
    const rerun = await timed(steps, 'copy again (nothing to move)', () => copy(src, store, roots),
      (r) => `${r.blobs.copied} blobs copied, ${r.blobs.skipped} already present`);
    const verify = await timed(steps, 'verify every blob', () => verifyLayout(store),
      (v) => `${v.blobs} blobs, ${v.bytes} bytes re-hashed, ${v.problems.length} problems`);
    const images = await timed(steps, 'list the store', () => listImages(store), (l) => `${l.length} images`);
    await store.close();

    const same = report.images.every((i, n) => i.digest === expected.images[tags[n]!]!.digest);
    const ok = same && rerun.blobs.copied === 0 && verify.problems.length === 0 && images.length === tags.length;

    console.log('ferry demo: copy -> verify -> list, on the testdata images\n');
    for (const s of steps) console.log(`  ${s.name.padEnd(32)} ${s.ms.toFixed(0).padStart(5)} ms   ${s.detail}`);
    console.log('\n  store contents:');
    for (const i of images) console.log(`    ${(i.name ?? i.tag ?? '<none>').padEnd(40)} ${i.digest.slice(7, 19)}  ${i.platforms.join(',').padEnd(24)} ${i.size} B`);
    for (const p of verify.problems) console.log(`  PROBLEM: ${p.message}`);
    console.log(`\n  digests identical to the source: ${same ? 'yes' : 'NO'}`);
    console.log(`  result: ${ok ? 'OK' : 'FAILED'}`);
    return ok ? 0 : 1;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

process.exitCode = await main().catch((e: unknown) => {
  console.error(`ferry demo failed: ${(e as Error).message}`);
  return 1;
});
