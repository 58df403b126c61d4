import { Readable } from 'node:stream';
import { ANNOTATION_SOURCE_INDEX } from '../copy.js';
import { FerryError } from '../errors.js';
import { MAX_INDEX_DEPTH, readDocument } from '../graph.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME } from '../locations/layout.js';
import { digestOf, type Digest } from '../oci/digest.js';
import { isForeignLayer, isLayerType, isManifestLike, layerCompression, MediaType } from '../oci/mediatypes.js';
import { parseConfig, parseJson, parseManifestDocument, plainDescriptor, type Descriptor, type ImageIndex, type ImageManifest } from '../oci/manifest.js';
import { formatPlatform, isAttestation, normalizePlatform } from '../oci/platform.js';
import { formatReference, tryParseReference } from '../oci/reference.js';
import type { Source, TagName } from '../types.js';
import { kindOf, type Reporter } from './report.js';
import { fileBytes, LayoutTarget, type IngestTarget, type ScannedFile, type ScanState } from './scan.js';
import { linkTargetPath } from './tar.js';
import { ANNOTATION_DELTA_BASE, ANNOTATION_DELTA_LEFT_OUT } from './writer.js';

/** One image the archive names, as it will be stored. */
export interface ArchiveRoot {
  descriptor: Descriptor;
  names: TagName[];
  /** Where it was described: `index.json` or `manifest.json`. */
  from: 'index.json' | 'manifest.json';
  label: string;
}

export interface ArchiveGraph {
  roots: ArchiveRoot[];
  /** A delta archive (save --exclude-from): how many blobs its images need that it does not hold, and what it was made against. */
  delta?: { leftOut: number; base: string };
  /** Content held in memory or built here (manifests for docker-save images), children first. */
  writes: Array<{ descriptor: Descriptor; bytes: Buffer }>;
}

/** A runnable image found in the graph, to compare the two descriptions of one archive. */
interface ImageFacts {
  manifest: Descriptor;
  config: Digest;
  layers: Digest[];
}

interface Checked {
  ok: boolean;
  problems: FerryError[];
  writes: ArchiveGraph['writes'];
  images: ImageFacts[];
  /** The descriptor to store (a subset index when platforms were missing). */
  descriptor: Descriptor;
}

const CONFIG_TYPES = new Set<string>([MediaType.OciConfig, MediaType.DockerConfig]);
const LAYER_TYPE = { none: MediaType.OciLayer, gzip: MediaType.OciLayerGzip, zstd: MediaType.OciLayerZstd } as Record<string, string>;

/** The names an index.json entry carries (docker ≥ 25 style, or a full reference in ref.name). */
export function entryNames(e: Descriptor): TagName[] {
  const full = e.annotations?.[ANNOTATION_IMAGE_NAME];
  const ref = e.annotations?.[ANNOTATION_REF_NAME];
  const parsed = full ? tryParseReference(full) : ref && /[/:@]/.test(ref) ? tryParseReference(ref) : undefined;
  if (parsed?.tag) return [{ tag: parsed.tag, name: formatReference({ domain: parsed.domain, path: parsed.path, tag: parsed.tag }) }];
  return ref ? [{ tag: ref }] : [];
}

const sameName = (a: TagName, b: TagName) => (a.name ?? a.tag) === (b.name ?? b.tag);

/** Where verify looks for the blobs a delta archive leaves out: the store, or nowhere when there is none. */
export interface DeltaCheck {
  store?: { has(d: Descriptor): Promise<boolean>; where: string };
}

export const DELTA_HINT = 'load the archive the delta was made against first, or make the delta from an up-to-date inventory';

/**
 * Turns what the scan saw into images: the OCI index (index.json) and the docker description
 * (manifest.json) are each checked completely — every blob present with its size, diff_ids
 * against the decompressed layers — then compared; where they disagree (docker 25 writer bugs),
 * the consistent one wins with a warning, and verify lists the disagreement.
 */
