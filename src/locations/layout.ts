import { createReadStream, createWriteStream } from 'node:fs';
import { access, constants, readdir, readFile, rename, rmdir, stat, truncate, unlink, utimes } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { FerryError, isFerryError, NETWORK_CODES } from '../errors.js';
import { warn } from '../log.js';
import { publishBytes, publishStream, tempOwnerPid, withPath } from '../blob/publish.js';
import { PARTIAL_PREFIX } from '../blob/temp-names.js';
import { hashPrefix, readCapped, type Prefix } from '../blob/verify.js';
import { algorithmOf, encodedOf, isDigest, parseDigest, type Digest } from '../oci/digest.js';
import { isManifestLike, MediaType } from '../oci/mediatypes.js';
import { MAX_JSON_BYTES, parseJson, parseManifestDocument, subjectOf, type Descriptor } from '../oci/manifest.js';
import { formatReference, repositoryName, tryParseReference } from '../oci/reference.js';
import type { FetchOptions, PutOptions, Referrer, Sink, Source, TagName } from '../types.js';
import { lockTimeoutFromEnv, processAlive, withLock } from './lock.js';
import { EarlySync } from '../blob/early-sync.js';
import { someNames } from '../util/list.js';
import { checkCanMake } from '../util/can-make.js';
import { mkdirs } from '../util/mkdirs.js';

export const ANNOTATION_REF_NAME = 'org.opencontainers.image.ref.name';
export const ANNOTATION_IMAGE_NAME = 'io.containerd.image.name';

/** One entry of index.json, with its names read out of the annotations. */
export interface LayoutEntry {
  descriptor: Descriptor;
  tag?: string;
  name?: string;
}

/** What removeStalePartials did: deleted `count`, kept `kept` until `keptUntil` (ms). */
export interface PartialsReport {
  count: number;
  bytes: number;
  kept: number;
  keptBytes: number;
  keptUntil?: number;
}

export interface OpenLayoutOptions {
  /** Create the layout if it does not exist (and check it is writable). */
  create?: boolean;
  /** With `create`: open for writing, but refuse a directory that is not a layout already. */
  existing?: boolean;
  lockTimeoutMs?: number;
  /** With `create`: skip the lost-index check (gc refuses a missing index.json itself). */
  indexMayBeMissing?: boolean;
}

type IndexEdit = (manifests: Descriptor[]) => Descriptor[];

export interface ResolveOptions {
  /** Resolve as in the store, where every image has a full name: a bare tag names no named image. */
  store?: boolean;
}

export interface ResolvedEntry {
  descriptor: Descriptor;
  entry?: LayoutEntry;
  /** Found by a name (not a digest, short id or NAME@DIGEST). */
  byName: boolean;
  /** Which entries of index.json the reference names. */
  match: (e: LayoutEntry) => boolean;
}

/**
 * An OCI image layout directory, readable as a Source and writable as a Sink. Blobs are published
 * atomically as they arrive; index.json changes are queued and written by commit(), under a lock,
 * as a read-modify-write so concurrent writers never lose each other's entries.
 */
/** The short id `ferry images` shows (12 hex digits of the manifest digest), or any longer prefix. */
const SHORT_ID = /^(?:sha256:)?([0-9a-f]{12,63})$/;

export class OciLayout implements Source, Sink {
  readonly caps = { concurrent: true, indexes: true };
  private readonly edits: IndexEdit[] = [];
  private writerMarker?: string;
  /** Partial downloads this process may continue: left by a dead run, or by its own failed attempt. */
  private readonly partials = new Map<Digest, string>();
  /** Partial files this process is writing now: never two writers on one file. */
  private readonly writing = new Set<Digest>();

  /** Set when open() made the layout (and whether it made its directory too). */
  private createdHere?: { dir: boolean };

  /** Opened knowing index.json may be missing (gc of a damaged store): edits are not refused for it. */
  private indexMayBeMissing = false;
  /** index.json was there when this process opened the layout, or it wrote one. */
  private sawIndex = false;

  private constructor(readonly dir: string, private readonly lockTimeoutMs: number) {}

