#!/usr/bin/env node
// Bundles the CLI into dist/bundle/ (run.js plus one chunk per lazily loaded command group), which
// bin/ferry runs. Against the ~150 modules tsc writes it resolves far fewer files at start and
// keeps 2-5 MiB less resident; splitting keeps each command's code out of the others' runs (one
// single-file bundle costs every command ~8 MiB more). The library (dist/index.js) stays unbundled.
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { build } from 'esbuild';

const root = join(import.meta.dirname, '..');

// yargs' string-width copies each build an Intl.Segmenter when loaded, which maps ICU's break
// data: ~2.7 MiB resident in every run, and the newest also compiles /^\p{RGI_Emoji}$/v, which
// took 33 ms of every run's start (`ferry --version` 0.15 -> 0.12 s). Only help output measures
// strings: build both on first use. If a new string-width no longer matches, it is merely slower.
const lazySegmenter = {
  name: 'lazy-segmenter',
  setup(b) {
    b.onLoad({ filter: /[\\/]string-width[\\/]index\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      const segmenter = 'const segmenter = { segment: (s) => (globalThis.__ferrySegmenter ??= new Intl.Segmenter()).segment(s) };';
      const emoji = 'const rgiEmojiRegex = { test: (s) => (globalThis.__ferryRgiEmoji ??= new RegExp("^\\\\p{RGI_Emoji}$", "v")).test(s) };';
      const contents = text
        .replace(/^const segmenter = new Intl\.Segmenter\(\);$/m, segmenter)
        .replace(/^const rgiEmojiRegex = \/\^\\p\{RGI_Emoji\}\$\/v;$/m, emoji);
      return { contents, loader: 'js' };
    });
  },
};
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
  plugins: [lazySegmenter],
  logLevel: 'warning',
});