export async function buildGraph(state: ScanState, target: IngestTarget, reporter: Reporter, o: { verifyDelta?: DeltaCheck } = {}): Promise<ArchiveGraph> {
  // A blob stored as a link to another blob entry (some writers dedupe that way) counts if its content is right.
  for (const [path, link] of state.links) {
    const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(path);
    const to = m ? linkTargetPath(path, link.type, link.linkname) : undefined;
    const f = to ? state.files.get(to) : undefined;
    if (m && f && f.digest === `${m[1]}:${m[2]}` && !state.byDigest.has(f.digest)) state.byDigest.set(f.digest, f);
  }
  const ctx = new Context(state, target, reporter, o.verifyDelta);
  const indexBytes = state.meta.get('index.json');
  const manifestBytes = state.meta.get('manifest.json');
  if (!indexBytes && !manifestBytes) {
    // A volume's list said they are missing: nothing more to say.
    if (state.damagedMeta.has('index.json') || state.damagedMeta.has('manifest.json')) return { roots: [], writes: [] };
    reporter.problem('invalid', 'INVALID_INPUT', `${state.where}: not an image archive (it has neither index.json nor manifest.json)`, {
      hint: notAnArchiveHint(state),
    });
    return { roots: [], writes: [] };
  }
  // One a volume's list found corrupt is not used, and was reported by the scan.
  const oci = !indexBytes ? undefined : state.damagedMeta.has('index.json') ? { error: ctx.damaged('index.json'), roots: [] } : await ctx.fromIndex(indexBytes);
  const docker = !manifestBytes ? undefined : state.damagedMeta.has('manifest.json') ? { error: ctx.damaged('manifest.json'), entries: [] } : await ctx.fromManifestJson(manifestBytes);

  const roots: ArchiveRoot[] = [];
  const writes: ArchiveGraph['writes'] = [];
  const add = (r: ArchiveRoot, w: ArchiveGraph['writes']) => {
    roots.push(r);
    writes.push(...w);
  };

  const ociError = oci?.error && !ctx.wasReported(oci.error) ? oci.error : undefined;
  const dockerError = docker?.error && !ctx.wasReported(docker.error) ? docker.error : undefined;
  if (ociError && (!docker || docker.error)) reporter.error(ociError, 'invalid', { path: 'index.json' });
  if (dockerError && (!oci || oci.error)) reporter.error(dockerError, 'invalid', { path: 'manifest.json' });
  if (ociError && docker && !docker.error) reporter.inconsistency(`${state.where}: index.json is invalid (${ociError.message}); images loaded from manifest.json`);
  if (dockerError && oci && !oci.error) reporter.inconsistency(`${state.where}: manifest.json is invalid (${dockerError.message}); images loaded from index.json`);

  const ociRoots = oci && !oci.error ? oci.roots : [];
  const dockerEntries = docker && !docker.error ? docker.entries : [];
  const goodImages = ociRoots.filter((r) => r.checked.ok).flatMap((r) => r.checked.images.map((i) => ({ ...i, root: r })));
  // Problems are reported together at the end, so that every missing blob is named at once.
  const failures: FerryError[] = [];
  // Names of images with a corrupt blob (reported by the scan): manifest.json's account of them is no way round it.
  const corrupt: TagName[] = [];
  let corruptRoots = 0;

  for (const r of ociRoots) {
    if (r.checked.ok) {
      add(r.root, r.checked.writes);
      continue;
    }
    if (r.checked.problems.some((p) => ctx.wasReported(p))) {
      corrupt.push(...r.root.names);
      corruptRoots++;
      failures.push(...r.checked.problems);
      continue;
    }
    const covered = r.root.names.length > 0 && r.root.names.every((n) => dockerEntries.some((d) => d.checked.ok && d.root.names.some((m) => sameName(m, n))));
    if (covered) reporter.inconsistency(`${state.where}: index.json entry ${r.root.label} is broken (${r.checked.problems[0]!.message}); loaded from manifest.json instead`);
    else failures.push(...r.checked.problems);
  }
  for (const d of dockerEntries) {
    const facts = d.checked.images[0];
    const match = facts && goodImages.find((g) => g.config === facts.config && g.layers.join() === facts.layers.join());
    // Its names, or unnamed and like no image index.json has whole, say it is one of those: no disagreement to add.
    const ofCorrupt = d.root.names.length > 0 ? d.root.names.every((n) => corrupt.some((m) => sameName(m, n))) : !match && corruptRoots > 0;
    if (ofCorrupt) {
      if (!d.checked.ok) failures.push(...d.checked.problems);
      continue;
    }
    if (match) {
      // Same image in both descriptions: keep the OCI one (original digests); names only manifest.json has are added.
      const known = roots.filter((r) => r.descriptor.digest === match.root.root.descriptor.digest || r.descriptor.digest === match.manifest.digest).flatMap((r) => r.names);
      const missing = d.root.names.filter((n) => !known.some((k) => sameName(k, n)));
      if (missing.length) {
        reporter.inconsistency(`${state.where}: manifest.json names ${missing.map((n) => n.name ?? n.tag).join(', ')} but index.json does not; added`);
        add({ descriptor: match.manifest, names: missing, from: 'index.json', label: d.root.label }, []);
      }
      continue;
    }
    if (!d.checked.ok) {
      // Broken only by what the scan reported (a corrupt blob index.json does not use): that problem says it all.
      if (d.checked.problems.every((p) => ctx.wasReported(p))) continue;
      if (oci && !oci.error && d.root.names.length > 0 && d.root.names.every((n) => roots.some((r) => r.names.some((m) => sameName(m, n))))) {
        reporter.inconsistency(`${state.where}: manifest.json entry ${d.root.label} is broken (${d.checked.problems[0]!.message}); index.json describes it`);
      } else failures.push(...d.checked.problems);
      continue;
    }
    if (oci && !oci.error) reporter.inconsistency(`${state.where}: index.json and manifest.json disagree about ${d.root.label}; loaded as manifest.json describes it`);
    add(d.root, d.checked.writes);
  }

  for (const p of failures) if (!ctx.isMissingBlob(p) && !ctx.wasReported(p)) reporter.error(p, kindOf(p));
  ctx.reportAbsent(failures.filter((p) => ctx.isMissingBlob(p)));

  const seen = new Set<Digest>();
  const delta = ctx.deltaSummary();
  return { roots, writes: writes.filter((w) => !seen.has(w.descriptor.digest) && !!seen.add(w.descriptor.digest)), ...(delta ? { delta } : {}) };
}

