import { copy, type CopyEvent, type CopyReport } from './copy.js';
import { openSink, openSource, type RegistrySettings } from './locations/location.js';
import { OciLayout } from './locations/layout.js';
import type { RegistryRepository } from './locations/registry/repository.js';
import type { PlatformSelection } from './oci/platform.js';
import { defaultStoreDir } from './store.js';
import type { TagName } from './types.js';

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
