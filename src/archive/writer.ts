import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { algorithmOf, encodedOf, type Digest } from '../oci/digest.js';
import { isForeignLayer, isLayerType, isManifestLike, layerCompression, MediaType } from '../oci/mediatypes.js';
import { MAX_JSON_BYTES, parseManifestDocument, type Descriptor, type ImageManifest } from '../oci/manifest.js';
import { hostPlatform, isAttestation, samePlatform } from '../oci/platform.js';
import { familiarName, parseReference } from '../oci/reference.js';
import { addRoot } from '../locations/layout.js';
import type { PutOptions, Sink, TagName } from '../types.js';
import type { ArchiveOutput, EntryOptions } from './output.js';

/** `docker`: an OCI layout that docker load also reads (manifest.json, repositories). `oci`: OCI only. */
export type ArchiveFormat = 'docker' | 'oci';

/** Writes tar entries somewhere: one archive, or a set of volumes. */
export interface EntryWriter {
  file(name: string, size: number, body: AsyncIterable<Buffer>, o?: EntryOptions): Promise<void>;
  bytes(name: string, data: Buffer): Promise<void>;
  dir(name: string): Promise<void>;
  /** Completes the archive and publishes it; returns the files written. */
  finish(): Promise<string[]>;
  /** Removes everything written; the destination is left as it was. */
  abort(): Promise<void>;
}

/** One archive file (or stdout). */
export class SingleWriter implements EntryWriter {
  constructor(private readonly out: ArchiveOutput) {}
  file(name: string, size: number, body: AsyncIterable<Buffer>, o?: EntryOptions): Promise<void> {
    return this.out.entry(name, size, body, o);
  }
  bytes(name: string, data: Buffer): Promise<void> {
    return this.out.bytesEntry(name, data);
  }
  dir(name: string): Promise<void> {
    return this.out.dirEntry(name);
  }
  async finish(): Promise<string[]> {
    await this.out.finish();
    return [this.out.where];
  }
  abort(): Promise<void> {
    return this.out.abort();
  }
}

export function blobEntryName(d: Digest): string {
  return `blobs/${algorithmOf(d)}/${encodedOf(d)}`;
}

/** One `manifest.json` entry (docker save format). */
export interface DockerEntry {
  Config: string;
  RepoTags: string[] | null;
  Layers: string[];
}

export interface ArchiveSinkOptions {
  format: ArchiveFormat;
  signal?: AbortSignal;
  /** A delta (save --exclude-from): what its inventory recorded, kept in index.json when blobs are left out. */
  deltaBase?: string;
}

/** index.json annotations of a delta archive: how many blobs it leaves out, and the inventory it was made against. */
export const ANNOTATION_DELTA_LEFT_OUT = 'dev.ferry.delta.left-out';
export const ANNOTATION_DELTA_BASE = 'dev.ferry.delta.base';

/**
 * An archive being written, as a Sink. Blobs stream straight into the tar as the engine delivers
 * them (one at a time: caps.concurrent is false); index.json, manifest.json and repositories are
 * known only once every image is named, so they go at the end. close() completes and publishes
 * the archive when something was committed; abort() (or close() with nothing committed) leaves
 * nothing behind.
 */
export class ArchiveSink implements Sink {
  readonly caps = { concurrent: false, indexes: true };
  private readonly written = new Map<Digest, number>();
  /** The blobs written that are manifests or indexes. */
  private readonly writtenDocs = new Set<Digest>();
  /** Manifests and indexes written, kept to build manifest.json. */
  private readonly docs = new Map<Digest, { mediaType: string; bytes: Buffer }>();
  private readonly pending: Array<{ root: Descriptor; name: TagName | undefined }> = [];
  private readonly committed: Array<{ root: Descriptor; name: TagName | undefined }> = [];
  private readonly dirs = new Set<string>();
  private queue: Promise<unknown> = Promise.resolve();
  private started = false;
  private state: 'open' | 'failed' | 'done' = 'open';
  /** What broke the archive: every later write reports it (the engine's retry of a corrupt blob included). */
  private failure?: unknown;
  files: string[] = [];

  constructor(private readonly writer: EntryWriter, private readonly o: ArchiveSinkOptions) {}

