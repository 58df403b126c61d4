import { open, type FileHandle } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError } from '../errors.js';
import { sniff, type Compression } from '../blob/compression.js';
import { digestOf, isDigest, parseDigest, type Digest } from '../oci/digest.js';
import { MediaType } from '../oci/mediatypes.js';
import { cosignSubject, MAX_JSON_BYTES, parseConfig, parseJson, parseManifestDocument, subjectOf, type Descriptor } from '../oci/manifest.js';
import { formatReference, repositoryName, tryParseReference, type Reference } from '../oci/reference.js';
import type { FetchOptions, Referrer, Source, TagName } from '../types.js';
import { CompressedBacking, PlainBacking, type ArchiveBacking } from './backing.js';
import { entryNames } from './graph.js';
import { EntryTap } from './tap.js';
import { cleanPath, linkTargetPath, type TarHeader } from './tar.js';
import { orderInputs, readVolumeHeader, refuseDirectory } from './scan.js';
import { VolumeSetBacking } from './set-backing.js';
import { notAnImageArchive, VOLUME_HEADER } from './volumes.js';
import { someNames } from '../util/list.js';

/** One image an archive offers. */
export interface ArchiveImage {
  /** What resolve() takes to find it. */
  ref: string;
  names: TagName[];
  from: 'index.json' | 'manifest.json';
  /** The index.json entry's annotations. */
  annotations?: Record<string, string>;
}

interface DockerEntry {
  Config: string;
  RepoTags?: string[] | null;
  Layers: string[];
}

const LAYER_TYPE: Record<string, string> = { none: MediaType.OciLayer, gzip: MediaType.OciLayerGzip, zstd: MediaType.OciLayerZstd };

/**
 * An archive read in place, as a Source: a plain tar is indexed once by its headers and every
 * blob is then a byte range of the file. A compressed archive cannot be seeked: a first pass
 * decompresses it to learn its entries, and blobs are then read by decompressing again, in order
 * (see CompressedBacking); nothing is written to disk either way. `ferry load` does not use this:
 * it reads any archive in a single pass instead.
 */
export class ArchiveSource implements Source {
  private readonly files = new Map<string, TarHeader>();
  private readonly links = new Map<string, TarHeader>();
  private readonly docs = new Map<Digest, Buffer>();
  /** Archive files that docker-save images use, by the digest they turned out to have. */
  private readonly byDigest = new Map<Digest, TarHeader>();
  private index?: Descriptor[];
  private dockerEntries?: DockerEntry[];
  /** The `subject` of each index.json entry read so far (null: none, or not a manifest). */
  private readonly subjects = new Map<Digest, Digest | null>();

  private constructor(readonly path: string, private readonly backing: ArchiveBacking) {}

  get label(): string {
    return this.path;
  }

  /** Blobs of a compressed archive come fastest one at a time, in archive order. */
  get sequential(): boolean {
    return this.backing.sequential;
  }

  static async open(path: string, o: { signal?: AbortSignal; hint?: (volume: string) => string } = {}): Promise<ArchiveSource> {
    return ArchiveSource.openFiles([path], o);
  }

  /**
   * One archive file, or every volume of one set (any order) read as one archive. A volume set
   * given in part (a volume missing), or mixed with a volume of another set, is refused, naming
   * the volume, with `hint` (given a volume's path) saying how to name the whole set.
   */
  static async openFiles(paths: string[], o: { signal?: AbortSignal; hint?: (volume: string) => string; label?: string } = {}): Promise<ArchiveSource> {
    const inputs = await orderInputs(paths, o.hint);
    if (!inputs[0]!.volume) return ArchiveSource.over(o.label ?? inputs[0]!.path, await openBacking(inputs[0]!.path, o.signal));
    const backing = await VolumeSetBacking.open(inputs, (p) => openBacking(p, o.signal), o.hint);
    return ArchiveSource.over(o.label ?? `${inputs[0]!.path} … (${inputs.length} volume${inputs.length === 1 ? '' : 's'})`, backing);
  }

