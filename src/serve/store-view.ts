import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, isFerryError } from '../errors.js';
import { MAX_INDEX_DEPTH } from '../graph.js';
import { algorithmOf, digestOf, type Digest } from '../oci/digest.js';
import { isManifestLike } from '../oci/mediatypes.js';
import { MAX_JSON_BYTES, parseManifestDocument, type Descriptor, type ParsedDocument } from '../oci/manifest.js';
import type { OciLayout } from '../locations/layout.js';
import { servedEntry, type RepoKey, type ServedEntry } from './names.js';

/** What the registry needs to know about a stored manifest or index; content is immutable, so cached. */
export interface ManifestInfo {
  digest: Digest;
  mediaType: string;
  size: number;
  kind: 'manifest' | 'index';
  /** Children that are manifests themselves (index entries), for reachability. */
  children: Digest[];
  subject?: Digest;
  artifactType?: string;
  annotations?: Record<string, string>;
}

interface Snapshot {
  stamp: string;
  entries: ServedEntry[];
  reachable: Map<RepoKey, Promise<Set<Digest>>>;
}

const MAX_CACHED = 100_000;

export function manifestInfo(digest: Digest, doc: ParsedDocument): ManifestInfo {
  const body = doc.kind === 'index' ? doc.index : doc.manifest;
  const info: ManifestInfo = {
    digest,
    mediaType: doc.mediaType,
    size: doc.bytes.byteLength,
    kind: doc.kind,
    children: doc.kind === 'index' ? doc.index.manifests.filter((m) => isManifestLike(m.mediaType)).map((m) => m.digest) : [],
  };
  if (body.subject) info.subject = body.subject.digest;
  const artifactType = body.artifactType ?? (doc.kind === 'manifest' ? doc.manifest.config.mediaType : undefined);
  if (artifactType !== undefined) info.artifactType = artifactType;
  if (body.annotations && Object.keys(body.annotations).length) info.annotations = body.annotations;
  return info;
}

/**
 * The registry's view of the store: index.json read again whenever it changes (other ferry
 * processes write it too), manifests parsed once per digest, and an index subject -> referrers
 * kept as manifests are read or pushed, so the Referrers API walks memory, not the disk.
 */
export class StoreView {
  private snapshot?: Promise<Snapshot>;
  private readonly infos = new Map<Digest, ManifestInfo | null>();
  private readonly bySubject = new Map<Digest, Set<Digest>>();

  constructor(readonly layout: OciLayout) {}

  private async current(): Promise<Snapshot> {
    const st = await stat(join(this.layout.dir, 'index.json'), { bigint: true }).catch(() => undefined);
    const stamp = st ? `${st.ino}:${st.mtimeNs}:${st.ctimeNs}:${st.size}` : 'none';
    const cached = this.snapshot;
    if (cached) {
      const snap = await cached.catch(() => undefined);
      if (snap?.stamp === stamp) return snap;
    }
    const next = this.layout.entries().then((list) => ({
      stamp,
      entries: list.map(servedEntry).filter((e): e is ServedEntry => e !== undefined),
      reachable: new Map<RepoKey, Promise<Set<Digest>>>(),
    }));
    this.snapshot = next;
    return next;
  }

  /** Forgets the cached index.json (after this process changed it). */
  invalidate(): void {
    this.snapshot = undefined;
  }

  async entries(): Promise<ServedEntry[]> {
    return (await this.current()).entries;
  }

  async entriesOf(key: RepoKey): Promise<ServedEntry[]> {
    return (await this.entries()).filter((e) => e.key === key);
  }

  /** The root a tag names (the last entry when a foreign writer left duplicates). */
  async resolveTag(key: RepoKey, tag: string): Promise<Descriptor | undefined> {
    const hits = (await this.entriesOf(key)).filter((e) => e.tag === tag);
    return hits.at(-1)?.entry.descriptor;
  }