  static async open(dir: string, opts: OpenLayoutOptions = {}): Promise<OciLayout> {
    const layout = new OciLayout(dir, opts.lockTimeoutMs ?? lockTimeoutFromEnv());
    layout.indexMayBeMissing = opts.indexMayBeMissing === true;
    const header = join(dir, 'oci-layout');
    const exists = await stat(header).then(() => true, (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT' || e.code === 'ENOTDIR') return false;
      throw e;
    });
    if (!exists) {
      if (!opts.create || opts.existing) {
        const there = await stat(dir).then(() => true, () => false);
        throw new FerryError('NOT_FOUND', there ? `${dir} is not an OCI image layout (no oci-layout file)` : `${dir} does not exist`);
      }
      const there = await stat(dir).catch(() => undefined);
      if (there?.isDirectory() === false) {
        throw new FerryError('USAGE', `${dir} exists and is not a directory: an OCI image layout is a directory`, { hint: 'choose another path' });
      }
      if (there && !opts.indexMayBeMissing) await layout.refuseLostIndex();
      layout.createdHere = { dir: there === undefined };
      // A new directory where none can be made (/proc: ENOENT) is named as such.
      if (!there) await checkCanMake(dir);
      await mkdirs(dir);
      await access(dir, constants.W_OK);
      await mkdirs(join(dir, 'blobs', 'sha256'));
      // oci-layout last: it marks a layout whose index.json is written (see refuseLostIndex).
      await layout.editIndex((m) => m);
      await publishBytes(header, JSON.stringify({ imageLayoutVersion: '1.0.0' }));
      await layout.registerWriter();
      return layout;
    }
    await layout.checkHeader();
    if (opts.create) {
      if (!opts.indexMayBeMissing) await layout.refuseLostIndex();
      // Fail before any download when the destination cannot be written (catalogue E3).
      await access(dir, constants.W_OK);
      await mkdirs(join(dir, 'blobs', 'sha256'));
      await access(join(dir, 'blobs', 'sha256'), constants.W_OK);
      await layout.removeDeadTemps();
    }
    if (opts.create) await layout.registerWriter();
    else if (!opts.indexMayBeMissing) await layout.warnLostIndex();
    layout.sawIndex = await layout.hasIndexFile();
    return layout;
  }

  /**
   * For dry runs: refuses what open({ create: true }) would refuse before any data moves (a path
   * that is not a directory or lies under a file, a layout whose index.json was lost, a directory
   * that cannot be written), with the same errors, while writing nothing and taking no lock.
   */
  static async checkCreate(dir: string, opts: Pick<OpenLayoutOptions, 'indexMayBeMissing'> = {}): Promise<void> {
    const layout = new OciLayout(dir, 0);
    const there = await stat(dir).catch(() => undefined);
    if (!there) return checkCanMake(dir);
    if (!there.isDirectory()) {
      throw new FerryError('USAGE', `${dir} exists and is not a directory: an OCI image layout is a directory`, { hint: 'choose another path' });
    }
    if (await stat(join(dir, 'oci-layout')).then(() => true, () => false)) await layout.checkHeader();
    if (!opts.indexMayBeMissing) await layout.refuseLostIndex();
    await access(dir, constants.W_OK);
    const blobs = join(dir, 'blobs', 'sha256');
    if (await stat(blobs).then(() => true, () => false)) await access(blobs, constants.W_OK);
  }

  /** After a failed run into a layout this open created: undone while it holds nothing. */
  async discardIfCreatedEmpty(): Promise<void> {
    if (this.createdHere) await this.discardIfEmpty(this.createdHere);
  }

  /**
   * Undoes open({ create: true }) after a run that stored nothing: removes the layout's own files
   * while it holds no image and no blob, then the directory itself when `dir` says it was new.
   * Only empty directories are removed, so anything else found there stays.
   */
  private async discardIfEmpty(o: { dir: boolean }): Promise<void> {
    await this.close();
    if ((await this.readIndex().catch(() => [undefined])).length > 0) return;
    try {
      await rmdir(join(this.dir, 'blobs', 'sha256'));
      await rmdir(join(this.dir, 'blobs'));
    } catch {
      return;
    }
    await unlink(join(this.dir, 'index.json')).catch(() => {});
    await unlink(join(this.dir, 'oci-layout')).catch(() => {});
    if (o.dir) await rmdir(this.dir).catch(() => {});
  }

