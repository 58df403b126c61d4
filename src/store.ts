import { homedir } from 'node:os';
import { join } from 'node:path';
import { OciLayout } from './locations/layout.js';
import { formatReference, parseReference } from './oci/reference.js';
import type { TagName } from './types.js';

/** `$FERRY_STORE`, else `$XDG_DATA_HOME/ferry/store`, else `~/.local/share/ferry/store`. */
export function defaultStoreDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.FERRY_STORE) return env.FERRY_STORE;
  const data = env.XDG_DATA_HOME || join(homedir(), '.local', 'share');
  return join(data, 'ferry', 'store');
}

export interface StoreOptions {
  dir?: string;
  /** Create it if needed and check it is writable. */
  write?: boolean;
}

export function openStore(opts: StoreOptions = {}): Promise<OciLayout> {
  return OciLayout.open(opts.dir ?? defaultStoreDir(), { create: opts.write });
}

/**
 * The name an image gets in the store: the full normalised reference, as Docker 25 and containerd
 * record it. A reference by digest alone has no name (undefined: stored untagged).
 */
export function storeTagName(ref: string): TagName | undefined {
  const r = parseReference(ref);
  if (!r.tag) return undefined;
  return { tag: r.tag, name: formatReference({ domain: r.domain, path: r.path, tag: r.tag }) };
}
