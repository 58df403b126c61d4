import { copy, type CopyEvent, type CopyReport } from './copy.js';
import { openSink, openSource, type RegistrySettings } from './locations/location.js';
import { OciLayout } from './locations/layout.js';
import type { RegistryRepository } from './locations/registry/repository.js';
import type { PlatformSelection } from './oci/platform.js';
import { defaultStoreDir } from './store.js';
import type { Source, TagName } from './types.js';
import type { Digest } from './oci/digest.js';
import { isIndexType } from './oci/mediatypes.js';
import { FerryError } from './errors.js';

export interface CopyImageOptions {
  source: string;
  destination: string;
  /** The store used for plain image names (default: defaultStoreDir()). */
  storeDir?: string;
  platforms?: PlatformSelection;
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
  registry?: RegistrySettings;
  /** Blobs in flight at once (default 4). */
  jobs?: number;
  /** Carry signatures, SBOMs and attestations that refer to the image. */
  referrers?: boolean;
}

/** Duck-typed, so that this module does not load the HTTP stack. */
function isRepository(x: object): x is RegistryRepository {
  return 'addMountSource' in x && 'client' in x;
}

/** The name a referrer found under `tag` gets beside an image named `name`. */
export function referrerName(name: TagName | undefined, tag: string): TagName {
  if (!name?.name) return { tag };
  const at = name.name.lastIndexOf(':');
  return { tag, name: `${name.name.slice(0, at)}:${tag}` };
}

/** `ferry copy` as a library call: opens both locations, runs the engine, closes everything. */
export async function copyImage(o: CopyImageOptions): Promise<CopyReport> {
  const ctx = { storeDir: o.storeDir ?? defaultStoreDir(), signal: o.signal, registry: o.registry };
  const src = await openSource(o.source, ctx);
  try {
    const dst = await openSink(o.destination, ctx);
    try {
      const name = dst.nameFor(src.name);
      if (dst.digest) await refuseOtherDigest(src.source, src.ref, dst.digest, o);
      const from = src.source;
      if (isRepository(from) && isRepository(dst.sink) && from.client.domain === dst.sink.client.domain) {
        dst.sink.addMountSource(from.path);
      }
      return await copy(src.source, dst.sink, [{ ref: src.ref, names: name ? [name] : [], label: o.source }], {
        platforms: o.platforms,
        signal: o.signal,
        onEvent: o.onEvent,
        concurrency: o.jobs,
        referrers: o.referrers,
        nameReferrerTag: (tag) => referrerName(name, tag),
      });
    } catch (e) {
      // Refused before anything was stored (a platform it lacks, say): no empty layout is left.
      if (dst.sink instanceof OciLayout) await dst.sink.discardIfCreatedEmpty().catch(() => {});
      throw e;
    } finally {
      await dst.sink.close();
    }
  } finally {
    await src.source.close();
  }
}

/**
 * `docker://NAME@DIGEST` as a destination: the image copied must be that digest (it was pushed
 * whatever it was), and a copy narrowed to some platforms of an index makes a new one.
 */
async function refuseOtherDigest(source: Source, ref: string, digest: Digest, o: CopyImageOptions): Promise<void> {
  const d = await source.resolve(ref);
  const narrowed = isIndexType(d.mediaType) && o.platforms !== undefined && o.platforms !== 'all';
  if (d.digest === digest && !narrowed) return;
  const why = d.digest !== digest ? `the image is ${d.digest}` : 'a copy narrowed to some platforms gets a digest of its own';
  throw new FerryError('USAGE', `${o.destination} names digest ${digest}, but ${why}`, { hint: 'name the destination by tag, or by repository alone to push by the image\'s own digest' });
}