  private async checkHeader(): Promise<void> {
    const where = join(this.dir, 'oci-layout');
    const doc = parseJson(await readFile(where), where) as { imageLayoutVersion?: unknown } | null;
    if (!doc || typeof doc !== 'object' || typeof doc.imageLayoutVersion !== 'string') {
      throw new FerryError('INVALID_INPUT', `${where}: not a valid oci-layout file (needs "imageLayoutVersion")`);
    }
  }

  /** For messages about a blob read from here that does not verify. */
  get label(): string {
    return this.dir;
  }

  blobPath(d: Digest): string {
    const digest = parseDigest(d);
    return join(this.dir, 'blobs', algorithmOf(digest), encodedOf(digest));
  }

  async readIndex(): Promise<Descriptor[]> {
    const where = join(this.dir, 'index.json');
    let bytes: Buffer;
    try {
      const fh = createReadStream(where);
      bytes = await readCapped(fh, MAX_JSON_BYTES, where);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw e;
    }
    try {
      const doc = parseManifestDocument(bytes, { where });
      if (doc.kind !== 'index') throw new FerryError('INVALID_INPUT', `${where}: not an image index`);
      return doc.index.manifests;
    } catch (e) {
      if (!isFerryError(e) || e.hint) throw e;
      throw new FerryError(e.code, e.message, { cause: e.cause, hint: INDEX_DAMAGED_HINT });
    }
  }

  /** index.json is there (readIndex reads a missing one as empty, as a layout being created has it). */
  async hasIndexFile(): Promise<boolean> {
    return stat(join(this.dir, 'index.json')).then(() => true, (e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return false;
      throw e;
    });
  }

  /**
   * Refuses to write into a layout that lost its index.json while its blobs stayed: a new
   * index.json would name only what this run adds, and the next gc would delete every other blob.
   * ferry writes index.json before oci-layout when it makes a layout, and writes no blob before
   * both are there, so a layout it is making never looks like this. Another tool may write blobs
   * first and both files at the end: a layout whose oci-layout or blobs/ changed
   * within the last LAYOUT_SETTLE_MS may be one being made now, and is let be.
   */
  private async refuseLostIndex(): Promise<void> {
    const blobs = await this.lostIndex();
    if (blobs === undefined) return;
    throw new FerryError('INTEGRITY', `${join(this.dir, 'index.json')} is missing, yet ${join(this.dir, 'blobs')} holds ${blobs} blob(s): a new index.json would name only this run's image and the next gc would delete the others; nothing was written`, {
      hint: this.lostIndexHint(),
    });
  }

  /** Read only (images, inspect, save, verify): said, since the layout then lists no image at all. */
  private async warnLostIndex(): Promise<void> {
    const blobs = await this.lostIndex();
    if (blobs !== undefined) warn(`${join(this.dir, 'index.json')} is missing, yet ${join(this.dir, 'blobs')} holds ${blobs} blob(s): the names of its images are lost; ${this.lostIndexHint()}`);
  }

  private lostIndexHint(): string {
    return `restore index.json from a backup (\`ferry verify ${this.dir}\` shows the damage); or, to start afresh, move ${join(this.dir, 'blobs')} away`;
  }

  /**
   * How many blobs a layout holds whose index.json is missing, when it is: undefined when the
   * index is there, the layout holds no blob, or it is being made now (another process's open).
   */
  private async lostIndex(): Promise<number | undefined> {
    if (await this.hasIndexFile()) return undefined;
    const blobs = await this.countBlobs();
    if (blobs === 0) return undefined;
    const recent = Date.now() - LAYOUT_SETTLE_MS;
    for (const path of [join(this.dir, 'oci-layout'), ...(await this.blobDirs())]) {
      const mtime = (await stat(path).catch(() => undefined))?.mtimeMs;
      if (mtime !== undefined && mtime >= recent && mtime <= Date.now() + 1000) return undefined;
    }
    return blobs;
  }

  /** Complete blobs in blobs/ (not temp files or partial downloads). */
  private async countBlobs(): Promise<number> {
    let n = 0;
    for (const dir of await this.blobDirs()) {
      for (const name of await readdir(dir).catch(() => [] as string[])) if (isDigest(`${basename(dir)}:${name}`)) n++;
    }
    return n;
  }

