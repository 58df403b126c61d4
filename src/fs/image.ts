import { readVerified } from '../blob/verify.js';
import { FerryError } from '../errors.js';
import { readDocument } from '../graph.js';
import { openSource } from '../locations/location.js';
import { MAX_JSON_BYTES, parseConfig, type Descriptor, type ImageConfig, type ImageManifest, type Platform } from '../oci/manifest.js';
import { isLayerType, isManifestLike } from '../oci/mediatypes.js';
import { formatPlatform, hostPlatform, normalizePlatform, samePlatform, selectPlatforms } from '../oci/platform.js';
import type { Digest } from '../oci/digest.js';
import type { Source } from '../types.js';
import type { LayerRef } from './layers.js';

export interface OpenedImage {
  source: Source;
  manifest: Descriptor;
  config: ImageConfig;
  layers: LayerRef[];
  platform: string;
}

const MAX_NESTING = 4;

/**
 * Opens an image through the location table (store name, oci:, and whatever transports exist)
 * and reads its manifest and config, verified. An index is narrowed to one platform.
 */
export async function openImage(image: string, o: { storeDir: string; platform?: Platform; signal?: AbortSignal }): Promise<OpenedImage> {
  const opened = await openSource(image, { storeDir: o.storeDir, signal: o.signal });
  try {
    const src = opened.source;
    let d = await src.resolve(opened.ref);
    let doc = await readDocument(src, d, { signal: o.signal });
    const wanted = o.platform ?? hostPlatform();
    const fromIndex = doc.kind === 'index';
    for (let depth = 0; doc.kind === 'index'; depth++) {
      if (depth >= MAX_NESTING) throw new FerryError('TOO_LARGE', `${image}: index nesting exceeds limit of ${MAX_NESTING} levels`);
      const candidates = doc.index.manifests.filter((m) => isManifestLike(m.mediaType));
      const [pick] = selectPlatforms(candidates, [wanted], image, { oneOnly: true });
      d = pick!;
      doc = await readDocument(src, d, { signal: o.signal });
    }
    const manifest: ImageManifest = doc.manifest;
    const cfgDesc = manifest.config;
    if (cfgDesc.size > MAX_JSON_BYTES) throw new FerryError('TOO_LARGE', `config ${cfgDesc.digest}: ${cfgDesc.size} bytes exceeds limit of ${MAX_JSON_BYTES} bytes`);
    const where = `config ${cfgDesc.digest}`;
    const config = parseConfig(await readVerified(await src.fetch(cfgDesc, { signal: o.signal }), cfgDesc, where), where);
    const diffIds = config.rootfs.diff_ids;
    if (diffIds.length !== manifest.layers.length) {
      throw new FerryError('INTEGRITY', `${image}: the config lists ${diffIds.length} diff_ids for ${manifest.layers.length} layers (${d.digest})`);
    }
    const layers = manifest.layers.map((l, index): LayerRef => {
      if (!isLayerType(l.mediaType)) {
        throw new FerryError('UNSUPPORTED', `${image}: layer ${index + 1} has media type ${l.mediaType}, which is not a filesystem layer`, {
          hint: 'only container images can be exported; this looks like an artifact',
        });
      }
      return { descriptor: l, diffId: diffIds[index] as Digest, index, count: manifest.layers.length };
    });
    const has = { os: config.os, architecture: config.architecture, ...(config.variant ? { variant: config.variant } : {}) };
    if (!fromIndex && o.platform && !samePlatform(has, o.platform)) {
      throw new FerryError('NOT_FOUND', `${image} is a single-platform image for ${formatPlatform(normalizePlatform(has))}, not ${formatPlatform(o.platform)}`);
    }
    const platform = formatPlatform(normalizePlatform(has));
    return { source: src, manifest: d, config, layers, platform };
  } catch (e) {
    await opened.source.close();
    throw e;
  }
}
