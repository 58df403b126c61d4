import { enableCompileCache } from 'node:module';
import { compileCacheDir } from '../util/state-dir.js';
import { mkdirs } from '../util/mkdirs.js';

// Node keeps the bundle's compiled code there, so later runs skip compiling ~1.4 MB of JavaScript
// (~15 ms of every command). Imported only after this, or the cache would not cover it. Failing
// (a read-only home) is silent; NODE_DISABLE_COMPILE_CACHE=1 turns it off. The directory is made
// here first: Node's own making of it spun forever under /proc (HOME or XDG_CACHE_HOME there),
// every command with it, --version too.
const dir = compileCacheDir();
if (dir && process.env.NODE_DISABLE_COMPILE_CACHE === undefined && (await mkdirs(dir, 0o700).then(() => true, () => false))) enableCompileCache(dir);
const { run } = await import('./main.js');
await run();