  async entries(): Promise<LayoutEntry[]> {
    return (await this.readIndex()).map((descriptor) => ({
      descriptor,
      tag: descriptor.annotations?.[ANNOTATION_REF_NAME],
      name: descriptor.annotations?.[ANNOTATION_IMAGE_NAME],
    }));
  }

  /**
   * Finds a root by digest, tag (ref.name), full image name, or a reference that normalises to a
   * recorded name (`alpine` = `docker.io/library/alpine:latest`). Several different images under
   * one name are reported, never picked silently.
   */
  async resolve(ref: string, o: ResolveOptions = {}): Promise<Descriptor> {
    return (await this.resolveEntry(ref, o)).descriptor;
  }

  /**
   * As resolve, and how: `entry` is the index entry a name matched (an image under two tags is
   * found under the one asked for); for a digest or short id, the image's first named entry.
   * `match` selects the entries of index.json the reference names (what rmi removes).
   */
  async resolveEntry(ref: string, o: ResolveOptions = {}): Promise<ResolvedEntry> {
    const entries = await this.entries();
    const byId = (digest: Digest): ResolvedEntry | undefined => {
      const hit = entries.find((e) => e.descriptor.digest === digest && e.name !== undefined) ?? entries.find((e) => e.descriptor.digest === digest);
      return hit ? { descriptor: hit.descriptor, entry: hit, byName: false, match: (e) => e.descriptor.digest === digest } : undefined;
    };
    if (isDigest(ref)) return byId(ref) ?? { descriptor: await this.describeBlob(ref), byName: false, match: (e) => e.descriptor.digest === ref };
    const parsed = tryParseReference(ref);
    // NAME:TAG@DIGEST is found by its name and must then have that digest; NAME@DIGEST below.
    const full = parsed?.tag !== undefined ? formatReference({ domain: parsed.domain, path: parsed.path, tag: parsed.tag }) : undefined;
    const tiers: Array<(e: LayoutEntry) => boolean> = [
      // In the store every image has a full name: `alpine` is docker.io/library/alpine:latest,
      // never whatever image is tagged `alpine` (nginx:alpine). A bare tag names only a bare entry.
      (e) => e.tag === ref && !(o.store && e.name !== undefined),
      (e) => e.name === ref,
      (e) => full !== undefined && normalized(e.name) === full,
      (e) => full !== undefined && e.tag !== undefined && /[/:@]/.test(e.tag) && normalized(e.tag) === full,
    ];
    let other: Digest | undefined;
    for (const match of tiers) {
      const hits = entries.filter(match);
      const digests = new Set(hits.map((h) => h.descriptor.digest));
      if (digests.size === 1) {
        const d = hits[0]!.descriptor;
        if (parsed?.digest && parsed.digest !== d.digest) {
          other = d.digest;
          continue;
        }
        return { descriptor: d, entry: hits[0], byName: true, match: (e) => match(e) && e.descriptor.digest === d.digest };
      }
      if (digests.size > 1) {
        throw new FerryError('INVALID_INPUT', `"${ref}" is ambiguous in ${this.dir}: it names ${[...digests].join(', ')}`, {
          hint: 'name the image by its full name or by digest',
        });
      }
    }
    if (parsed?.digest && !parsed.tag) {
      // NAME@DIGEST: that digest under that repository's names, or with no repository recorded (a
      // pull by digest stores none); not the same digest under another repository's name.
      const digest = parsed.digest;
      const repo = repositoryName(parsed);
      const match = (e: LayoutEntry) => e.descriptor.digest === digest && [repo, undefined].includes(entryRepository(e));
      const hit = entries.find((e) => match(e) && e.name !== undefined) ?? entries.find(match);
      if (hit) return { descriptor: hit.descriptor, entry: hit, byName: false, match };
      const elsewhere = entries.filter((e) => e.descriptor.digest === digest).map((e) => e.name ?? e.tag);
      if (elsewhere.length) {
        throw new FerryError('NOT_FOUND', `image "${ref}" not found in ${this.dir}: ${digest} is there, but not under ${repo}`, {
          hint: `it is named ${someNames(elsewhere.filter((n): n is string => n !== undefined), ref)}; use that name, or the digest alone`,
        });
      }
    }
    if (other) {
      throw new FerryError('NOT_FOUND', `image "${ref}" not found in ${this.dir}: ${full} is ${other}, not ${parsed!.digest}`, {
        hint: `name it ${full} (what it is now) or by the digest alone`,
      });
    }
    const short = SHORT_ID.exec(ref);
    if (short) {
      const digests = [...new Set(entries.map((e) => e.descriptor.digest).filter((d) => d.startsWith(`sha256:${short[1]}`)))];
      if (digests.length === 1) return byId(digests[0]!)!;
      if (digests.length > 1) {
        throw new FerryError('INVALID_INPUT', `"${ref}" is ambiguous in ${this.dir}: it starts ${digests.join(', ')}`, { hint: 'give more digits, or the full digest' });
      }
    }
    const known = entries.map((e) => e.name ?? e.tag).filter((n): n is string => Boolean(n));
    throw new FerryError('NOT_FOUND', `image "${ref}" not found in ${this.dir}`, {
      hint: known.length ? `available: ${someNames(known, ref)}` : 'the layout has no tagged images',
    });
  }