class Context {
  /** Reads documents for readDocument(): from memory, else back from the target. */
  private readonly docs: Source;
  /** Set when index.json says the archive is a delta (save --exclude-from). */
  private delta?: { base: string };
  /** Blobs the images need that the archive does not hold, and where each is used. */
  private readonly absent = new Map<Digest, string[]>();
  /** The problems that say a blob is in neither the archive nor the target, with the blob. */
  private readonly missing = new Map<FerryError, Digest>();
  /** The problems that only restate one the scan reported (a corrupt blob): they fail an image, and are not listed again. */
  private readonly reported = new Set<FerryError>();

  constructor(private readonly state: ScanState, private readonly target: IngestTarget, private readonly reporter: Reporter, private readonly verifyDelta?: DeltaCheck) {
    this.docs = {
      resolve: async (ref) => {
        throw new FerryError('INTERNAL', `resolve(${ref}) on an archive graph`);
      },
      fetch: async (d) => {
        const bytes = await this.bytesOf(d);
        if (!bytes) throw new FerryError('NOT_FOUND', `manifest ${d.digest} is not in the archive`);
        return Readable.from([bytes]);
      },
      close: async () => {},
    };
  }

  private async bytesOf(d: Descriptor): Promise<Buffer | undefined> {
    const f = this.state.byDigest.get(d.digest);
    if (f) return fileBytes(f, this.target);
    return this.target.read?.(d);
  }

  private async present(d: Descriptor): Promise<'archive' | 'target' | undefined> {
    if (this.state.byDigest.has(d.digest)) return 'archive';
    if (await this.target.has(d)) return 'target';
    if (!this.delta || !this.verifyDelta) return undefined;
    // verify of a delta: a blob it leaves out is no problem when the store has it, or when there is no store to ask.
    const store = this.verifyDelta.store;
    return !store || (await store.has(d)) ? 'target' : undefined;
  }

  deltaSummary(): ArchiveGraph['delta'] {
    return this.delta && { leftOut: this.absent.size, base: this.delta.base };
  }

