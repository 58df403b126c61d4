import { execFileSync } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { testdataImages } from './helpers/expected-images.js';

const ROOT = join(import.meta.dirname, '..');
const BINARY = join(ROOT, 'dist', `ferry-${process.platform}-${process.arch}`);

describe('single-file binary (Node SEA)', () => {
  let noNode: string;
  beforeAll(async () => {
    execFileSync(join(ROOT, 'node_modules', '.bin', 'node'), [join(ROOT, 'scripts', 'build-binary.mjs')], { stdio: 'pipe', timeout: 240_000 });
    noNode = await tempDir('ferry-no-node-');
  }, 300_000);

  it('runs with no node on PATH: copy, verify, and a round trip through an OCI layout', async () => {
    expect((await stat(BINARY)).isFile()).toBe(true);
    const env = { PATH: noNode };
    const exp = await testdataImages();
    const run = (args: string[]) => ferry(args, { env, binary: BINARY });
    expect((await run(['--version'])).stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    const store = join(await tempDir(), 'store');
    const copied = await run(['--store', store, 'copy', `oci:${TESTDATA}:multi`, 'example.com/sea/multi:1']);
    expect(copied.code, copied.stderr).toBe(0);
    const out = join(await tempDir(), 'out');
    const back = await run(['--store', store, 'copy', 'example.com/sea/multi:1', `oci:${out}:m`]);
    expect(back.code, back.stderr).toBe(0);
    expect(back.stdout).toContain(exp.multi.digest);
    expect((await run(['verify', out])).code).toBe(0);
  });
});