  /** A descriptor for a blob named only by digest: its media type is read from the document. */
  private async describeBlob(digest: Digest): Promise<Descriptor> {
    const path = this.blobPath(digest);
    const st = await stat(path).catch(() => undefined);
    if (!st) throw new FerryError('NOT_FOUND', `${digest} not found in ${this.dir}`);
    if (st.size > MAX_JSON_BYTES) throw new FerryError('INVALID_INPUT', `${digest} is not a manifest (${st.size} bytes)`);
    const doc = parseManifestDocument(await readFile(path), { where: path });
    return { mediaType: doc.mediaType, digest, size: st.size };
  }

  /**
   * Manifests in index.json whose `subject` is `d`, plus entries tagged cosign-style
   * (`sha256-<hex>.sig`): referrers are stored as roots so that gc keeps them.
   */
  async referrers(d: Descriptor): Promise<Referrer[]> {
    const out: Referrer[] = [];
    const cosign = `${d.digest.replace(':', '-')}.`;
    for (const e of await this.entries()) {
      if (e.descriptor.digest === d.digest) continue;
      if (e.tag?.startsWith(cosign)) {
        out.push({ descriptor: e.descriptor, tag: e.tag });
        continue;
      }
      if (e.descriptor.size > MAX_JSON_BYTES) continue;
      const bytes = await readFile(this.blobPath(e.descriptor.digest)).catch(() => undefined);
      if (!bytes) continue;
      const subject = subjectOf(bytes, { declared: e.descriptor.mediaType, where: e.descriptor.digest });
      if (subject === d.digest && !out.some((r) => r.descriptor.digest === e.descriptor.digest)) {
        out.push({ descriptor: { mediaType: e.descriptor.mediaType, digest: e.descriptor.digest, size: e.descriptor.size } });
      }
    }
    return out;
  }

