import { FerryError } from '../../errors.js';
import type { Descriptor } from '../../oci/manifest.js';
import { OciLayout } from '../../locations/layout.js';
import { openLayoutSource } from '../../locations/layout-transport.js';
import { locatePathRef, openSource, transportFor, type LocationContext } from '../../locations/location.js';
import type { Source } from '../../types.js';

/**
 * An image named on the command line for local inspection: a store name or digest, or
 * `oci:DIR[:TAG]`; with the name it has there (the one the reference matched).
 */
export async function openImage(text: string, store: () => Promise<OciLayout>): Promise<{ layout: OciLayout; descriptor: Descriptor; ref: string; name?: string }> {
  const { transport, rest } = transportFor(text);
  if (transport.prefix === 'oci:') {
    const { path, ref } = await locatePathRef(rest, 'oci:DIR[:TAG]');
    const { source, ref: digest, name } = await openLayoutSource(path, ref);
    return { layout: source, descriptor: await source.resolve(digest), ref: digest, name: name?.name ?? name?.tag };
  }
  if (transport.prefix !== '') throw new FerryError('USAGE', `${transport.prefix} locations cannot be used here yet; use a store name or oci:DIR[:TAG]`);
  const layout = await store();
  const { descriptor, entry } = await layout.resolveEntry(rest, { store: true });
  return { layout, descriptor, ref: rest, name: entry?.name ?? entry?.tag };
}

/** Any location (a registry, an archive, …) opened and resolved to its root; close() when done. */
export async function openResolved(text: string, ctx: LocationContext): Promise<{ source: Source; descriptor: Descriptor; name: string | undefined; close: () => Promise<void> }> {
  const opened = await openSource(text, ctx);
  try {
    const descriptor = await opened.source.resolve(opened.ref);
    return { source: opened.source, descriptor, name: opened.name?.name ?? opened.name?.tag, close: () => opened.source.close() };
  } catch (e) {
    await opened.source.close();
    throw e;
  }
}
