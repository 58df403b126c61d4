import { homedir } from 'node:os';
import { join } from 'node:path';

/** Where ferry keeps what it remembers between runs: $FERRY_STATE_DIR, else $XDG_STATE_HOME/ferry, else ~/.local/state/ferry. */
export function stateDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_STATE_DIR) return env.FERRY_STATE_DIR;
  return join(env.XDG_STATE_HOME || join(homedir(), '.local', 'state'), 'ferry');
}