  isMissingBlob(p: FerryError): boolean {
    return this.missing.has(p);
  }

  wasReported(p: FerryError): boolean {
    return this.reported.has(p);
  }

  /**
   * What the scan reported about a blob the archive should hold: its content does not match its
   * name, or a volume's list names it but the volume lacks it (a split blob: one of its parts).
   */
  private scanFault(digest: Digest): string | undefined {
    if (this.state.byDigest.has(digest)) return undefined;
    if (this.state.corrupt.has(digest)) return 'is corrupt in the archive';
    if (this.state.lost.has(digest)) return 'is missing from its volume';
    return undefined;
  }

  /** index.json or manifest.json as a volume's list found it corrupt (reported by the scan). */
  damaged(name: string): FerryError {
    const e = new FerryError('INTEGRITY', `${this.state.where}: ${name} is corrupt in the archive`);
    this.reported.add(e);
    return e;
  }

  /** A problem the scan already reported: it fails an image and is not listed again. */
  private reportedProblem(label: string, what: string, blob: string, fault = 'is corrupt in the archive'): FerryError {
    const e = new FerryError('INTEGRITY', `${label}: ${what} ${blob} ${fault}`);
    this.reported.add(e);
    return e;
  }

  /**
   * Every blob in neither the archive nor the target, named at once with the images that need it;
   * for a delta, said to be left out on purpose, with what it was made against. verify of a delta
   * with no store to look in only notes them: a delta is incomplete by design.
   */
  reportAbsent(problems: FerryError[]): void {
    const where = this.state.where;
    const digests = [...new Set(problems.map((p) => this.missing.get(p)!))];
    const uses = (d: Digest) => this.absent.get(d)!.join('; ');
    const list = (ds: Digest[]) => ds.map((d) => `\n  ${d}: ${uses(d)}`).join('');
    const delta = this.delta;
    const store = this.verifyDelta?.store;
    if (delta && this.verifyDelta) {
      const there = store ? `; ${this.absent.size - digests.length} of them are in the store ${store.where}` : '; there is no store here to look for them in';
      this.reporter.note(`${where}: ${this.absent.size} blob(s) left out (delta, made against ${delta.base}): they must already be at the destination${there}`);
    }
    if (digests.length === 0) return;
    const dest = this.target instanceof LayoutTarget ? this.target.layout.dir : 'the destination';
    if (this.reporter.mode === 'throw') {
      const head = delta
        ? `${where} is a delta (made against ${delta.base}): ${digests.length} blob(s) it leaves out are not in ${dest} either:`
        : `${where}: ${digests.length} blob(s) are neither in the archive nor in ${dest}:`;
      this.reporter.problem('missing', 'INTEGRITY', head + list(digests), {
        hint: delta ? DELTA_HINT : 'write the archive again from its source; if it is a delta (save --exclude-from), load the archive it was made against first',
      });
      return;
    }
    if (!delta || !store) {
      // index.json and manifest.json may both need a blob: it is named once.
      const named = new Set<Digest>();
      for (const p of problems) {
        const d = this.missing.get(p)!;
        if (named.has(d)) continue;
        named.add(d);
        this.reporter.error(p, 'missing');
      }
      return;
    }
    for (const d of digests) this.reporter.problem('missing', 'INTEGRITY', `${d} left out (delta) and not in the store ${store.where} either: ${uses(d)}`, { digest: d });
  }

  // --- index.json ---

