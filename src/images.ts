import { stat } from 'node:fs/promises';
import { FerryError, toFerryError } from './errors.js';
import { readVerified } from './blob/verify.js';
import { walk } from './graph.js';
import type { Digest } from './oci/digest.js';
import { parseConfig, type Descriptor, type ImageConfig } from './oci/manifest.js';
import { formatPlatform, isAttestation, normalizePlatform } from './oci/platform.js';
import type { LayoutEntry, OciLayout } from './locations/layout.js';
import type { Source } from './types.js';
import { forEachLimited } from './util/limit.js';

export interface ImageSummary {
  name?: string;
  tag?: string;
  digest: Digest;
  mediaType: string;
  platforms: string[];
  /** Bytes of every distinct blob the image reaches (what it occupies, shared blobs included). */
  size: number;
  /** Set when the image's graph could not be read or a blob it names is missing; `ferry verify` tells more. */
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
  const blobs = new Map<Digest, { descriptor: Descriptor; what: string }>();
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
    onBlob: (d, parent) => {
      seen.set(d.digest, d.size);
      const config = parent.doc.kind === 'manifest' && parent.doc.manifest.config.digest === d.digest;
      blobs.set(d.digest, { descriptor: d, what: config ? 'config' : parent.doc.kind === 'manifest' ? 'layer' : 'blob' });
    },
    // Counted, but not required: foreign layers live at their URLs (as verify accepts).
    onForeign: (d) => void seen.set(d.digest, d.size),
  });
  let size = 0;
  for (const s of seen.values()) size += s;
  const summary: ImageSummary = { name: entry.name, tag: entry.tag, digest: entry.descriptor.digest, mediaType: entry.descriptor.mediaType, platforms: [...platforms], size };
  const lost = await missingBlobs(layout, [...blobs.values()]);
  if (lost.length) summary.damaged = lost.length === 1 ? lost[0]! : `${lost.length} blobs missing or of the wrong size: ${lost.slice(0, 3).join('; ')}${lost.length > 3 ? '; …' : ''}`;
  return summary;
}

/** A stat of each blob (not a read): what is missing, or of another size than its descriptor says. */
async function missingBlobs(layout: OciLayout, blobs: Array<{ descriptor: Descriptor; what: string }>): Promise<string[]> {
  const lost: string[] = [];
  await forEachLimited(blobs, STAT_JOBS, async ({ descriptor: d, what }) => {
    const st = await stat(layout.blobPath(d.digest)).catch(() => undefined);
    if (!st?.isFile()) lost.push(`${what} ${d.digest} is missing from the store`);
    else if (st.size !== d.size) lost.push(`${what} ${d.digest} is ${st.size} bytes, ${d.size} expected`);
  });
  return lost.sort();
}

const STAT_JOBS = 16;

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
