#!/usr/bin/env node
// Bundles the CLI into dist/bundle/ (run.js plus one chunk per lazily loaded command group), which
// bin/ferry runs. Against the ~150 modules tsc writes it resolves far fewer files at start and
// keeps 2-5 MiB less resident; splitting keeps each command's code out of the others' runs (one
// single-file bundle costs every command ~8 MiB more). The library (dist/index.js) stays unbundled.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';
import { lazyStringWidth } from './lazy-string-width.mjs';
import { noHttp2 } from './no-http2.mjs';
import { noPackageLookup } from './no-package-lookup.mjs';

const root = join(import.meta.dirname, '..');

const outdir = join(root, 'dist', 'bundle');
await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: [join(root, 'src', 'cli', 'run.ts')],
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  outdir,
  // CommonJS dependencies (yargs' helpers, undici) call require(); give each chunk one.
  banner: { js: "import { createRequire as __ferryRequire } from 'node:module'; const require = __ferryRequire(import.meta.url);" },
  legalComments: 'none',
  plugins: [lazyStringWidth, noHttp2, noPackageLookup],
  logLevel: 'warning',
});