  /**
   * Every volume of one set (any order), read as one archive: what sync reads back from a set it
   * wrote. A missing volume, or one of another set, is refused.
   */
  static async openSet(paths: string[], o: { signal?: AbortSignal; label?: string } = {}): Promise<ArchiveSource> {
    if (!(await readVolumeHeader(paths[0]!))) throw new FerryError('INVALID_INPUT', `${paths[0]} is not a volume of a ferry volume set`);
    return ArchiveSource.openFiles(paths, o);
  }

  private static async over(label: string, backing: ArchiveBacking): Promise<ArchiveSource> {
    try {
      const src = new ArchiveSource(label, backing);
      await src.load();
      return src;
    } catch (e) {
      await backing.close();
      throw e;
    }
  }

  private async load(): Promise<void> {
    for (const h of this.backing.headers) {
      const p = cleanPath(h.name);
      if (!p) continue;
      if (h.type === 'file') this.files.set(p, h);
      else if (h.type === 'symlink' || h.type === 'hardlink') this.links.set(p, h);
    }
    const index = await this.small('index.json');
    if (index) {
      try {
        const parsed = parseManifestDocument(index, { where: `${this.path}: index.json` });
        if (parsed.kind === 'index') this.index = parsed.index.manifests;
      } catch (e) {
        if (!this.files.has('manifest.json')) throw e;
      }
    }
    const manifest = await this.small('manifest.json');
    if (manifest) {
      const doc = parseJson(manifest, `${this.path}: manifest.json`);
      if (!Array.isArray(doc)) throw new FerryError('INVALID_INPUT', `${this.path}: manifest.json must be a JSON array`);
      this.dockerEntries = doc as DockerEntry[];
    }
    if (!this.index && !this.dockerEntries) {
      throw notAnImageArchive(this.path, this.files.has(VOLUME_HEADER));
    }
  }

  private async small(path: string): Promise<Buffer | undefined> {
    const h = this.files.get(path);
    if (!h) return undefined;
    if (h.size > MAX_JSON_BYTES) throw new FerryError('TOO_LARGE', `${this.path}: ${path} of ${h.size} bytes exceeds limit of ${MAX_JSON_BYTES} bytes`);
    return this.bytes(h);
  }

  private bytes(h: TarHeader): Promise<Buffer> {
    return this.backing.read(h);
  }

  /** Every image: OCI index entries first, then docker-save entries not also in the index. */
  images(): ArchiveImage[] {
    const out: ArchiveImage[] = [];
    for (const e of this.index ?? []) out.push({ ref: e.digest, names: entryNames(e), from: 'index.json', annotations: e.annotations });
    for (const [i, e] of (this.dockerEntries ?? []).entries()) {
      const names = this.repoTags(e);
      if (names.length > 0 && names.every((n) => out.some((o) => o.names.some((m) => m.name === n.name)))) continue;
      out.push({ ref: `@${i}`, names, from: 'manifest.json' });
    }
    return out;
  }

  private repoTags(e: DockerEntry): TagName[] {
    return repoTagNames(e.RepoTags);
  }

  /** The config path of manifest.json's entry `@N`, cleaned (`blobs/sha256/<hex>` in archives ferry and Docker ≥ 25 write). */
  dockerConfigPath(ref: string): string | undefined {
    const e = /^@\d+$/.test(ref) ? this.dockerEntries?.[Number(ref.slice(1))] : undefined;
    return typeof e?.Config === 'string' ? cleanPath(e.Config) : undefined;
  }

  /** The name an image has in the archive, for destinations that name none. */
  nameOf(ref: string): TagName | undefined {
    return this.images().find((i) => i.ref === ref)?.names[0];
  }

  /**
   * Finds an image by tag, full name (normalised: `alpine` = docker.io/library/alpine:latest),
   * digest, or `@N` (the Nth manifest.json entry, as skopeo numbers them). The OCI index is asked
   * first, so digests from a registry survive.
   */
  async resolve(ref: string): Promise<Descriptor> {
    const parsed = tryParseReference(ref);
    if (parsed?.digest) return this.resolvePinned(ref, parsed);
    return this.resolveLoose(ref, parsed);
  }

