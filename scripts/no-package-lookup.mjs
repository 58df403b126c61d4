// An esbuild plugin for both builds of the CLI (scripts/bundle.mjs, scripts/build-binary.mjs).
import { readFile } from 'node:fs/promises';

// yargs guesses a version as soon as it is created: it looks for a package.json in the directory
// of its own module, which in a bundle is no module directory, so it read every directory from
// the working directory up to / (readdirSync each). Run from a directory next to 200,000 files,
// `ferry --version` took 0.15 s instead of 0.04 and 19 MiB more. ferry gives yargs its version
// and never reads settings from a package.json: the bundle finds none, as yargs' browser build
// does. The build fails if yargs' code no longer matches.
const FIND_UP = '  findUp: escalade,';

export const noPackageLookup = {
  name: 'no-package-lookup',
  setup(b) {
    b.onLoad({ filter: /[\\/]yargs[\\/]lib[\\/]platform-shims[\\/]esm\.mjs$/ }, async (args) => {
      const text = await readFile(args.path, 'utf8');
      if (!text.includes(FIND_UP)) throw new Error(`${args.path}: no "${FIND_UP.trim()}" to replace; update scripts/no-package-lookup.mjs`);
      return { contents: text.replace(FIND_UP, '  findUp: () => undefined,'), loader: 'js' };
    });
  },
};
