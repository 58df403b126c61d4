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

  it('runs with no node on PATH: copy into a store, save .tar.zst, verify, load, verify', async () => {
    expect((await stat(BINARY)).isFile()).toBe(true);
    const env = { PATH: noNode };
    const exp = await testdataImages();
    const run = (args: string[]) => ferry(args, { env, binary: BINARY });
    const version = await run(['--version']);
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
    // Nothing on stderr: a V8 flag that changes code generation made V8 reject the binary's code
    // cache, with "Warning: Code cache data rejected." on every run.
    expect(version.stderr).toBe('');
    const store = join(await tempDir(), 'store');
    const copied = await run(['--store', store, 'copy', `oci:${TESTDATA}:multi`, 'example.com/sea/multi:1']);
    expect(copied.code, copied.stderr).toBe(0);
    const archive = join(await tempDir(), 'images.tar.zst');
    const saved = await run(['--store', store, 'save', '-o', archive, 'example.com/sea/multi:1']);
    expect(saved.code, saved.stderr).toBe(0);
    expect((await run(['verify', archive])).code).toBe(0);
    const loaded = join(await tempDir(), 'loaded');
    const load = await run(['--store', loaded, 'load', '-i', archive]);
    expect(load.code, load.stderr).toBe(0);
    expect(load.stdout).toContain('Loaded image: example.com/sea/multi:1');
    const images = JSON.parse((await run(['--store', loaded, 'images', '--json'])).stdout) as Array<{ digest: string }>;
    expect(images.map((i) => i.digest)).toEqual([exp.multi.digest]);
    expect((await run(['--store', loaded, 'verify'])).code).toBe(0);
  });
});
