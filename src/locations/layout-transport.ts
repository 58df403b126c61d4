import { FerryError } from '../errors.js';
import { tryParseReference } from '../oci/reference.js';
import { storeTagName, newStoreName } from '../store.js';
import type { TagName } from '../types.js';
import { OciLayout, type LayoutEntry } from './layout.js';
import { locatePathRef, type OpenedSource, type Transport } from './transport.js';

/** The names a layout entry carries, as a TagName. */
export function entryTagName(e: LayoutEntry): TagName | undefined {
  return e.tag ? { tag: e.tag, ...(e.name ? { name: e.name } : {}) } : undefined;
}

/** Opens a layout for reading; without a reference, a layout holding exactly one image needs none. */
export async function openLayoutSource(dir: string, ref: string | undefined): Promise<OpenedSource & { source: OciLayout }> {
  const layout = await OciLayout.open(dir);
  const entries = await layout.entries();
  if (!ref) {
    if (entries.length !== 1) {
      throw new FerryError('USAGE', `${dir} holds ${entries.length} images; name one as oci:${dir}:TAG`, {
        hint: entries.length ? `tags: ${entries.map((e) => e.tag ?? e.descriptor.digest).slice(0, 8).join(', ')}` : undefined,
      });
    }
    return { source: layout, ref: entries[0]!.descriptor.digest, name: entryTagName(entries[0]!) };
  }
  const { descriptor, entry } = await layout.resolveEntry(ref);
  return { source: layout, ref: descriptor.digest, name: entry ? entryTagName(entry) : undefined };
}

/** `oci:DIR[:TAG]` — an OCI image layout directory. */
export const layoutTransport: Transport = {
  prefix: 'oci:',
  describe: 'oci:DIR[:TAG]  an OCI image layout directory',
  async openSource(rest) {
    const { path, ref } = await locatePathRef(rest, 'oci:DIR[:TAG]');
    return openLayoutSource(path, ref);
  },
  async openSink(rest) {
    const { path, ref } = await locatePathRef(rest, 'oci:DIR[:TAG]');
    const sink = await OciLayout.open(path, { create: true });
    return { sink, nameFor: (src) => (ref ? { tag: ref } : src) };
  },
};

/**
 * A plain name is looked up in the store, as docker does; people who meant the registry (`ferry
 * save registry.example/app:1`) are told how to say so.
 */
function notInStore(e: unknown, rest: string): unknown {
  // Not for digests and short ids (what `ferry images` shows): they name no repository.
  if (!(e instanceof FerryError) || e.code !== 'NOT_FOUND' || /^([a-z0-9]+:)?[0-9a-f]{12,}$/.test(rest) || tryParseReference(rest) === undefined) return e;
  const registry = `to read it straight from its registry, write docker://${rest}`;
  return new FerryError(e.code, e.message, { cause: e.cause, hint: e.hint ? `${e.hint}; ${registry}` : registry });
}

/** A plain image name: the local store, named the way docker names images. */
export const storeTransport: Transport = {
  prefix: '',
  describe: 'NAME[:TAG]  an image in the local store',
  async openSource(rest, ctx) {
    const layout = await OciLayout.open(ctx.storeDir);
    const { descriptor, entry, byName } = await layout.resolveEntry(rest, { store: true }).catch((e: unknown) => {
      throw notInStore(e, rest);
    });
    // Named by digest or short id: the image's own name, not the digest read as a name.
    const name = byName ? storeTagName(rest) : undefined;
    return { source: layout, ref: descriptor.digest, name: name ?? (entry ? entryTagName(entry) : undefined) };
  },
  async openSink(rest, ctx) {
    // Before the store is opened: a refused name leaves nothing made.
    const name = newStoreName(rest, 'the destination');
    const sink = await OciLayout.open(ctx.storeDir, { create: true });
    return { sink, nameFor: () => name };
  },
};
