// An esbuild plugin for both builds of the CLI (scripts/bundle.mjs, scripts/build-binary.mjs).
import { readFile } from 'node:fs/promises';

// undici's HTTP/2 client loads node:http2 (and with it node:tls) as soon as it is itself loaded:
// ~14 ms of every command that talks to a registry, ~4 ms even where TLS is needed anyway. ferry
// never lets undici use HTTP/2 (allowH2: false, src/locations/registry/http.ts), so the bundle
// gives that module what undici already falls back to where Node lacks http2. The build fails if
// undici's code no longer matches, rather than quietly loading it again.
const LOAD = "http2 = require('node:http2')";

export const noHttp2 = {
  name: 'no-http2',
  setup(b) {
    b.onLoad({ filter: /[\\/]undici[\\/]lib[\\/]dispatcher[\\/]client-h2\.js$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!text.includes(LOAD)) throw new Error(`${args.path}: no "${LOAD}" to leave out; update scripts/no-http2.mjs`);
      return { contents: text.replace(LOAD, "http2 = { constants: {} }"), loader: 'js' };
    });
  },
};
