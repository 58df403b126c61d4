import { FerryError } from '../../errors.js';
import type { Descriptor } from '../../oci/manifest.js';
import { OciLayout } from '../../locations/layout.js';
import { openLayoutSource } from '../../locations/layout-transport.js';
import { splitPathRef, transportFor } from '../../locations/location.js';

/** An image named on the command line for local inspection: a store name or digest, or `oci:DIR[:TAG]`. */
export async function openImage(text: string, store: () => Promise<OciLayout>): Promise<{ layout: OciLayout; descriptor: Descriptor; ref: string }> {
  const { transport, rest } = transportFor(text);
  if (transport.prefix === 'oci:') {
    const { path, ref } = splitPathRef(rest, 'oci:DIR[:TAG]');
    const { source, ref: digest } = await openLayoutSource(path, ref);
    return { layout: source, descriptor: await source.resolve(digest), ref: digest };
  }
  if (transport.prefix !== '') throw new FerryError('USAGE', `${transport.prefix} locations cannot be used here yet; use a store name or oci:DIR[:TAG]`);
  const layout = await store();
  return { layout, descriptor: await layout.resolve(rest), ref: rest };
}
