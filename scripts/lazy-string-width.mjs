// An esbuild plugin for both builds of the CLI (scripts/bundle.mjs, scripts/build-binary.mjs).
import { readFile } from 'node:fs/promises';

// yargs' string-width copies each build an Intl.Segmenter when loaded, which maps ICU's break
// data: ~2.7 MiB resident in every run, and the newest also compiles /^\p{RGI_Emoji}$/v, which
// took 33 ms of every run's start (`ferry --version` 0.15 -> 0.11 s). Only help output measures
// strings: build both on first use. If a new string-width no longer matches, it is merely slower.
export const lazyStringWidth = {
  name: 'lazy-string-width',
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
