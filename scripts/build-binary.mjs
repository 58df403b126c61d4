#!/usr/bin/env node
// Builds dist/ferry-linux-x64: one CommonJS bundle (esbuild) injected into a copy of the pinned
// Node binary with Node's single-executable-application support (postject). Offline: everything
// comes from node_modules.
import { execFileSync } from 'node:child_process';
import { copyFile, chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { lazyStringWidth } from './lazy-string-width.mjs';
import { noHttp2 } from './no-http2.mjs';
import { noPackageLookup } from './no-package-lookup.mjs';

const root = join(import.meta.dirname, '..');
const out = join(root, 'dist', 'sea');
await mkdir(out, { recursive: true });
const bundle = join(out, 'ferry.cjs');
await build({
  entryPoints: [join(root, 'src', 'cli', 'sea.ts')],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node22',
  outfile: bundle,
  // ESM dependencies read import.meta.url; in the bundle it is the binary's own path. The banner
  // goes before esbuild's "use strict", which then no longer counts: it says it again first, or
  // ferry's code (strict as ES modules, as bin/ferry runs it) would run in sloppy mode.
  define: { 'import.meta.url': '__ferry_import_meta_url', 'import.meta.dirname': '__dirname' },
  banner: { js: '"use strict";\nconst __ferry_import_meta_url = require("node:url").pathToFileURL(__filename).href;' },
  plugins: [lazyStringWidth, noHttp2, noPackageLookup],
  logLevel: 'warning',
});
const config = join(out, 'sea-config.json');
const blob = join(out, 'sea.blob');
await writeFile(config, JSON.stringify({ main: bundle, output: blob, disableExperimentalSEAWarning: true, useSnapshot: false, useCodeCache: true, execArgv: ['--max-semi-space-size=2'] }));
execFileSync(process.execPath, ['--experimental-sea-config', config], { stdio: 'inherit' });
const binary = join(root, 'dist', `ferry-${process.platform}-${process.arch}`);
await copyFile(process.execPath, binary);
await chmod(binary, 0o755);
// postject warns about ELF note sections it does not need; show its output only if it fails.
try {
  execFileSync(join(root, 'node_modules', '.bin', 'postject'), [binary, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2'], { stdio: 'pipe' });
} catch (e) {
  process.stderr.write(`${e.stdout ?? ''}${e.stderr ?? ''}`);
  throw e;
}
console.log(`built ${binary}`);
