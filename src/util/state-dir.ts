import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/** Where ferry keeps what it remembers between runs: $FERRY_STATE_DIR, else $XDG_STATE_HOME/ferry, else ~/.local/state/ferry. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_STATE_DIR) return env.FERRY_STATE_DIR;
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'ferry');
}

/**
 * Node's compile cache for the CLI: $XDG_CACHE_HOME/ferry/compile, else ~/.cache/ferry/compile.
 * Per user, never a shared temporary directory: what it holds is run as code. None without a home.
 */
export function compileCacheDir(env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env.XDG_CACHE_HOME && isAbsolute(env.XDG_CACHE_HOME)) return join(env.XDG_CACHE_HOME, 'ferry', 'compile');
  let home: string;
  try {
    home = homedir();
  } catch {
    return undefined;
  }
  return home ? join(home, '.cache', 'ferry', 'compile') : undefined;
}
