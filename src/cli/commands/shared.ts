import type { Descriptor } from '../../oci/manifest.js';
import { OciLayout } from '../../locations/layout.js';
import { openLayoutSource, parseLocation } from '../../locations/location.js';

/** An image named on the command line: a store name or digest, or an `oci:DIR[:TAG]` location. */
export async function openImage(text: string, store: () => Promise<OciLayout>): Promise<{ layout: OciLayout; descriptor: Descriptor; ref: string }> {
  const loc = parseLocation(text);
  if (loc.kind === 'oci') {
    const { layout, ref } = await openLayoutSource(loc);
    return { layout, descriptor: await layout.resolve(ref), ref };
  }
  const layout = await store();
  return { layout, descriptor: await layout.resolve(loc.ref), ref: loc.ref };
}
