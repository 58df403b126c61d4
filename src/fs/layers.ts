import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import { decompress, decompressBudget } from '../blob/compression.js';
import { hashStream, verifying } from '../blob/verify.js';
import { FerryError, isFerryError } from '../errors.js';
import { warn } from '../log.js';
import { algorithmOf, shortDigest, type Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/manifest.js';
import { isForeignLayer, layerCompression } from '../oci/mediatypes.js';
import type { Source } from '../types.js';

export interface LayerRef {
  descriptor: Descriptor;
  /** The config's rootfs.diff_ids entry for this layer. */
  diffId: Digest;
  index: number;
  count: number;
}

export function layerWhere(l: LayerRef): string {
  return `layer ${l.index + 1}/${l.count} (${shortDigest(l.descriptor.digest)})`;
}


export interface ReadLayerOptions {
  signal?: AbortSignal;
  /** Also write the (verified) compressed bytes here, so a second pass need not fetch again. */
  spoolTo?: string;
  /** Warn when the bytes' compression differs from the media type (pass 1 only). */
  warnMismatch?: boolean;
}

export interface LayerConsumer {
  chunk(plain: Buffer): void | Promise<void>;
  /** Called once the whole decompressed stream was consumed. */
  finish?(): void;
}

/**
 * Streams one layer's uncompressed tar to `consumer`: the blob's size and digest are checked by
 * the verifying stream, its compression is sniffed from the bytes, the decompressed size is
 * held to the budget and hashed against the config's DiffID (catalogue B6). Nothing is buffered.
 */
export async function readLayer(src: Source, layer: LayerRef, consumer: LayerConsumer, o: ReadLayerOptions = {}): Promise<void> {
  const d = layer.descriptor;
  const where = layerWhere(layer);
  const budget = decompressBudget(d.size);
  const raw = await src.fetch(d, { signal: o.signal }).catch((e: unknown) => {
    if (!isForeignLayer(d) || !isFerryError(e, 'NOT_FOUND')) throw e;
    throw new FerryError('NOT_FOUND', `${where}: ${d.digest} is a foreign layer and is not here; ferry does not download foreign layers from their URLs`, {
      hint: 'fetch it from its URL yourself, check its digest, and put it in the layout as blobs/sha256/<hex>',
    });
  });
  let stream: Readable | undefined;
  try {
    let body = verifying(raw, d, `${where} blob ${d.digest}`);
    if (o.spoolTo) body = tee(body, o.spoolTo);
    const dec = await decompress(body);
    stream = dec.stream;
    const declared = layerCompression(d.mediaType);
    if (o.warnMismatch && declared !== 'unknown' && declared !== dec.compression) {
      warn(`${where}: media type ${d.mediaType} says ${declared} but the bytes are ${dec.compression}; reading them as ${dec.compression}`);
    }
    const hash = createHash(algorithmOf(layer.diffId));
    let n = 0;
    for await (const chunk of stream) {
      o.signal?.throwIfAborted();
      n += (chunk as Buffer).length;
      if (n > budget) {
        throw new FerryError('TOO_LARGE', `${where}: decompressed data exceeds limit of ${budget} bytes (decompression bomb?)`, {
          hint: 'if the layer is genuine, raise the limit with FERRY_MAX_LAYER_BYTES',
        });
      }
      hash.update(chunk as Buffer);
      const p = consumer.chunk(chunk as Buffer);
      if (p) await p;
    }
    consumer.finish?.();
    const actual = `${algorithmOf(layer.diffId)}:${hash.digest('hex')}` as Digest;
    if (actual !== layer.diffId) {
      throw new FerryError('DIGEST_MISMATCH', `${where}: uncompressed content hashes to ${actual}, but the config's diff_id is ${layer.diffId}`);
    }
  } catch (e) {
    throw await explain(e, src, layer, o.signal);
  } finally {
    raw.destroy();
    stream?.destroy();
  }
}

/**
 * A layer that fails to decompress or parse may simply be corrupt: re-reading it tells a digest
 * mismatch (exit 4) from a well-formed blob with bad content (exit 3).
 */
async function explain(e: unknown, src: Source, layer: LayerRef, signal?: AbortSignal): Promise<unknown> {
  if (isFerryError(e, 'DIGEST_MISMATCH') || isFerryError(e, 'SIZE_MISMATCH') || isFerryError(e, 'ABORTED') || signal?.aborted) return e;
  const err = e as NodeJS.ErrnoException;
  if (isFerryError(e) && e.code !== 'INVALID_INPUT' && e.code !== 'TOO_LARGE') return e;
  if (!isFerryError(e) && !(typeof err?.code === 'string' && err.code.startsWith('Z_'))) return e;
  try {
    const again = await src.fetch(layer.descriptor, { signal });
    await hashStream(verifying(again, layer.descriptor, `${layerWhere(layer)} blob ${layer.descriptor.digest}`));
  } catch (mismatch) {
    if (isFerryError(mismatch, 'DIGEST_MISMATCH') || isFerryError(mismatch, 'SIZE_MISMATCH')) return mismatch;
  }
  if (isFerryError(e)) return e;
  return new FerryError('INVALID_INPUT', `${layerWhere(layer)}: cannot decompress: ${err.message}`, { cause: e });
}

/** Copies the bytes passing through into a file, with backpressure; completes only on a clean end. */
function tee(body: Readable, path: string): Readable {
  const file = createWriteStream(path, { flags: 'wx', mode: 0o600, highWaterMark: 1 << 20 });
  const t = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _enc, cb) {
      if (file.write(chunk)) cb(null, chunk);
      else file.once('drain', () => cb(null, chunk));
    },
    flush(cb) {
      file.end(() => cb());
    },
  });
  file.on('error', (e) => t.destroy(e));
  body.on('error', (e) => t.destroy(e));
  t.on('close', () => {
    if (!file.closed) file.destroy();
  });
  return body.pipe(t);
}

/** A source that serves spooled layer copies from disk and everything else from `inner`. */
export function withSpool(inner: Source, spooled: Map<Digest, string>): Source {
  return {
    resolve: (ref) => inner.resolve(ref),
    async fetch(d, o) {
      const path = spooled.get(d.digest);
      if (!path) return inner.fetch(d, o);
      return createReadStream(path, { highWaterMark: 1 << 20, signal: o?.signal });
    },
    close: () => inner.close(),
  };
}
