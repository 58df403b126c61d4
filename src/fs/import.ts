import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { spoolDirectory } from '../util/spool.js';
import { join } from 'node:path';
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { compressor, decompress } from '../blob/compression.js';
import { copy, type CopyEvent } from '../copy.js';
import { FerryError, isFerryError } from '../errors.js';
import { openSink } from '../locations/location.js';
import { digestOf, type Digest } from '../oci/digest.js';
import type { Descriptor, ImageConfig, Platform } from '../oci/manifest.js';
import { MediaType } from '../oci/mediatypes.js';
import { hostPlatform } from '../oci/platform.js';
import { tryParseReference } from '../oci/reference.js';
import { defaultStoreDir, movedNames, newStoreName, type MovedName } from '../store.js';
import { OciLayout } from '../locations/layout.js';
import type { Source, TagName } from '../types.js';
import { applyChanges, type ContainerConfig } from './changes.js';
import { tarDirectory } from './dir-tar.js';
import { TarParser } from './tar-reader.js';
import { Tree } from './tree.js';
import { streamed } from '../util/memory.js';

export type LayerCompression = 'gzip' | 'zstd' | 'none';

export interface ImportOptions {
  /** A tar file (plain, gzip or zstd), '-' for stdin, or a stream. Exclusive with `dir`. */
  input?: string | Readable;
  /** A directory to tar deterministically instead. */
  dir?: string;
  /** The image's name; without `to`, also where it goes (a store name, or any location). */
  name?: string;
  /** Where the image goes (default: the store, under `name`). */
  to?: string;
  storeDir?: string;
  /** Docker-style change instructions: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL. */
  changes?: string[];
  /** History comment. */
  message?: string;
  /** The config's platform (default: the host's). */
  platform?: Platform;
  compression?: LayerCompression;
  /** Fixes `created` and history times and clamps --dir mtimes (seconds since the epoch). */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
  /** Told when the name given was another image's in the store or layout until now. */
  onMoved?: (m: MovedName) => void;
}

export interface ImportReport {
  digest: Digest;
  config: Digest;
  layer: { digest: Digest; size: number; diffId: Digest; mediaType: string };
  names: TagName[];
  destination: string;
}

const LAYER_TYPES: Record<LayerCompression, string> = {
  gzip: MediaType.OciLayerGzip,
  zstd: MediaType.OciLayerZstd,
  none: MediaType.OciLayer,
};

/** SOURCE_DATE_EPOCH as the reproducible-builds spec defines it: a decimal integer. */
export function parseSourceDateEpoch(text: string | undefined, what = 'SOURCE_DATE_EPOCH'): number | undefined {
  if (text === undefined || text === '') return undefined;
  if (!/^[0-9]+$/.test(text.trim()) || !Number.isSafeInteger(Number(text))) {
    throw new FerryError('USAGE', `${what} must be a number of seconds since 1970-01-01, not ${JSON.stringify(text)}`);
  }
  return Number(text);
}

function rfc3339(seconds: number): string {
  return new Date(seconds * 1000).toISOString().replace(/\.000Z$/, 'Z');
}

/** Hashes and counts what passes (with an optional check of every chunk), unchanged. */
class Tap extends Transform {
  readonly hash = createHash('sha256');
  size = 0;
  constructor(private readonly inspect?: (chunk: Buffer) => void | Promise<void>) {
    super({ highWaterMark: 1 << 20 });
  }
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    let p: void | Promise<void>;
    try {
      p = this.inspect?.(chunk);
    } catch (e) {
      return cb(e as Error);
    }
    if (p) p.then(() => cb(null, chunk), cb);
    else cb(null, chunk);
  }
  digest(): Digest {
    return `sha256:${this.hash.digest('hex')}` as Digest;
  }
}

/** gzip's header names the OS that wrote it; pin it to Unix (3) so output is the same everywhere. */
class PinGzipOs extends Transform {
  private seen = 0;
  override _transform(chunk: Buffer, _e: BufferEncoding, cb: TransformCallback): void {
    if (this.seen <= 9 && this.seen + chunk.length > 9) {
      chunk = Buffer.from(chunk);
      chunk[9 - this.seen] = 3;
    }
    this.seen += chunk.length;
    cb(null, chunk);
  }
}

/** Serves the one image import builds: manifest and config from memory, the layer from its spool file. */
class BuiltImage implements Source {
  constructor(
    private readonly root: Descriptor,
    private readonly docs: Map<Digest, Buffer>,
    private readonly layer: { digest: Digest; path: string },
  ) {}
  async resolve(): Promise<Descriptor> {
    return this.root;
  }
  async fetch(d: Descriptor): Promise<Readable> {
    const doc = this.docs.get(d.digest);
    if (doc) return Readable.from([doc]);
    if (d.digest === this.layer.digest) return createReadStream(this.layer.path, { highWaterMark: 1 << 20 });
    throw new FerryError('NOT_FOUND', `blob ${d.digest} is not part of the imported image`);
  }
  async close(): Promise<void> {}
}

async function openInput(o: ImportOptions): Promise<{ stream: Readable; label: string }> {
  if (o.dir !== undefined) {
    if (o.input !== undefined) throw new FerryError('USAGE', 'give either a tar file or --dir, not both');
    return { stream: tarDirectory(o.dir, { sourceDateEpoch: o.sourceDateEpoch, signal: o.signal }), label: o.dir };
  }
  if (o.input === undefined) throw new FerryError('USAGE', 'name a tar file to import ("-" for stdin) or use --dir');
  if (typeof o.input !== 'string') return { stream: o.input, label: '(stream)' };
  if (o.input === '-') return { stream: process.stdin, label: 'stdin' };
  const st = await stat(o.input).catch(() => undefined);
  if (!st) throw new FerryError('NOT_FOUND', `${o.input}: no such file`);
  if (st.isDirectory()) throw new FerryError('USAGE', `${o.input} is a directory`, { hint: `use --dir ${o.input} to import a directory` });
  return { stream: createReadStream(o.input, { highWaterMark: 1 << 20, signal: o.signal }), label: o.input };
}