  /**
   * NAME:TAG@DIGEST is found by its name and must have that digest (it was taken by name alone,
   * the digest ignored); NAME@DIGEST is that digest under that repository's names, or unnamed.
   * As the store resolves them.
   */
  private async resolvePinned(ref: string, parsed: Reference): Promise<Descriptor> {
    const digest = parsed.digest!;
    const named = ref.slice(0, ref.lastIndexOf('@'));
    // `plain@DIGEST` where an entry is tagged just `plain` (saved from a layout): that tag, pinned.
    const bareTag = !/[/:]/.test(named) && (this.index ?? []).some((e) => taggedBare(e, named));
    if (parsed.tag || bareTag) {
      const full = bareTag ? named : formatReference({ domain: parsed.domain, path: parsed.path, tag: parsed.tag });
      const d = await this.resolveLoose(full, tryParseReference(full));
      if (d.digest !== digest) throw new FerryError('NOT_FOUND', `image "${ref}" not found in ${this.path}: ${full} is ${d.digest}, not ${digest}`);
      return d;
    }
    const repo = repositoryName(parsed);
    const ofRepo = (name: string | undefined) => {
      const r = name === undefined ? undefined : tryParseReference(name);
      return r !== undefined && repositoryName(r) === repo;
    };
    const hit = (this.index ?? []).find((e) => e.digest === digest && (entryNames(e).every((n) => !n.name) || entryNames(e).some((n) => ofRepo(n.name))));
    if (hit) return { mediaType: hit.mediaType, digest: hit.digest, size: hit.size };
    throw new FerryError('NOT_FOUND', `image "${ref}" not found in ${this.path}: no image of ${repo} has digest ${digest}`, {
      hint: `the digest alone names it whatever its name: ${digest}`,
    });
  }

  private async resolveLoose(ref: string, parsed: Reference | undefined): Promise<Descriptor> {
    const full = parsed?.tag ? formatReference({ domain: parsed.domain, path: parsed.path, tag: parsed.tag }) : undefined;
    if (isDigest(ref)) {
      const hit = (this.index ?? []).find((e) => e.digest === ref);
      if (hit) return { mediaType: hit.mediaType, digest: hit.digest, size: hit.size };
      const h = this.fileFor(ref);
      // Only a document-sized file can be a manifest: a layer's digest is not read into memory.
      const doc = this.docs.get(ref) ?? (h && h.size <= MAX_JSON_BYTES ? await this.bytes(h) : undefined);
      if (doc) {
        const p = parseManifestDocument(doc, { where: ref });
        return { mediaType: p.mediaType, digest: ref, size: doc.length };
      }
    }
    const index = this.index ?? [];
    const tiers: Array<(e: Descriptor) => boolean> = [
      (e) => taggedBare(e, ref),
      (e) => full !== undefined && entryNames(e).some((n) => n.name === full),
    ];
    for (const match of tiers) {
      const hits = index.filter(match);
      const digests = new Set(hits.map((h) => h.digest));
      if (digests.size > 1) throw new FerryError('INVALID_INPUT', `"${ref}" is ambiguous in ${this.path}: it names ${[...digests].join(', ')}`);
      if (hits.length) return { mediaType: hits[0]!.mediaType, digest: hits[0]!.digest, size: hits[0]!.size };
    }
    const entries = this.dockerEntries ?? [];
    let entry: DockerEntry | undefined;
    if (/^@\d+$/.test(ref)) entry = entries[Number(ref.slice(1))];
    else if (full) entry = entries.find((e) => this.repoTags(e).some((n) => n.name === full));
    if (entry) return this.dockerManifest(entry);
    const known = this.images().flatMap((i) => i.names.map((n) => n.name ?? n.tag));
    throw new FerryError('NOT_FOUND', `image "${ref}" not found in ${this.path}`, { hint: known.length ? `available: ${someNames(known, ref)}` : 'the archive has no named images' });
  }

  /** Resolves an archive path through links that stay inside it (A16); `..`/absolute refused (A1). */
  private entryAt(path: string, what: string): TarHeader {
    if (path.startsWith('/') || path.split('/').includes('..')) throw new FerryError('INVALID_INPUT', `${this.path}: ${what} path escapes archive: ${JSON.stringify(path)}`);
    let p = cleanPath(path) ?? '';
    for (let hops = 0; hops <= 16; hops++) {
      const f = this.files.get(p);
      if (f) return f;
      const l = this.links.get(p);
      if (!l) throw new FerryError('INTEGRITY', `${this.path}: ${what} ${JSON.stringify(path)} is not in the archive`);
      const next = linkTargetPath(p, l.type as 'symlink' | 'hardlink', l.linkname);
      if (!next) throw new FerryError('INVALID_INPUT', `${this.path}: ${what} path escapes archive: ${JSON.stringify(p)} links to ${JSON.stringify(l.linkname)}`);
      p = next;
    }
    throw new FerryError('INVALID_INPUT', `${this.path}: ${what} ${JSON.stringify(path)}: too many levels of links`);
  }