  async fromIndex(bytes: Buffer): Promise<{ error?: FerryError; roots: Array<{ root: ArchiveRoot; checked: Checked }> }> {
    const where = `${this.state.where}: index.json`;
    let index: ImageIndex;
    try {
      const doc = parseJson(bytes, where) as { manifests?: unknown } | null;
      if (!doc || typeof doc !== 'object' || !Array.isArray(doc.manifests)) {
        throw new FerryError('INVALID_INPUT', `${where}: not an image index ("manifests" must be an array)`);
      }
      const parsed = parseManifestDocument(bytes, { where });
      if (parsed.kind !== 'index') throw new FerryError('INVALID_INPUT', `${where}: not an image index`);
      index = parsed.index;
      if (Number(index.annotations?.[ANNOTATION_DELTA_LEFT_OUT]) > 0) this.delta = { base: index.annotations?.[ANNOTATION_DELTA_BASE] || 'an inventory' };
    } catch (e) {
      if (e instanceof FerryError) return { error: e, roots: [] };
      throw e;
    }
    const roots: Array<{ root: ArchiveRoot; checked: Checked }> = [];
    for (const [i, e] of index.manifests.entries()) {
      const names = entryNames(e);
      const label = names[0]?.name ?? names[0]?.tag ?? `index.json entry ${i + 1} (${e.digest})`;
      if (!isManifestLike(e.mediaType)) {
        this.reporter.note(`${where}: entry ${label} is a ${e.mediaType}, not an image: skipped`);
        continue;
      }
      const checked = await this.checkNode(e, 0, label);
      roots.push({ root: { descriptor: checked.descriptor, names, from: 'index.json', label }, checked });
    }
    return { roots };
  }

  private async checkNode(d: Descriptor, depth: number, label: string): Promise<Checked> {
    const out: Checked = { ok: true, problems: [], writes: [], images: [], descriptor: plainDescriptor(d) };
    const fail = (e: FerryError) => {
      out.ok = false;
      out.problems.push(e);
      return out;
    };
    if (depth > MAX_INDEX_DEPTH) return fail(new FerryError('TOO_LARGE', `${label}: index nesting exceeds limit of ${MAX_INDEX_DEPTH} levels`));
    let doc;
    try {
      doc = await readDocument(this.docs, d);
    } catch (e) {
      if (!(e instanceof FerryError)) throw e;
      const fault = e.code === 'NOT_FOUND' ? this.scanFault(d.digest) : undefined;
      if (fault) return fail(this.reportedProblem(label, 'manifest', d.digest, fault));
      if (e.code === 'NOT_FOUND') return fail(new FerryError('INTEGRITY', `${label}: manifest ${d.digest} is not in the archive`));
      return fail(new FerryError(e.code, `${label}: ${e.message}`));
    }
    const own = this.memoryWrite(d);
    if (doc.kind === 'manifest') {
      await this.checkImage(d, doc.manifest, label, out);
      if (own) out.writes.push(own);
      return out;
    }
    const kept: Descriptor[] = [];
    const dropped: Descriptor[] = [];
    for (const c of doc.index.manifests) {
      const sub = isManifestLike(c.mediaType) ? await this.checkNode(c, depth + 1, `${label} [${c.platform ? formatPlatform(normalizePlatform(c.platform)) : c.digest}]`) : await this.checkBlob(c, label);
      if (sub.ok) {
        kept.push(c);
        out.writes.push(...sub.writes);
        out.images.push(...sub.images);
      } else if (depth === 0 && isManifestLike(c.mediaType) && sub.problems.every((p) => p.code === 'INTEGRITY' && /not in the archive/.test(p.message) && !(this.delta && this.missing.has(p)))) {
        dropped.push(c);
      } else {
        out.ok = false;
        out.problems.push(...sub.problems);
      }
    }
    if (!out.ok) return out;
    if (dropped.length > 0) {
      // A partial export (containerd-store docker save): keep the platforms that are all here.
      if (kept.filter((c) => !isAttestation(c)).length === 0) {
        return fail(new FerryError('INTEGRITY', `${label}: the archive holds none of the images of index ${d.digest} (${dropped.map((c) => c.digest).join(', ')} not in the archive)`));
      }
      const subset = Buffer.from(JSON.stringify({ ...doc.index, manifests: kept }));
      const sd: Descriptor = { mediaType: doc.mediaType, digest: digestOf(subset), size: subset.length };
      this.reporter.note(
        `${label}: the archive lacks ${dropped.length} of the ${doc.index.manifests.length} entries of index ${d.digest} (${dropped.map((c) => (c.platform ? formatPlatform(c.platform) : c.digest)).join(', ')}); loaded the rest as a new index`,
      );
      out.writes.push({ descriptor: sd, bytes: subset });
      out.descriptor = { ...sd, annotations: { [ANNOTATION_SOURCE_INDEX]: d.digest } };
      return out;
    }
    if (own) out.writes.push(own);
    return out;
  }

