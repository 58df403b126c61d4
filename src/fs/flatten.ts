import { rm } from 'node:fs/promises';
import { spoolDirectory } from '../util/spool.js';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { decompressBudget } from '../blob/compression.js';
import { OciLayout } from '../locations/layout.js';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/manifest.js';
import { defaultStoreDir } from '../store.js';
import type { Source } from '../types.js';
import { openImage, type OpenedImage } from './image.js';
import { layerWhere, readLayer, withSpool, type LayerRef } from './layers.js';
import { display } from './tar-format.js';
import { TarParser, type TarEntry } from './tar-reader.js';
import { Tree, type Inode, type Meta, type Planned } from './tree.js';

export interface FlattenOptions {
  /** A store name, `oci:DIR[:TAG]`, or any location a transport understands. */
  image: string;
  storeDir?: string;
  /** For an index: which platform (default: the host's). */
  platform?: Platform;
  /** Drop setuid and setgid bits (catalogue A12). */
  noSetuid?: boolean;
  signal?: AbortSignal;
  onEvent?: (e: ExportEvent) => void;
}

export type ExportEvent =
  | { type: 'resolved'; digest: Digest; platform: string; layers: number }
  | { type: 'layer-scanned'; index: number; digest: Digest; entries: number }
  | { type: 'layer-written'; index: number; digest: Digest };

/** Everything pass 1 learns: the final tree and where each surviving file's content is. */
export interface Scanned {
  image: OpenedImage;
  source: Source;
  tree: Tree;
  plan: Planned;
  cleanup(): Promise<void>;
}

/**
 * Pass 1: reads every layer's headers (verifying digest and DiffID) and applies them to the
 * metadata tree; content is skipped. Layers of a non-local source are spooled to a temp
 * directory so that pass 2 does not download them again.
 */
export async function scan(o: FlattenOptions): Promise<Scanned> {
  const image = await openImage(o.image, { storeDir: o.storeDir ?? defaultStoreDir(), platform: o.platform, signal: o.signal });
  let spoolDir: string | undefined;
  const cleanup = async () => {
    await image.source.close();
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  };
  try {
    o.onEvent?.({ type: 'resolved', digest: image.manifest.digest, platform: image.platform, layers: image.layers.length });
    const local = image.source instanceof OciLayout;
    const spooled = new Map<Digest, string>();
    if (!local && image.layers.length > 0) spoolDir = await spoolDirectory('export');
    const tree = new Tree();
    for (const layer of image.layers) {
      const where = layerWhere(layer);
      // The first layer lies over nothing, so its entries go into the tree as they stream (a
      // 1M-file layer need not be held); later ones are applied whole, whiteouts first.
      const feed = layer.index === 0 ? tree.baseLayerFeed(where) : undefined;
      const entries: TarEntry[] = [];
      let count = 0;
      const parser = new TarParser(
        {
          entry: (e) => {
            count++;
            if (feed) feed.add(e);
            else entries.push(e);
          },
        },
        { maxContent: decompressBudget(layer.descriptor.size), where },
      );
      const spoolTo = spoolDir && !spooled.has(layer.descriptor.digest) ? join(spoolDir, `${layer.index}`) : undefined;
      await readLayer(
        image.source,
        layer,
        { chunk: (c) => parser.write(c), finish: () => parser.end() },
        { signal: o.signal, spoolTo, warnMismatch: true },
      );
      if (spoolTo) spooled.set(layer.descriptor.digest, spoolTo);
      if (feed) feed.check();
      else tree.applyLayer(entries, layer.index, where);
      o.onEvent?.({ type: 'layer-scanned', index: layer.index, digest: layer.descriptor.digest, entries: count });
    }
    const source = spooled.size > 0 ? withSpool(image.source, spooled) : image.source;
    return { image, source, tree, plan: tree.plan(image.layers.length), cleanup };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

export function outMode(meta: Meta, noSetuid: boolean | undefined): number {
  return noSetuid ? meta.mode & ~0o6000 : meta.mode;
}

/** Handler state for pass 2: finds the carrier entries of one layer and hands them over. */
export interface CarrierSink {
  start(inode: Inode, e: TarEntry): void | Promise<void>;
  data(chunk: Buffer): void | Promise<void>;
  end(inode: Inode): void | Promise<void>;
}

/**
 * Pass 2 over one layer: every entry that carries a surviving file's content is given to `sink`
 * (checked against what pass 1 saw); everything else is skipped.
 */
export async function streamCarriers(source: Source, layer: LayerRef, carriers: Map<number, Inode>, sink: CarrierSink, signal?: AbortSignal): Promise<void> {
  let current: Inode | undefined;
  let seen = 0;
  const where = layerWhere(layer);
  const parser = new TarParser({
    entry(e) {
      const inode = carriers.get(e.ordinal);
      if (!inode) return;
      if (inode.name !== e.name || inode.size !== e.size) {
        throw new FerryError('INTEGRITY', `${where}: entry ${e.ordinal} changed between reads (${display(inode.name)} became ${display(e.name)})`);
      }
      current = inode;
      seen++;
      return sink.start(inode, e);
    },
    data(chunk) {
      if (current) return sink.data(chunk);
    },
    entryEnd() {
      if (!current) return;
      const inode = current;
      current = undefined;
      return sink.end(inode);
    },
  });
  await readLayer(source, layer, { chunk: (c) => parser.write(c), finish: () => parser.end() }, { signal });
  if (seen !== carriers.size) throw new FerryError('INTEGRITY', `${where}: ${carriers.size - seen} file(s) seen in the first read were missing in the second`);
}