  async fetch(d: Descriptor, o: FetchOptions = {}): Promise<Readable> {
    const path = this.blobPath(d.digest);
    const stream = createReadStream(path, { highWaterMark: 1 << 20, signal: o.signal, start: o.offset });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', (e: NodeJS.ErrnoException) => {
        reject(e.code === 'ENOENT' ? new FerryError('NOT_FOUND', `blob ${d.digest} is missing from ${this.dir}`) : e);
      });
    });
    return stream;
  }

  /**
   * True when a blob of the right size is present. A short or long file (left by an older crash
   * or another tool) counts as absent so that it gets replaced. Present blobs get their mtime
   * refreshed: gc spares blobs touched while a writer is running.
   */
  async has(d: Descriptor): Promise<boolean> {
    const path = this.blobPath(d.digest);
    try {
      const st = await stat(path);
      if (!st.isFile() || st.size !== d.size) return false;
      const now = new Date();
      await utimes(path, now, now).catch(() => {});
      await this.dropPartial(d.digest);
      return true;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw e;
    }
  }

  /**
   * Big blobs are written to `.partial-<pid>-<hex>` beside their final name. A run that dies
   * (SIGKILL, power loss) or loses its source (network) leaves that file; the next run claims it
   * by renaming it to its own pid (atomic: one claimant wins), re-hashes it, and continues from its
   * end. The engine's verifying stream still checks the whole blob before it is published.
   */
  async resumable(d: Descriptor, o: { signal?: AbortSignal } = {}): Promise<Prefix | undefined> {
    const found = this.partials.get(d.digest);
    if (!found || this.writing.has(d.digest) || !usesPartial(d)) return undefined;
    this.partials.delete(d.digest);
    const mine = this.partialPath(d.digest);
    if (found !== mine && !(await rename(found, mine).then(() => true, () => false))) return undefined;
    const size = (await stat(mine).catch(() => undefined))?.size ?? 0;
    if (size === 0 || size >= d.size) {
      await unlink(mine).catch(() => {});
      return undefined;
    }
    this.writing.add(d.digest);
    try {
      const hash = await hashPrefix(createReadStream(mine, { end: size - 1, highWaterMark: 1 << 20, signal: o.signal }), size, algorithmOf(d.digest));
      return { offset: size, hash };
    } catch (e) {
      this.writing.delete(d.digest);
      this.partials.set(d.digest, mine);
      throw e;
    }
  }

  async put(d: Descriptor, body: Readable, o: PutOptions = {}): Promise<void> {
    const path = this.blobPath(d.digest);
    await mkdirs(join(this.dir, 'blobs', algorithmOf(d.digest)));
    const from = o.resumeFrom ?? 0;
    if (!usesPartial(d) || (from === 0 && this.writing.has(d.digest))) {
      await publishStream(path, body, { signal: o.signal });
      await this.dropPartial(d.digest);
      return;
    }
    this.writing.add(d.digest);
    const partial = this.partialPath(d.digest);
    try {
      if (from > 0) await truncate(partial, from);
      const file = createWriteStream(partial, { flags: from > 0 ? 'r+' : 'w', start: from, mode: 0o644, flush: true, highWaterMark: 1 << 20 });
      await pipeline(body, new EarlySync(file).counter(), file, { signal: o.signal });
      await rename(partial, path);
      await this.dropPartial(d.digest);
    } catch (e) {
      // Keep what arrived when only the source failed; wrong content, a full disk or an interrupt
      // (SIGINT: temp files are removed) leave nothing behind.
      if (!o.signal?.aborted && sourceFailed(e)) this.partials.set(d.digest, partial);
      else await unlink(partial).catch(() => {});
      throw withPath(e, path);
    } finally {
      this.writing.delete(d.digest);
    }
  }

  /** The blob is complete: a dead run's partial download of it has no more use. */
  private async dropPartial(d: Digest): Promise<void> {
    const path = this.partials.get(d);
    if (path === undefined || (this.writing.has(d) && path === this.partialPath(d))) return;
    this.partials.delete(d);
    await unlink(path).catch(() => {});
  }

  private partialPath(d: Digest): string {
    return join(this.dir, 'blobs', algorithmOf(d), `${PARTIAL_PREFIX}${process.pid}-${encodedOf(d)}`);
  }

  async tag(root: Descriptor, name: TagName | undefined): Promise<void> {
    this.edits.push((manifests) => addRoot(manifests, root, name));
  }

  /** Removes the entries of index.json that `match` selects; returns them. Applied at once. */
  async untag(match: (e: LayoutEntry) => boolean): Promise<LayoutEntry[]> {
    const removed: LayoutEntry[] = [];
    await this.editIndex((manifests) =>
      manifests.filter((descriptor) => {
        const e = { descriptor, tag: descriptor.annotations?.[ANNOTATION_REF_NAME], name: descriptor.annotations?.[ANNOTATION_IMAGE_NAME] };
        if (!match(e)) return true;
        removed.push(e);
        return false;
      }),
    );
    return removed;
  }

  async commit(): Promise<void> {
    if (this.edits.length === 0) return;
    const edits = this.edits.splice(0);
    await this.editIndex((m) => edits.reduce((acc, edit) => edit(acc), m));
  }

  /** Read-modify-write of index.json under the layout lock; the file is replaced atomically. */
  async editIndex(edit: IndexEdit): Promise<void> {
    await this.withIndexLock(async () => {
      // Lost since this process saw it (a long-running serve): a new index.json would name only
      // this edit's images, and the next gc would delete every other blob. (The open's check
      // cannot tell: this process's own blob writes make the layout look as if being made.)
      if (this.sawIndex && !this.indexMayBeMissing && !(await this.hasIndexFile())) {
        throw new FerryError('INTEGRITY', `${join(this.dir, 'index.json')} has gone since this process opened ${this.dir}: a new index.json would name only the image being written and the next gc would delete the others; nothing was named`, {
          hint: this.lostIndexHint(),
        });
      }
      const manifests = edit(await this.readIndex());
      const doc = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests };
      await publishBytes(join(this.dir, 'index.json'), JSON.stringify(doc), { syncDir: true });
      this.sawIndex = true;
    });
  }

  /** Runs `fn` while no other ferry process can change index.json. */
  async withIndexLock<T>(fn: () => Promise<T>): Promise<T> {
    return withLock(join(this.dir, 'index.json.lock'), fn, { timeoutMs: this.lockTimeoutMs });
  }

  /**
   * Deletes temp files whose writer process is gone (left by a crash or SIGKILL). Partial
   * downloads of dead runs are kept and remembered, for resumable().
   */
  async removeDeadTemps(): Promise<number> {
    let removed = 0;
    for (const dir of [this.dir, ...(await this.blobDirs())]) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const pid = tempOwnerPid(name);
        if (pid !== undefined && !(await processAlive(pid))) {
          await unlink(join(dir, name)).catch(() => {});
          removed++;
        }
        // A killed run's writer marker: gc would ignore it, but reruns from cron would pile them up.
        const writer = dir === this.dir ? writerPid(name) : undefined;
        if (writer !== undefined && !(await processAlive(writer))) await unlink(join(dir, name)).catch(() => {});
        const partial = parsePartial(dir, name);
        if (partial && !(await processAlive(partial.pid))) this.partials.set(partial.digest, join(dir, name));
      }
    }
    if (removed) warn(`removed ${removed} temporary file(s) left by an interrupted run in ${this.dir}`);
    return removed;
  }

  /**
   * Deletes partial downloads of dead runs that no rerun will continue: their blob is complete,
   * or they are older than `maxAgeMs` (`all`: every one). Returns how many (and their bytes), and
   * those kept for a rerun with when the last of them expires; dry runs only count.
   */
  async removeStalePartials(o: { maxAgeMs?: number; dryRun?: boolean; all?: boolean } = {}): Promise<PartialsReport> {
    const out: PartialsReport = { count: 0, bytes: 0, kept: 0, keptBytes: 0 };
    const maxAge = o.maxAgeMs ?? PARTIAL_MAX_AGE_MS;
    const cutoff = Date.now() - maxAge;
    for (const dir of await this.blobDirs()) {
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        const partial = parsePartial(dir, name);
        if (!partial || (await processAlive(partial.pid))) continue;
        const path = join(dir, name);
        const st = await stat(path).catch(() => undefined);
        if (!st) continue;
        const complete = await stat(this.blobPath(partial.digest)).then(() => true, () => false);
        if (!complete && !o.all && st.mtimeMs >= cutoff) {
          out.kept++;
          out.keptBytes += st.size;
          out.keptUntil = Math.max(out.keptUntil ?? 0, st.mtimeMs + maxAge);
          continue;
        }
        if (!o.dryRun) {
          await unlink(path).catch(() => {});
          this.partials.delete(partial.digest);
        }
        out.count++;
        out.bytes += st.size;
      }
    }
    return out;
  }

  private async blobDirs(): Promise<string[]> {
    return (await readdir(join(this.dir, 'blobs')).catch(() => [] as string[])).map((a) => join(this.dir, 'blobs', a));
  }

  /**
   * Marks this process as a writer for gc: blobs it publishes or finds present (has() refreshes
   * their mtime) are newer than the marker, and gc spares unreferenced blobs newer than the oldest
   * live writer's marker.
   */
  private async registerWriter(): Promise<void> {
    const path = join(this.dir, `${WRITER_PREFIX}${process.pid}-${Date.now()}`);
    await publishBytes(path, '');
    this.writerMarker = path;
  }

  /** Start times (ms) of other live writers of this layout. */
  async liveWriters(): Promise<number[]> {
    const out: number[] = [];
    for (const name of await readdir(this.dir)) {
      if (!name.startsWith(WRITER_PREFIX)) continue;
      const [pid, since] = name.slice(WRITER_PREFIX.length).split('-').map(Number);
      if (!pid || !since || pid === process.pid) continue;
      if (await processAlive(pid)) out.push(since);
      else await unlink(join(this.dir, name)).catch(() => {});
    }
    return out;
  }

  async close(): Promise<void> {
    if (this.writerMarker) await unlink(this.writerMarker).catch(() => {});
    this.writerMarker = undefined;
  }
}