  private async checkBlob(d: Descriptor, label: string): Promise<Checked> {
    const out: Checked = { ok: true, problems: [], writes: [], images: [], descriptor: d };
    const p = await this.blobProblem(d, label, 'blob');
    if (p) {
      out.ok = false;
      out.problems.push(p);
    }
    const w = this.memoryWrite(d);
    if (w) out.writes.push(w);
    return out;
  }

  /** Corrupt, missing, or present with another size. */
  private async blobProblem(d: Descriptor, label: string, what: string): Promise<FerryError | undefined> {
    const fault = this.scanFault(d.digest);
    if (fault) return this.reportedProblem(label, what, d.digest, fault);
    const where = await this.present(d);
    if (where !== 'archive' && !isForeignLayer(d)) this.noteAbsent(d.digest, `${what} of ${label}`);
    if (!where) {
      if (isForeignLayer(d)) return undefined;
      return this.missingBlob(d.digest, `${label}: ${what} ${d.digest} is not in the archive`);
    }
    const f = this.state.byDigest.get(d.digest);
    if (f && f.size !== d.size) return new FerryError('SIZE_MISMATCH', `${label}: ${what} ${d.digest} is ${f.size} bytes in the archive, the manifest says ${d.size}`);
    return undefined;
  }

  private noteAbsent(digest: Digest, use: string): void {
    const uses = this.absent.get(digest) ?? [];
    if (!uses.includes(use)) uses.push(use);
    this.absent.set(digest, uses);
  }

  private missingBlob(digest: Digest, message: string): FerryError {
    const e = new FerryError('INTEGRITY', message);
    this.missing.set(e, digest);
    return e;
  }

  /** The bytes to write at commit for content held in memory (never written during the scan). */
  private memoryWrite(d: Descriptor): { descriptor: Descriptor; bytes: Buffer } | undefined {
    const f = this.state.byDigest.get(d.digest);
    return f?.bytes && !f.stored ? { descriptor: plainDescriptor(d), bytes: f.bytes } : undefined;
  }

  private async checkImage(d: Descriptor, m: ImageManifest, label: string, out: Checked): Promise<void> {
    const problems: FerryError[] = [];
    const blobs = [m.config, ...m.layers];
    for (const [i, b] of blobs.entries()) {
      const p = await this.blobProblem(b, label, i === 0 ? 'config' : `layer ${i}`);
      if (p) problems.push(p);
      const w = this.memoryWrite(b);
      if (w) out.writes.push(w);
    }
    let diffIds: Digest[] | undefined;
    if (problems.length === 0 && CONFIG_TYPES.has(m.config.mediaType) && m.layers.every((l) => isLayerType(l.mediaType))) {
      try {
        const bytes = await this.bytesOf(m.config);
        if (!bytes) throw new FerryError('INTEGRITY', `config ${m.config.digest} could not be read back`);
        diffIds = parseConfig(bytes, `${label}: config ${m.config.digest}`).rootfs.diff_ids;
      } catch (e) {
        if (!(e instanceof FerryError)) throw e;
        problems.push(e);
      }
      if (diffIds) problems.push(...this.checkLayers(m.layers.map((l) => ({ desc: l, file: this.state.byDigest.get(l.digest) })), diffIds, label));
    }
    if (problems.length) {
      out.ok = false;
      out.problems.push(...problems);
      return;
    }
    out.images.push({ manifest: plainDescriptor(d), config: m.config.digest, layers: m.layers.map((l) => l.digest) });
  }

