import { copy, type CopyEvent, type CopyReport } from './copy.js';
import { OciLayout } from './locations/layout.js';
import { destinationName, entryTagName, openLayoutSource, parseLocation } from './locations/location.js';
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
}

/** `ferry copy` as a library call: resolves both locations, runs the engine, closes everything. */
export async function copyImage(o: CopyImageOptions): Promise<CopyReport> {
  const srcLoc = parseLocation(o.source);
  const dstLoc = parseLocation(o.destination);
  const storeDir = o.storeDir ?? defaultStoreDir();

  const { layout: src, ref } = srcLoc.kind === 'oci' ? await openLayoutSource(srcLoc) : { layout: await OciLayout.open(storeDir), ref: srcLoc.ref };
  try {
    const resolved = await src.resolve(ref);
    const entry = (await src.entries()).find((e) => e.descriptor.digest === resolved.digest && (e.tag === ref || e.name !== undefined));
    const sourceName: TagName | undefined = entry ? entryTagName(entry) : undefined;
    const name = destinationName(dstLoc, sourceName);
    const dst = await OciLayout.open(dstLoc.kind === 'oci' ? dstLoc.dir : storeDir, { create: true });
    try {
      return await copy(src, dst, [{ ref: resolved.digest, names: name ? [name] : [] }], {
        platforms: o.platforms,
        signal: o.signal,
        onEvent: o.onEvent,
      });
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}
