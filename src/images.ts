import { FerryError, toFerryError } from './errors.js';
import { readVerified } from './blob/verify.js';
import { walk } from './graph.js';
import type { Digest } from './oci/digest.js';
import { parseConfig, type Descriptor, type ImageConfig } from './oci/manifest.js';
import { formatPlatform, isAttestation, normalizePlatform } from './oci/platform.js';
import type { LayoutEntry, OciLayout } from './locations/layout.js';
import type { Source } from './types.js';

export interface ImageSummary {
  name?: string;
  tag?: string;
  digest: Digest;
  mediaType: string;
  platforms: string[];
  /** Bytes of every distinct blob the image reaches (what it occupies, shared blobs included). */
  size: number;
  /** Set when the image's graph could not be read; `ferry verify` tells more. */
  damaged?: string;
}

export async function readConfig(src: Source, d: Descriptor): Promise<ImageConfig> {
  if (d.size > 4 * 1024 * 1024) throw new FerryError('TOO_LARGE', `config ${d.digest} exceeds limit`);
  const bytes = await readVerified(await src.fetch(d), d, `config ${d.digest}`);
  return parseConfig(bytes, `config ${d.digest}`);
}

export async function summarize(layout: OciLayout, entry: LayoutEntry): Promise<ImageSummary> {
  const seen = new Map<Digest, number>();
  const platforms = new Set<string>();
  await walk(layout, entry.descriptor, {
    onDocument: async (n) => {
      seen.set(n.descriptor.digest, n.descriptor.size);
      if (n.doc.kind === 'manifest') {
        if (n.descriptor.platform) {
          if (!isAttestation(n.descriptor)) platforms.add(formatPlatform(normalizePlatform(n.descriptor.platform)));
        } else if (n.depth === 0) {
          const c = await readConfig(layout, n.doc.manifest.config).catch(() => undefined);
          if (c) platforms.add(formatPlatform(normalizePlatform({ os: c.os, architecture: c.architecture, variant: c.variant })));
        }
      }
    },
    onBlob: (d) => void seen.set(d.digest, d.size),
  });
  let size = 0;
  for (const s of seen.values()) size += s;
  return { name: entry.name, tag: entry.tag, digest: entry.descriptor.digest, mediaType: entry.descriptor.mediaType, platforms: [...platforms], size };
}

export async function listImages(layout: OciLayout): Promise<ImageSummary[]> {
  const out: ImageSummary[] = [];
  for (const e of await layout.entries()) {
    try {
      out.push(await summarize(layout, e));
    } catch (err) {
      const damaged = toFerryError(err).message;
      out.push({ name: e.name, tag: e.tag, digest: e.descriptor.digest, mediaType: e.descriptor.mediaType, platforms: [], size: 0, damaged });
    }
  }
  return out;
}
