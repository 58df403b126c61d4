import { stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { FerryError, isFerryError } from './errors.js';
import { join } from 'node:path';
import { OciLayout, type LayoutEntry } from './locations/layout.js';
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

export const STORE_HINT = 'the store is --store DIR, else $FERRY_STORE, else $XDG_DATA_HOME/ferry/store or ~/.local/share/ferry/store: check which one you meant';

/**
 * The store for a command that only changes what is there (tag, rmi, gc): undefined when it does
 * not exist, and never created (`readOnly`: opened for reading only, as gc --dry-run does). A directory that is not a layout is refused rather than made one:
 * an empty index.json over blobs already there would make gc delete every one of them.
 */
export async function openStoreToChange(dir: string = defaultStoreDir(), o: { readOnly?: boolean; indexMayBeMissing?: boolean } = {}): Promise<OciLayout | undefined> {
  const st = await stat(dir).catch(() => undefined);
  if (!st) return undefined;
  return OciLayout.open(dir, o.readOnly ? {} : { create: true, existing: true, indexMayBeMissing: o.indexMayBeMissing }).catch((e: unknown) => {
    if (!isFerryError(e, 'NOT_FOUND')) throw e;
    const what = st.isDirectory() ? 'is not an OCI image layout (no oci-layout file)' : 'is not a directory';
    throw new FerryError('NOT_FOUND', `the store ${dir} ${what}; nothing was changed`, { hint: STORE_HINT });
  });
}

/** What rmi and tag say of an image in a store that does not exist (openStoreToChange gave none). */
export function imageWithoutStore(image: string, dir: string = defaultStoreDir()): FerryError {
  return new FerryError('NOT_FOUND', `image "${image}" not found: the store ${dir} does not exist`, { hint: STORE_HINT });
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

/**
 * The store name `text` gives a new image (copy, import, load --tag): NAME[:TAG]. A digest after
 * it was ignored (`NAME@DIGEST` stored the image unnamed, `NAME:TAG@DIGEST` under the tag, whatever
 * the digest): an image's digest is its own, never chosen, so one there is refused.
 */
export function newStoreName(text: string, what: string): TagName | undefined {
  if (parseReference(text).digest) {
    throw new FerryError('USAGE', `${what} "${text}" holds a digest; a new name is NAME[:TAG] (an image's digest is its own)`, { hint: `drop ${text.slice(text.lastIndexOf('@'))}` });
  }
  return storeTagName(text);
}

/** A name a command gave an image that was another image's until then. */
export interface MovedName {
  name: string;
  previous: string;
  /** The previous image has no name left (the next gc or rmi deletes it). */
  orphaned: boolean;
}

/** The names of `images` that `before` gave other images, judged against the store `after`. */
export function movedNames(before: LayoutEntry[], after: LayoutEntry[], images: Array<{ digest: string; names: TagName[] }>): MovedName[] {
  const was = new Map(before.flatMap((e) => (e.name ? [[e.name, e.descriptor.digest] as const] : [])));
  const named = new Set(after.filter((e) => e.name).map((e) => e.descriptor.digest));
  const out: MovedName[] = [];
  for (const i of images) {
    for (const n of i.names) {
      const previous = n.name === undefined ? undefined : was.get(n.name);
      if (previous && previous !== i.digest) out.push({ name: n.name!, previous, orphaned: !named.has(previous) });
    }
  }
  return out;
}
