import { createHash } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { ByteLimit, compressor, decompress } from '../blob/compression.js';
import { tempPathFor } from '../blob/publish.js';
import { readVerified, verifying } from '../blob/verify.js';
import { readDocument } from '../graph.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { isLayerType, isManifestLike, layerCompression } from '../oci/mediatypes.js';
import { parseConfig, type Descriptor } from '../oci/manifest.js';
import { selectPlatforms, type PlatformSelection } from '../oci/platform.js';
import type { FetchOptions, Source } from '../types.js';
import { decompressBudget } from '../blob/compression.js';

export type LayerCompressionTarget = 'gzip' | 'zstd' | 'none';

/** The layer media type for the same content compressed another way. */
export function layerTypeFor(mediaType: string, c: LayerCompressionTarget): string {
  if (mediaType.startsWith('application/vnd.oci.image.layer.v1.tar')) return `application/vnd.oci.image.layer.v1.tar${c === 'none' ? '' : `+${c}`}`;
  return `application/vnd.docker.image.rootfs.diff.tar${c === 'none' ? '' : `.${c === 'gzip' ? 'gzip' : 'zstd'}`}`;
}

/** Annotations that describe the compressed bytes (zstd:chunked, eStargz TOCs) die with them. */
const STALE = /^(io\.github\.containers\.zstd-chunked\.|containerd\.io\/snapshot\/stargz\/)/;

function convertible(l: Descriptor): boolean {
  if (!isLayerType(l.mediaType) || l.urls?.length) return false;
  return !/nondistributable|foreign|encrypted/.test(l.mediaType) && layerCompression(l.mediaType) !== 'unknown';
}

export interface RecompressOptions {
  compression: LayerCompressionTarget;
  level?: number;
  /** Where converted layers wait (beside the output, so no other filesystem fills up). */
  tempDir: string;
  platforms?: PlatformSelection;
  signal?: AbortSignal;
  onLayer?: (e: { from: Digest; to: Digest; size: number }) => void;
}

/**
 * A Source that serves an image with its layers compressed another way (`save --compress-layers`).
 * Converted layers are written to temp files (their digest must be known before the archive entry
 * is written); manifests and indexes that point at them are rebuilt, so every digest above the
 * layers changes. diff_ids do not: each decompressed layer is checked against the config.
 */
export class RecompressSource implements Source {
  private readonly docs = new Map<Digest, Buffer>();
  private readonly files = new Map<Digest, string>();
  private readonly done = new Map<Digest, Descriptor>();

  constructor(private readonly inner: Source, private readonly o: RecompressOptions) {}

  async resolve(ref: string): Promise<Descriptor> {
    return this.convert(await this.inner.resolve(ref), true);
  }

  private async convert(d: Descriptor, top: boolean): Promise<Descriptor> {
    const seen = this.done.get(d.digest);
    if (seen) return { ...d, digest: seen.digest, size: seen.size };
    const doc = await readDocument(this.inner, d, { signal: this.o.signal });
    let body: unknown;
    if (doc.kind === 'index') {
      const wanted = top && this.o.platforms && this.o.platforms !== 'all' ? new Set(selectPlatforms(doc.index.manifests, this.o.platforms, d.digest)) : undefined;
      let changed = false;
      const manifests: Descriptor[] = [];
      for (const c of doc.index.manifests) {
        if (!isManifestLike(c.mediaType) || (wanted && !wanted.has(c))) {
          manifests.push(c);
          continue;
        }
        const n = await this.convert(c, false);
        changed ||= n.digest !== c.digest;
        manifests.push(n);
      }
      body = changed ? { ...doc.index, manifests } : undefined;
    } else {
      const m = doc.manifest;
      const diffIds = m.layers.some(convertible) ? await this.diffIds(m.config) : undefined;
      let changed = false;
      const layers: Descriptor[] = [];
      for (const [i, l] of m.layers.entries()) {
        if (!convertible(l) || layerCompression(l.mediaType) === this.o.compression) {
          layers.push(l);
          continue;
        }
        layers.push(await this.layer(l, diffIds?.[i]));
        changed = true;
      }
      body = changed ? { ...m, layers } : undefined;
    }
    if (!body) {
      this.done.set(d.digest, d);
      return d;
    }
    const bytes = Buffer.from(JSON.stringify(body));
    const digest = digestOf(bytes);
    this.docs.set(digest, bytes);
    const out: Descriptor = { ...d, digest, size: bytes.length };
    this.done.set(d.digest, out);
    return out;
  }

  private async diffIds(config: Descriptor): Promise<Digest[] | undefined> {
    const bytes = await readVerified(await this.inner.fetch(config, { signal: this.o.signal }), config, `config ${config.digest}`);
    try {
      return parseConfig(bytes, `config ${config.digest}`).rootfs.diff_ids;
    } catch {
      return undefined; // not an image config: the layers are converted without the check
    }
  }

  private async layer(l: Descriptor, diffId: Digest | undefined): Promise<Descriptor> {
    const tmp = tempPathFor(join(this.o.tempDir, 'layer'));
    const outer = createHash('sha256');
    const inner = createHash('sha256');
    let size = 0;
    const hashing = (h: ReturnType<typeof createHash>, count: boolean) =>
      new Transform({
        highWaterMark: 1 << 20,
        transform(chunk: Buffer, _e, cb) {
          h.update(chunk);
          if (count) size += chunk.length;
          cb(null, chunk);
        },
      });
    try {
      const { stream } = await decompress(verifying(await this.inner.fetch(l, { signal: this.o.signal }), l, `layer ${l.digest}`));
      const steps: Array<NodeJS.ReadWriteStream> = [new ByteLimit(decompressBudget(l.size), `layer ${l.digest}`), hashing(inner, false)];
      if (this.o.compression !== 'none') steps.push(compressor(this.o.compression, this.o.level));
      steps.push(hashing(outer, true));
      await pipeline([stream, ...steps, createWriteStream(tmp, { flags: 'wx', mode: 0o600 })] as unknown as [Readable, NodeJS.WritableStream], { signal: this.o.signal });
    } catch (e) {
      await unlink(tmp).catch(() => {});
      throw e;
    }
    const uncompressed = `sha256:${inner.digest('hex')}` as Digest;
    if (diffId && uncompressed !== diffId) {
      await unlink(tmp).catch(() => {});
      throw new FerryError('INTEGRITY', `layer ${l.digest}: uncompressed content hashes to ${uncompressed}, the config says diff_id ${diffId}`);
    }
    const digest = `sha256:${outer.digest('hex')}` as Digest;
    if (this.files.has(digest)) await unlink(tmp).catch(() => {});
    else this.files.set(digest, tmp);
    this.o.onLayer?.({ from: l.digest, to: digest, size });
    const annotations = Object.fromEntries(Object.entries(l.annotations ?? {}).filter(([k]) => !STALE.test(k)));
    const out: Descriptor = { ...l, mediaType: layerTypeFor(l.mediaType, this.o.compression), digest, size };
    delete out.data;
    if (Object.keys(annotations).length) out.annotations = annotations;
    else delete out.annotations;
    return out;
  }

  async fetch(d: Descriptor, o: FetchOptions = {}): Promise<Readable> {
    const doc = this.docs.get(d.digest);
    if (doc) return Readable.from([doc]);
    const file = this.files.get(d.digest);
    if (file) return createReadStream(file, { highWaterMark: 1 << 20, start: o.offset, signal: o.signal });
    return this.inner.fetch(d, o);
  }

  async close(): Promise<void> {
    for (const f of this.files.values()) await unlink(f).catch(() => {});
    this.files.clear();
    await this.inner.close();
  }
}