const WRITER_PREFIX = '.ferry-writer-';

/** The pid in a writer marker's name (`.ferry-writer-<pid>-<since>`). */
function writerPid(name: string): number | undefined {
  if (!name.startsWith(WRITER_PREFIX)) return undefined;
  const pid = Number(name.slice(WRITER_PREFIX.length).split('-')[0]);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
const INDEX_DAMAGED_HINT = 'index.json lists the layout\'s images: restore it from a backup, or copy the images again into a new store';
/** How long after a layout last changed it may still be being made by another tool (refuseLostIndex). */
const LAYOUT_SETTLE_MS = 30_000;
/** Smaller blobs are cheaper to fetch again than to track. */
const PARTIAL_MIN_BYTES = 1 << 20;
/** gc deletes a dead run's partial download after this long without a rerun continuing it. */
export const PARTIAL_MAX_AGE_MS = 24 * 3600_000;

function usesPartial(d: Descriptor): boolean {
  return d.size >= PARTIAL_MIN_BYTES && !isManifestLike(d.mediaType);
}

/** `.partial-<pid>-<encoded>` in `blobs/<alg>`: whose it is and which blob it holds the start of. */
function parsePartial(dir: string, name: string): { pid: number; digest: Digest } | undefined {
  const m = /^\.partial-(\d+)-([a-f0-9]+)$/.exec(name);
  if (!m) return undefined;
  const digest = `${basename(dir)}:${m[2]}`;
  return isDigest(digest) ? { pid: Number(m[1]), digest } : undefined;
}

/** A failure of the source of the bytes (the network), not of their content or of this disk. */
function sourceFailed(e: unknown): boolean {
  if (isFerryError(e)) return e.code === 'NETWORK';
  const code = (e as { code?: unknown } | undefined)?.code;
  // The shared network codes, plus what a body cut mid-stream raises: any of undici's, a reset pipe.
  return typeof code === 'string' && (NETWORK_CODES.has(code) || /^(ECONNABORTED|EPIPE|UND_ERR_\w+)$/.test(code));
}

/** The repository an entry is named under: its full name, or a tag that is a full reference. */
function entryRepository(e: LayoutEntry): string | undefined {
  const text = e.name ?? (e.tag !== undefined && /[/:@]/.test(e.tag) ? e.tag : undefined);
  const r = text === undefined ? undefined : tryParseReference(text);
  return r ? repositoryName(r) : undefined;
}

function normalized(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  const r = tryParseReference(name);
  return r ? formatReference(r) : undefined;
}

/**
 * Adds a root to index.json. A named root replaces the entry that had the same name (full name
 * when given, else the bare tag among entries without a full name); an unnamed root is added once.
 */
export function addRoot(manifests: Descriptor[], root: Descriptor, name: TagName | undefined): Descriptor[] {
  const annotations = { ...(root.annotations ?? {}) };
  delete annotations[ANNOTATION_REF_NAME];
  delete annotations[ANNOTATION_IMAGE_NAME];
  if (name) {
    annotations[ANNOTATION_REF_NAME] = name.tag;
    if (name.name) annotations[ANNOTATION_IMAGE_NAME] = name.name;
  }
  const entry: Descriptor = { ...root, annotations };
  if (Object.keys(annotations).length === 0) delete entry.annotations;
  delete entry.platform;
  if (!name) {
    const already = manifests.some((m) => m.digest === root.digest && !m.annotations?.[ANNOTATION_REF_NAME]);
    return already ? manifests : [...manifests, entry];
  }
  const kept = manifests.filter((m) => {
    const a = m.annotations ?? {};
    // Once named, the image is no longer listed as <none> too (as docker drops a dangling entry).
    if (m.digest === root.digest && a[ANNOTATION_REF_NAME] === undefined && a[ANNOTATION_IMAGE_NAME] === undefined) return false;
    if (name.name) return a[ANNOTATION_IMAGE_NAME] !== name.name;
    return a[ANNOTATION_IMAGE_NAME] !== undefined || a[ANNOTATION_REF_NAME] !== name.tag;
  });
  return [...kept, entry];
}
