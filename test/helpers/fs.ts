import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll } from 'vitest';

export const TESTDATA = join(import.meta.dirname, '..', '..', 'testdata', 'layout');

const made: string[] = [];
afterAll(async () => {
  for (const d of made.splice(0)) await rm(d, { recursive: true, force: true });
});

/** A fresh temporary directory removed after the test file. */
export async function tempDir(prefix = 'ferry-test-'): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), prefix));
  made.push(d);
  return d;
}

/** A private copy of the testdata layout, safe to damage. */
export async function testdataCopy(): Promise<string> {
  const d = join(await tempDir(), 'layout');
  await cp(TESTDATA, d, { recursive: true });
  return d;
}

/** Every file under `dir` whose name marks it as a temp file or a partial download. */
export async function tempFilesIn(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.name.startsWith('.tmp-') || e.name.startsWith('.partial-')) out.push(join(e.parentPath, e.name));
  }
  return out;
}

export async function flipByte(path: string, offset = 10): Promise<void> {
  const b = await readFile(path);
  b[offset % b.length] ^= 0xff;
  await writeFile(path, b);
}