  private async hashEntry(h: TarHeader, diff: boolean) {
    const tap = new EntryTap({ where: `${this.path}: ${h.name}`, diff, size: h.size });
    await pipeline(await this.backing.stream(h, 0), tap, sinkAll());
    return tap.result();
  }

  /**
   * A docker-save entry as an OCI manifest (Docker ≥ 25's shape). Plain layers take their
   * diff_id as digest, checked when they are read; compressed ones are hashed now, diff_id included.
   */
  private async dockerManifest(e: DockerEntry): Promise<Descriptor> {
    if (typeof e.Config !== 'string' || !Array.isArray(e.Layers)) throw new FerryError('INVALID_INPUT', `${this.path}: manifest.json entry needs "Config" and "Layers"`);
    const cfgH = this.entryAt(e.Config, 'config');
    if (cfgH.size > MAX_JSON_BYTES) throw new FerryError('TOO_LARGE', `${this.path}: config ${e.Config} exceeds limit`);
    const cfgBytes = await this.bytes(cfgH);
    const cfgDigest = digestOf(cfgBytes);
    this.byDigest.set(cfgDigest, cfgH);
    const diffIds = parseConfig(cfgBytes, `${this.path}: ${e.Config}`).rootfs.diff_ids;
    if (diffIds.length !== e.Layers.length) throw new FerryError('INTEGRITY', `${this.path}: config ${e.Config} lists ${diffIds.length} diff_ids for ${e.Layers.length} layers`);
    const layers: Descriptor[] = [];
    for (const [i, lp] of e.Layers.entries()) {
      const h = this.entryAt(lp, 'layer');
      const c = sniff(await this.backing.read(h, 6));
      let digest: Digest;
      if (c === 'none') digest = parseDigest(diffIds[i]);
      else {
        const r = await this.hashEntry(h, true);
        if (r.diffError) throw r.diffError;
        if (r.diffId !== diffIds[i]) throw new FerryError('INTEGRITY', `${this.path}: layer ${lp}: uncompressed content hashes to ${r.diffId}, the config says diff_id ${diffIds[i]}`);
        digest = r.digest;
      }
      this.byDigest.set(digest, h);
      layers.push({ mediaType: LAYER_TYPE[c] ?? MediaType.OciLayer, digest, size: h.size });
    }
    const bytes = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config: { mediaType: MediaType.OciConfig, digest: cfgDigest, size: cfgBytes.length }, layers }));
    const d: Descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length };
    this.docs.set(d.digest, bytes);
    return d;
  }

  /**
   * Images of index.json whose `subject` is `d`, plus those tagged cosign-style (`sha256-<hex>.sig`),
   * as a layout lists them: how `copy --referrers` and `push --from` find an archive's referrers.
   */
  async referrers(d: Descriptor, o: FetchOptions = {}): Promise<Referrer[]> {
    const out: Referrer[] = [];
    for (const e of this.index ?? []) {
      o.signal?.throwIfAborted();
      if (e.digest === d.digest || out.some((r) => r.descriptor.digest === e.digest)) continue;
      const descriptor = { mediaType: e.mediaType, digest: e.digest, size: e.size };
      const tag = entryNames(e).find((n) => cosignSubject(n.tag) === d.digest)?.tag;
      if (tag) out.push({ descriptor, tag });
      else if ((await this.subjectOf(e)) === d.digest) out.push({ descriptor });
    }
    return out;
  }

  /** What an index.json entry refers to: its manifest's `subject`, else the digest a cosign-style tag names. */
  async subjectOf(e: Descriptor): Promise<Digest | undefined> {
    const tagged = entryNames(e).map((n) => cosignSubject(n.tag)).find((s) => s !== undefined);
    if (tagged) return tagged;
    if (!this.subjects.has(e.digest)) this.subjects.set(e.digest, await this.readSubject(e));
    return this.subjects.get(e.digest) ?? undefined;
  }

  private async readSubject(e: Descriptor): Promise<Digest | null> {
    const h = e.size <= MAX_JSON_BYTES ? this.fileFor(e.digest) : undefined;
    if (!h || h.size !== e.size) return null;
    // Not a manifest this reader understands: not a referrer (the copy reports a bad one).
    return subjectOf(await this.bytes(h), { declared: e.mediaType, where: e.digest }) ?? null;
  }

  private fileFor(d: Digest): TarHeader | undefined {
    const [alg, hex] = d.split(':');
    const p = `blobs/${alg}/${hex}`;
    if (this.files.has(p) || this.links.has(p)) return this.entryAt(p, 'blob');
    return this.byDigest.get(d);
  }

  /** Whether the archive holds a blob of this digest and size (its content is checked when read). */
  has(d: Descriptor): boolean {
    if (this.docs.has(d.digest)) return this.docs.get(d.digest)!.length === d.size;
    try {
      return this.fileFor(d.digest)?.size === d.size;
    } catch {
      return false; // a link leading outside the archive: not a blob it holds
    }
  }

  async fetch(d: Descriptor, o: FetchOptions = {}): Promise<Readable> {
    const doc = this.docs.get(d.digest);
    if (doc) return Readable.from([doc.subarray(o.offset ?? 0)]);
    const h = this.fileFor(d.digest);
    if (!h) throw new FerryError('NOT_FOUND', `blob ${d.digest} is not in ${this.path}`);
    // The reader's own check would name only the set, not the volume that holds the wrong blob.
    if (h.size !== d.size && this.backing.locate) {
      throw new FerryError('SIZE_MISMATCH', `${this.backing.locate(h)}: blob ${d.digest} is ${h.size} bytes; expected ${d.size}`, {
        hint: 'copy that volume again from where the set was written, or write the set again (ferry verify of every volume lists what is damaged)',
      });
    }
    return this.backing.stream(h, o.offset ?? 0, o.signal);
  }

  async close(): Promise<void> {
    await this.backing.close();
  }
}