  /** Every manifest digest the repository's entries reach (roots and index children). */
  async reachable(key: RepoKey): Promise<Set<Digest>> {
    const snap = await this.current();
    let set = snap.reachable.get(key);
    if (!set) {
      set = this.walk(snap.entries.filter((e) => e.key === key).map((e) => e.entry.descriptor.digest));
      snap.reachable.set(key, set);
    }
    return set;
  }

  /** What the repository's roots reach, the roots that are `digest` itself left out. */
  async reachableWithout(key: RepoKey, digest: Digest): Promise<Set<Digest>> {
    const snap = await this.current();
    return this.walk(snap.entries.filter((e) => e.key === key && e.entry.descriptor.digest !== digest).map((e) => e.entry.descriptor.digest));
  }

  /** The manifest and every manifest below it. */
  reachableFrom(digest: Digest): Promise<Set<Digest>> {
    return this.walk([digest]);
  }

  private async walk(roots: Digest[]): Promise<Set<Digest>> {
    const seen = new Set<Digest>();
    const visit = async (d: Digest, depth: number): Promise<void> => {
      if (seen.has(d) || depth > MAX_INDEX_DEPTH) return;
      seen.add(d);
      const info = await this.info(d).catch(() => undefined);
      for (const c of info?.children ?? []) await visit(c, depth + 1);
    };
    for (const r of roots) await visit(r, 0);
    return seen;
  }

  /** Parsed facts about a stored manifest; undefined when the store lacks it or it is no manifest. */
  async info(digest: Digest): Promise<ManifestInfo | undefined> {
    const known = this.infos.get(digest);
    if (known !== undefined) return known ?? undefined;
    const bytes = await this.readBytes(digest);
    if (!bytes) return undefined;
    let doc: ParsedDocument;
    try {
      doc = parseManifestDocument(bytes, { where: `manifest ${digest}` });
    } catch (e) {
      if (!isFerryError(e)) throw e;
      this.remember(digest, null);
      return undefined;
    }
    const info = manifestInfo(digest, doc);
    this.remember(digest, info);
    return info;
  }

  /** Records a manifest just pushed (its referrer link is known at once). */
  note(info: ManifestInfo): void {
    this.remember(info.digest, info);
  }

  private remember(digest: Digest, info: ManifestInfo | null): void {
    if (this.infos.size >= MAX_CACHED) {
      this.infos.clear();
      this.bySubject.clear();
      this.snapshot = undefined;
    }
    this.infos.set(digest, info);
    if (info?.subject) {
      let set = this.bySubject.get(info.subject);
      if (!set) this.bySubject.set(info.subject, (set = new Set()));
      set.add(digest);
    }
  }

  /**
   * A stored document's bytes, checked against its digest (a damaged store must not serve wrong
   * bytes). Undefined when absent or too large to be a manifest.
   */
  async readBytes(digest: Digest): Promise<Buffer | undefined> {
    const path = this.layout.blobPath(digest);
    const st = await stat(path).catch(() => undefined);
    if (!st?.isFile() || st.size > MAX_JSON_BYTES) return undefined;
    const bytes = await readFile(path);
    if (digestOf(bytes, algorithmOf(digest)) !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `stored blob ${digest} is damaged (its content has another digest); run \`ferry verify\``);
    }
    return bytes;
  }

  /** Descriptors of the manifests in `key` whose subject is `subject`, sorted by digest. */
  async referrers(key: RepoKey, subject: Digest): Promise<Descriptor[]> {
    const reach = await this.reachable(key);
    const out: Descriptor[] = [];
    for (const d of [...(this.bySubject.get(subject) ?? [])].sort()) {
      const info = this.infos.get(d);
      if (!info || !reach.has(d)) continue;
      const desc: Descriptor = { mediaType: info.mediaType, digest: d, size: info.size };
      if (info.artifactType !== undefined) desc.artifactType = info.artifactType;
      if (info.annotations) desc.annotations = info.annotations;
      out.push(desc);
    }
    return out;
  }
}