  /** Runs `fn` after every earlier write: the tar is one sequential stream. */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      if (this.state !== 'open') throw this.failure ?? new FerryError('INTERNAL', 'archive is no longer open for writing');
      try {
        return await fn();
      } catch (e) {
        this.state = 'failed';
        this.failure ??= e;
        throw e;
      }
    });
    this.queue = run.catch(() => {});
    return run;
  }

  private async start(): Promise<void> {
    if (this.started) return;
    this.started = true;
    await this.writer.bytes('oci-layout', Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })));
    await this.writer.dir('blobs');
  }

  async has(d: Descriptor): Promise<boolean> {
    return this.written.get(d.digest) === d.size;
  }

  put(d: Descriptor, body: Readable, o: PutOptions = {}): Promise<void> {
    return this.serial(async () => {
      await this.start();
      if (this.written.get(d.digest) === d.size) {
        body.resume();
        return;
      }
      const dir = `blobs/${algorithmOf(d.digest)}`;
      if (!this.dirs.has(dir)) {
        await this.writer.dir(dir);
        this.dirs.add(dir);
      }
      const keep = isManifestLike(d.mediaType) && d.size <= MAX_JSON_BYTES ? ([] as Buffer[]) : undefined;
      const signal = o.signal ?? this.o.signal;
      async function* tee(): AsyncGenerator<Buffer> {
        for await (const c of body) {
          keep?.push(c as Buffer);
          yield c as Buffer;
        }
      }
      const c = layerCompression(d.mediaType);
      const compressed = c === 'gzip' || c === 'zstd';
      await this.writer.file(blobEntryName(d.digest), d.size, tee(), { signal, compressed });
      this.written.set(d.digest, d.size);
      if (isManifestLike(d.mediaType)) this.writtenDocs.add(d.digest);
      if (keep) this.docs.set(d.digest, { mediaType: d.mediaType, bytes: Buffer.concat(keep) });
    });
  }

  /** What blobs/ holds so far: layers and configs, and apart from them manifests and indexes. */
  contents(): { blobs: { count: number; bytes: number }; manifests: { count: number; bytes: number } } {
    const out = { blobs: { count: 0, bytes: 0 }, manifests: { count: 0, bytes: 0 } };
    for (const [digest, size] of this.written) {
      const a = this.writtenDocs.has(digest) ? out.manifests : out.blobs;
      a.count++;
      a.bytes += size;
    }
    return out;
  }

  /** Dry runs (the writer only measures): the entry as put() would write it, without the blob's bytes. */
  reserve(d: Descriptor, bytes?: Uint8Array): Promise<void> {
    return this.put(d, Readable.from(bytes ? [Buffer.from(bytes)] : []));
  }

  async tag(root: Descriptor, name: TagName | undefined): Promise<void> {
    this.pending.push({ root, name });
  }

  async commit(): Promise<void> {
    this.committed.push(...this.pending.splice(0));
  }

  /** Completes the archive if any image was committed, else discards it. */
  async close(): Promise<void> {
    await this.queue;
    if (this.state === 'open' && this.committed.length > 0) {
      await this.serial(() => this.finalize());
      this.state = 'done';
      return;
    }
    if (this.state !== 'done') await this.abort();
  }

  async abort(): Promise<void> {
    await this.queue;
    if (this.state === 'done') return;
    this.state = 'failed';
    await this.writer.abort();
  }

  private async finalize(): Promise<void> {
    await this.start();
    this.o.signal?.throwIfAborted();
    let manifests: Descriptor[] = [];
    for (const { root, name } of this.committed) manifests = addRoot(manifests, root, name);
    const leftOut = this.o.deltaBase !== undefined ? this.leftOut(manifests) : 0;
    const annotations = leftOut > 0 ? { [ANNOTATION_DELTA_LEFT_OUT]: String(leftOut), [ANNOTATION_DELTA_BASE]: this.o.deltaBase! } : undefined;
    const index = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests, ...(annotations ? { annotations } : {}) };
    await this.writer.bytes('index.json', Buffer.from(JSON.stringify(index)));
    if (this.o.format === 'docker') {
      const { entries, repositories } = this.dockerMetadata();
      await this.writer.bytes('manifest.json', Buffer.from(JSON.stringify(entries)));
      await this.writer.bytes('repositories', Buffer.from(JSON.stringify(repositories)));
    }
    this.files = await this.writer.finish();
  }

  /**
   * manifest.json lists one entry per image manifest; an index root contributes the platform
   * docker on this host would run (else its first runnable image). Artifacts are left out.
   */
  private dockerMetadata(): { entries: DockerEntry[]; repositories: Record<string, Record<string, string>> } {
    const byManifest = new Map<Digest, DockerEntry>();
    const repositories: Record<string, Record<string, string>> = {};
    for (const { root, name } of this.committed) {
      const picked = this.pickImage(root);
      if (!picked) {
        const lacking = this.lackingLayer(root);
        const what =
          lacking === 'foreign' ? 'needs a foreign layer that is not in the archive'
          : lacking === 'left-out' ? 'has layers this delta archive leaves out'
          : 'is not a container image';
        warn(`${name?.name ?? name?.tag ?? root.digest} ${what}: written to the OCI index only (ferry load reads it), docker load will not see it`);
        continue;
      }
      const { digest, manifest } = picked;
      let entry = byManifest.get(digest);
      if (!entry) {
        entry = { Config: blobEntryName(manifest.config.digest), RepoTags: null, Layers: manifest.layers.map((l) => blobEntryName(l.digest)) };
        byManifest.set(digest, entry);
        if (manifest.layers.some((l) => layerCompression(l.mediaType) === 'zstd')) {
          warn(`${name?.name ?? root.digest} has zstd layers: docker before 23.0 cannot load them (re-save with --compress-layers gzip for old docker)`);
        }
      }
      const full = name?.name ? parseReference(name.name) : undefined;
      if (full?.tag) {
        const repoTag = familiarName({ domain: full.domain, path: full.path, tag: full.tag });
        entry.RepoTags = [...(entry.RepoTags ?? []), repoTag].filter((t, i, a) => a.indexOf(t) === i);
        const repo = familiarName({ domain: full.domain, path: full.path });
        const top = manifest.layers.at(-1);
        if (top) (repositories[repo] ??= {})[full.tag] = encodedOf(top.digest);
      }
    }
    return { entries: [...byManifest.values()], repositories };
  }

  /** How many distinct blobs the images below `roots` need that the archive does not hold (foreign layers aside). */
  private leftOut(roots: Descriptor[]): number {
    const absent = new Set<Digest>();
    const seen = new Set<Digest>();
    const visit = (d: Descriptor) => {
      const doc = this.docs.get(d.digest);
      if (!doc || seen.has(d.digest)) return;
      seen.add(d.digest);
      const parsed = parseManifestDocument(doc.bytes, { declared: doc.mediaType, where: d.digest });
      if (parsed.kind === 'index') return parsed.index.manifests.forEach(visit);
      for (const b of [parsed.manifest.config, ...parsed.manifest.layers]) {
        if (!this.written.has(b.digest) && !isForeignLayer(b)) absent.add(b.digest);
      }
    };
    roots.forEach(visit);
    return absent.size;
  }

  /** A layer of the root (or of an image of its index) the archive does not hold: foreign, or left out (--exclude-from). */
  private lackingLayer(root: Descriptor): 'foreign' | 'left-out' | undefined {
    const doc = this.docs.get(root.digest);
    if (!doc) return undefined;
    const parsed = parseManifestDocument(doc.bytes, { declared: doc.mediaType, where: root.digest });
    if (parsed.kind === 'manifest') {
      const absent = parsed.manifest.layers.filter((l) => !this.written.has(l.digest));
      return absent.some(isForeignLayer) ? 'foreign' : absent.length ? 'left-out' : undefined;
    }
    const found = parsed.index.manifests.filter((c) => c.digest !== root.digest).map((c) => this.lackingLayer(c));
    return found.includes('foreign') ? 'foreign' : found.includes('left-out') ? 'left-out' : undefined;
  }

  private pickImage(root: Descriptor): { digest: Digest; manifest: ImageManifest } | undefined {
    const asImage = (digest: Digest): ImageManifest | undefined => {
      const doc = this.docs.get(digest);
      if (!doc) return undefined;
      const parsed = parseManifestDocument(doc.bytes, { declared: doc.mediaType, where: digest });
      if (parsed.kind !== 'manifest') return undefined;
      const m = parsed.manifest;
      const imageConfig = m.config.mediaType === MediaType.OciConfig || m.config.mediaType === MediaType.DockerConfig;
      const complete = [m.config, ...m.layers].every((b) => this.written.has(b.digest));
      return imageConfig && complete && m.layers.every((l) => isLayerType(l.mediaType)) ? m : undefined;
    };
    const doc = this.docs.get(root.digest);
    if (!doc) return undefined;
    const parsed = parseManifestDocument(doc.bytes, { declared: doc.mediaType, where: root.digest });
    if (parsed.kind === 'manifest') {
      const m = asImage(root.digest);
      return m ? { digest: root.digest, manifest: m } : undefined;
    }
    const host = hostPlatform();
    const candidates = parsed.index.manifests.filter((c) => c.platform && !isAttestation(c) && asImage(c.digest));
    const best = candidates.find((c) => samePlatform(c.platform!, host)) ?? candidates[0];
    return best ? { digest: best.digest, manifest: asImage(best.digest)! } : undefined;
  }
}
