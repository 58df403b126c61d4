import { execFileSync } from 'node:child_process';
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { Script } from 'node:vm';
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

  // yargs looked for a package.json from the working directory up to / at every start (readdirSync
  // of each directory): 0.1 s and 19 MiB more beside 200,000 files. Both builds bundle yargs alike.
  it('lists no directory at start, from any working directory (binary and bin/ferry)', async () => {
    const dir = await tempDir();
    const cwd = join(dir, 'work', 'here');
    await mkdir(cwd, { recursive: true });
    const preload = join(dir, 'count-readdir.cjs');
    await writeFile(preload, [
      "const fs = require('node:fs');",
      'const readdirSync = fs.readdirSync;',
      "fs.readdirSync = function (p, ...rest) { process.stderr.write(`readdirSync ${p}\\n`); return readdirSync.call(this, p, ...rest); };",
    ].join('\n'));
    const env = { PATH: noNode, HOME: dir, NODE_OPTIONS: `--require ${preload}` };
    for (const binary of [BINARY, undefined]) {
      for (const args of [['--version'], ['--store', join(dir, 'store'), 'images']]) {
        const r = await ferry(args, { env: binary ? env : { ...env, PATH: process.env.PATH }, binary, cwd });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stderr).not.toContain('readdirSync');
      }
    }
  });

  // esbuild's "use strict" came after the banner, where it is no directive: the binary ran ferry's
  // code in sloppy mode (bin/ferry runs it as ES modules, always strict). A strict script may not
  // hold a `with` statement; compiling runs nothing.
  it('runs its bundle in strict mode, as bin/ferry runs the ES modules', async () => {
    const bundle = await readFile(join(ROOT, 'dist', 'sea', 'ferry.cjs'), 'utf8');
    expect(() => new Script(`${bundle}\nwith ({}) {}`)).toThrow(/strict mode/i);
  });
});
