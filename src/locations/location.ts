import { FerryError } from '../errors.js';
import { storeTagName } from '../store.js';
import type { TagName } from '../types.js';
import { OciLayout, type LayoutEntry } from './layout.js';

/**
 * Where an image is, skopeo style: `oci:DIR[:REF]` for an OCI layout directory; a plain image
 * name for the local store. Registry and archive transports arrive with their own modules.
 */
export type Location =
  | { kind: 'oci'; dir: string; ref?: string }
  | { kind: 'store'; ref: string };

const TRANSPORTS = ['oci:'];
const LATER = ['docker://', 'oci-archive:', 'docker-archive:', 'dir:', 'containers-storage:', 'docker-daemon:'];

export function parseLocation(text: string): Location {
  if (text.startsWith('oci:')) {
    const rest = text.slice(4);
    if (rest === '') throw new FerryError('USAGE', `location "${text}" needs a directory: oci:DIR[:TAG]`);
    // The reference follows the last ':' unless that part looks like a path.
    const i = rest.lastIndexOf(':');
    if (i > 0 && !rest.slice(i + 1).includes('/')) {
      const ref = rest.slice(i + 1);
      if (ref === '') throw new FerryError('USAGE', `location "${text}" ends with ':' but names no tag`);
      return { kind: 'oci', dir: rest.slice(0, i), ref };
    }
    return { kind: 'oci', dir: rest };
  }
  const later = LATER.find((p) => text.startsWith(p));
  if (later) {
    throw new FerryError('USAGE', `the ${later.replace(/:\/*$/, '')} transport is not supported yet (supported: ${TRANSPORTS.join(', ')} and store image names)`);
  }
  return { kind: 'store', ref: text };
}

/** The names a store entry carries, as a TagName. */
export function entryTagName(e: LayoutEntry): TagName | undefined {
  return e.tag ? { tag: e.tag, ...(e.name ? { name: e.name } : {}) } : undefined;
}

/** Opens a layout location for reading and picks the reference to copy. */
export async function openLayoutSource(loc: Extract<Location, { kind: 'oci' }>): Promise<{ layout: OciLayout; ref: string }> {
  const layout = await OciLayout.open(loc.dir);
  if (loc.ref) return { layout, ref: loc.ref };
  const entries = await layout.entries();
  if (entries.length === 1) return { layout, ref: entries[0]!.descriptor.digest };
  throw new FerryError('USAGE', `${loc.dir} holds ${entries.length} images; name one as oci:${loc.dir}:TAG`, {
    hint: entries.length ? `tags: ${entries.map((e) => e.tag ?? e.descriptor.digest).slice(0, 8).join(', ')}` : undefined,
  });
}

/** The name a copy gets at a destination: explicit when the location names one, else the source's. */
export function destinationName(loc: Location, sourceName: TagName | undefined): TagName | undefined {
  if (loc.kind === 'store') return storeTagName(loc.ref);
  if (loc.ref) return { tag: loc.ref };
  return sourceName;
}