  /** diff_ids: one per layer, each the digest of the layer's decompressed content (catalogue B6). */
  private checkLayers(layers: Array<{ desc?: Descriptor; file?: ScannedFile; path?: string }>, diffIds: Digest[], label: string): FerryError[] {
    if (diffIds.length !== layers.length) {
      return [new FerryError('INTEGRITY', `${label}: config lists ${diffIds.length} diff_ids for ${layers.length} layers`)];
    }
    const problems: FerryError[] = [];
    layers.forEach(({ desc, file, path }, i) => {
      if (!file) return; // already in the store, verified when it arrived
      const what = `${label}: layer ${i + 1} (${path ?? file.digest})`;
      if (file.diffError) {
        problems.push(new FerryError(file.diffError.code, `${label}: layer ${i + 1}: ${file.diffError.message}`));
        return;
      }
      if (file.diffId !== diffIds[i]) {
        problems.push(new FerryError('INTEGRITY', `${what}: uncompressed content hashes to ${file.diffId}, the config says diff_id ${diffIds[i]}`));
        return;
      }
      if (desc) {
        const declared = layerCompression(desc.mediaType);
        if (declared !== 'unknown' && declared !== file.compression && !desc.mediaType.includes('encrypted')) {
          // Catalogue B5: docker and containerd sniff; the digest and diff_id are verified, so it is kept.
          this.reporter.note(`${what}: media type ${desc.mediaType} says ${declared} but the bytes are ${file.compression}; kept as they are (digest and diff_id verified)`);
        }
      }
    });
    return problems;
  }

  // --- manifest.json ---

  async fromManifestJson(bytes: Buffer): Promise<{ error?: FerryError; entries: Array<{ root: ArchiveRoot; checked: Checked }> }> {
    const where = `${this.state.where}: manifest.json`;
    let doc: unknown;
    try {
      doc = parseJson(bytes, where);
      if (!Array.isArray(doc)) throw new FerryError('INVALID_INPUT', `${where}: must be a JSON array${doc === null ? ' (it is null)' : ''}`);
    } catch (e) {
      if (e instanceof FerryError) return { error: e, entries: [] };
      throw e;
    }
    const entries: Array<{ root: ArchiveRoot; checked: Checked }> = [];
    for (const [i, raw] of (doc as unknown[]).entries()) {
      const e = raw as { Config?: unknown; RepoTags?: unknown; Layers?: unknown } | null;
      const label0 = `manifest.json entry ${i + 1}`;
      if (!e || typeof e !== 'object' || typeof e.Config !== 'string' || !Array.isArray(e.Layers) || e.Layers.some((l) => typeof l !== 'string')) {
        return { error: new FerryError('INVALID_INPUT', `${where}: entry ${i + 1} needs "Config" (a path) and "Layers" (an array of paths)`), entries: [] };
      }
      if (e.RepoTags !== undefined && e.RepoTags !== null && (!Array.isArray(e.RepoTags) || e.RepoTags.some((t) => typeof t !== 'string'))) {
        return { error: new FerryError('INVALID_INPUT', `${where}: entry ${i + 1}: "RepoTags" must be an array of strings`), entries: [] };
      }
      const names: TagName[] = [];
      for (const t of (e.RepoTags as string[] | null | undefined) ?? []) {
        const r = tryParseReference(t);
        if (!r || !r.tag || r.digest) {
          this.reporter.note(`${where}: entry ${i + 1}: "${t}" is not a NAME:TAG reference; ignored`);
          continue;
        }
        names.push({ tag: r.tag, name: formatReference({ domain: r.domain, path: r.path, tag: r.tag }) });
      }
      const label = names[0]?.name ?? label0;
      const checked = await this.checkDockerEntry(e.Config, e.Layers as string[], label);
      entries.push({ root: { descriptor: checked.descriptor, names, from: 'manifest.json', label }, checked });
    }
    return { entries };
  }

  /**
   * Finds the file an archive path names, following links that stay inside the archive
   * (catalogue A16); `..` and absolute paths are refused before any lookup (A1).
   */
  private resolvePath(path: string, what: string, label: string): ScannedFile {
    const bad = path.startsWith('/') || path.split('/').includes('..') || path.includes('\0');
    if (bad) throw new FerryError('INVALID_INPUT', `${label}: ${what} path escapes archive: ${JSON.stringify(path)}`);
    let p = path.split('/').filter((x) => x !== '' && x !== '.').join('/');
    for (let hops = 0; hops <= 16; hops++) {
      const f = this.state.files.get(p);
      if (f) return f;
      const link = this.state.links.get(p);
      if (!link) throw this.notInArchive(p, path, what, label);
      const next = linkTargetPath(p, link.type, link.linkname);
      if (!next) {
        throw new FerryError('INVALID_INPUT', `${label}: ${what} path escapes archive: ${JSON.stringify(p)} is a ${link.type} to ${JSON.stringify(link.linkname)}, outside the archive`);
      }
      p = next;
    }
    throw new FerryError('INVALID_INPUT', `${label}: ${what} ${JSON.stringify(path)}: too many levels of links`);
  }