/**
 * Turns a root-filesystem tar (or a directory) into a one-layer image: the tar's bytes are kept
 * exactly (DiffID = their SHA-256), compressed once into the layer blob, and checked on the way
 * with the same model export uses, so an image import accepts is one export can flatten
 * (catalogue A4-A14). Manifest and config are OCI; the image is copied into the destination by
 * the engine, which verifies every blob and names the image last.
 */
export async function importImage(o: ImportOptions): Promise<ImportReport> {
  const compression = o.compression ?? 'gzip';
  const containerConfig: ContainerConfig = applyChanges(o.changes ?? []);
  const platform = o.platform ?? hostPlatform();
  if (!o.name && !o.to) throw new FerryError('USAGE', 'name the image (NAME[:TAG]) or give a destination with --to');
  const sourceName = o.name && o.to ? nameOf(o.name) : undefined;
  const ctx = { storeDir: o.storeDir ?? defaultStoreDir(), signal: o.signal };
  const dst = await openSink(o.to ?? o.name!, ctx);
  let name: TagName | undefined;
  try {
    name = dst.nameFor(sourceName);
  } catch (e) {
    await dst.sink.close();
    throw e;
  }
  const spool = await spoolDirectory('import').catch(async (e: unknown) => {
    await dst.sink.close();
    throw e;
  });
  try {
    const { stream: input, label } = await openInput(o);
    const layerPath = join(spool, 'layer');
    const where = `import of ${label}`;
    // The same checks export applies (paths, whiteouts, links, limits), entry by entry; the first
    // problem is reported once the whole input has been read, like a wrong size or digest.
    const feed = new Tree().baseLayerFeed(where);
    const parser = new TarParser({ entry: (e) => feed.add(e) });
    // Counted for GC pacing once, as it enters: without it a 512 MiB layer peaked at ~140 MiB RSS.
    const plain = new Tap((c) => {
      streamed(c.length);
      return parser.write(c);
    });
    const packed = new Tap();
    try {
      const { stream: decoded } = await decompress(input);
      const stages = compression === 'none' ? [new PassThrough()] : compression === 'gzip' ? [compressor('gzip'), new PinGzipOs()] : [compressor('zstd')];
      await pipeline([decoded, plain, ...stages, packed, createWriteStream(layerPath, { flags: 'wx', mode: 0o600 })], { signal: o.signal });
      parser.end();
    } catch (e) {
      if (isFerryError(e, 'INVALID_INPUT') || isFerryError(e, 'TOO_LARGE')) throw new FerryError(e.code, `${where}: ${e.message}`, { cause: e, hint: e.hint });
      const code = (e as NodeJS.ErrnoException).code;
      if (typeof code === 'string' && code.startsWith('Z_')) throw new FerryError('INVALID_INPUT', `${where}: cannot decompress: ${(e as Error).message}`, { cause: e });
      throw e;
    }
    if (plain.size === 0) throw new FerryError('INVALID_INPUT', `${where}: the input is empty`, { hint: 'import needs a tar archive of a root filesystem' });
    feed.check();

    const diffId = plain.digest();
    const layer: Descriptor = { mediaType: LAYER_TYPES[compression], digest: packed.digest(), size: packed.size };
    const created = rfc3339(o.sourceDateEpoch ?? Math.floor(Date.now() / 1000));
    const history: NonNullable<ImageConfig['history']>[number] = { created, created_by: 'ferry import' };
    if (o.message) history.comment = o.message;
    const config = {
      created,
      architecture: platform.architecture,
      os: platform.os,
      ...(platform.variant ? { variant: platform.variant } : {}),
      config: containerConfig,
      rootfs: { type: 'layers', diff_ids: [diffId] },
      history: [history],
    };
    const configBytes = Buffer.from(JSON.stringify(config));
    const configDesc: Descriptor = { mediaType: MediaType.OciConfig, digest: digestOf(configBytes), size: configBytes.length };
    const manifest = { schemaVersion: 2, mediaType: MediaType.OciManifest, config: configDesc, layers: [layer] };
    const manifestBytes = Buffer.from(JSON.stringify(manifest));
    const root: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(manifestBytes), size: manifestBytes.length };
    const src = new BuiltImage(root, new Map([[root.digest, manifestBytes], [configDesc.digest, configBytes]]), { digest: layer.digest, path: layerPath });
    const layout = o.onMoved && dst.sink instanceof OciLayout ? dst.sink : undefined;
    const before = layout ? await layout.entries() : [];
    await copy(src, dst.sink, [{ ref: root.digest, names: name ? [name] : [] }], { signal: o.signal, onEvent: o.onEvent });
    if (layout) for (const m of movedNames(before, await layout.entries(), [{ digest: root.digest, names: name ? [name] : [] }])) o.onMoved!(m);
    return {
      digest: root.digest,
      config: configDesc.digest,
      layer: { digest: layer.digest, size: layer.size, diffId, mediaType: layer.mediaType },
      names: name ? [name] : [],
      destination: o.to ?? o.name!,
    };
  } finally {
    await dst.sink.close();
    await rm(spool, { recursive: true, force: true });
  }
}

/** NAME[:TAG] as a store-style name for a destination that takes the source's name. */
function nameOf(name: string): TagName | undefined {
  if (!tryParseReference(name)) throw new FerryError('INVALID_REFERENCE', `invalid image name ${JSON.stringify(name)}`);
  return newStoreName(name, 'the image name');
}