/** An archive file opened, and its compression as its first bytes say. */
export async function openSniffed(path: string): Promise<{ fh: FileHandle; compression: Compression }> {
  await refuseDirectory(path);
  const fh = await open(path, 'r').catch((e: NodeJS.ErrnoException) => {
    throw e.code === 'ENOENT' ? new FerryError('NOT_FOUND', `${path}: no such file`) : e;
  });
  try {
    const head = Buffer.alloc(6);
    const { bytesRead } = await fh.read(head, 0, 6, 0);
    return { fh, compression: sniff(head.subarray(0, bytesRead)) };
  } catch (e) {
    await fh.close().catch(() => {});
    throw e;
  }
}

/** One archive file's entries: read in place if plain, by decompressing if not. */
async function openBacking(path: string, signal?: AbortSignal): Promise<ArchiveBacking> {
  const { fh, compression } = await openSniffed(path);
  try {
    if (compression !== 'none') {
      await fh.close();
      return await CompressedBacking.open(path, signal);
    }
    return await PlainBacking.open(fh, path, path, signal);
  } catch (e) {
    await fh.close().catch(() => {});
    throw e;
  }
}

/** The full names a manifest.json entry's `RepoTags` gives (anything unparsable is ignored). */
export function repoTagNames(tags: unknown): TagName[] {
  const out: TagName[] = [];
  for (const t of Array.isArray(tags) ? tags : []) {
    const r = typeof t === 'string' ? tryParseReference(t) : undefined;
    if (r?.tag && !r.digest) out.push({ tag: r.tag, name: formatReference({ domain: r.domain, path: r.path, tag: r.tag }) });
  }
  return out;
}

function sinkAll(): Writable {
  return new Writable({ highWaterMark: 1 << 20, write: (_c, _e, cb) => cb() });
}

/** An index entry a bare tag names: tagged so without a repository, or so in its ref.name. */
function taggedBare(e: Descriptor, tag: string): boolean {
  return entryNames(e).some((n) => n.tag === tag && !n.name) || e.annotations?.['org.opencontainers.image.ref.name'] === tag;
}