  /** A path of manifest.json that is not there: a missing blob when it names one, so that index.json's report of it is the same problem. */
  private notInArchive(resolved: string, path: string, what: string, label: string): FerryError {
    const message = `${label}: ${what} ${JSON.stringify(path)} is not in the archive`;
    const m = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(resolved);
    if (!m) return new FerryError('INTEGRITY', message);
    const digest = `${m[1]}:${m[2]}` as Digest;
    // A blob a volume lacks is in no file list, only among the lost.
    const fault = this.scanFault(digest);
    if (fault) return this.reportedProblem(label, what, path, fault);
    if (!this.absent.has(digest)) this.noteAbsent(digest, `${what} of ${label}`);
    return this.missingBlob(digest, message);
  }

  private async checkDockerEntry(configPath: string, layerPaths: string[], label: string): Promise<Checked> {
    const out: Checked = { ok: false, problems: [], writes: [], images: [], descriptor: { mediaType: MediaType.OciManifest, digest: digestOf(''), size: 0 } };
    try {
      const cfg = this.resolvePath(configPath, 'config', label);
      const layers = layerPaths.map((p) => ({ path: p, file: this.resolvePath(p, 'layer', label) }));
      const corrupt = [cfg, ...layers.map((l) => l.file)].find((f) => f.mismatch);
      if (corrupt) throw this.reportedProblem(label, corrupt === cfg ? 'config' : 'layer', corrupt.path);
      const cfgBytes = await fileBytes(cfg, this.target);
      if (!cfgBytes) throw new FerryError('INTEGRITY', `${label}: config ${configPath} could not be read back`);
      const config = parseConfig(cfgBytes, `${label}: config ${configPath}`);
      const problems = this.checkLayers(layers, config.rootfs.diff_ids, label);
      if (problems.length) {
        out.problems.push(...problems);
        return out;
      }
      // Docker ≥ 25's shape: OCI manifest, layers exactly as stored (uncompressed ones keep digest = diff_id).
      const manifest = {
        schemaVersion: 2,
        mediaType: MediaType.OciManifest,
        config: { mediaType: MediaType.OciConfig, digest: cfg.digest, size: cfg.size },
        layers: layers.map(({ file }) => ({ mediaType: LAYER_TYPE[file.compression] ?? MediaType.OciLayer, digest: file.digest, size: file.size })),
      };
      const bytes = Buffer.from(JSON.stringify(manifest));
      out.descriptor = { mediaType: MediaType.OciManifest, digest: digestOf(bytes), size: bytes.length };
      for (const f of [cfg, ...layers.map((l) => l.file)]) {
        if (f.bytes && !f.stored) out.writes.push({ descriptor: { mediaType: 'application/octet-stream', digest: f.digest, size: f.size }, bytes: f.bytes });
      }
      out.writes.push({ descriptor: out.descriptor, bytes });
      out.images.push({ manifest: out.descriptor, config: cfg.digest, layers: layers.map((l) => l.file.digest) });
      out.ok = true;
    } catch (e) {
      if (!(e instanceof FerryError)) throw e;
      out.problems.push(e);
    }
    return out;
  }
}

/** What a tar that is no image archive most likely is. */
function notAnArchiveHint(state: ScanState): string {
  if (state.files.size === 0) return 'the file is empty, cut short, or not a tar archive';
  // docker save before 1.10 wrote <id>/layer.tar and a `repositories` file, but no manifest.json.
  const legacy = state.meta.has('repositories') || [...state.files.keys()].some((p) => /^[0-9a-f]{64}\/layer\.tar$/.test(p));
  if (legacy) return 'docker archives from before Docker 1.10 (no manifest.json) are not supported';
  return 'it looks like a root filesystem, not an image: ferry import FILE NAME makes a one-layer image of it';
}
