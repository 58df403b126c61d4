import { createHash, type Hash } from 'node:crypto';
import { Readable } from 'node:stream';
import { FerryError, isFerryError } from '../../errors.js';
import { hashPrefix, readCapped, verifying } from '../../blob/verify.js';
import { digestOf, isDigest, type Digest } from '../../oci/digest.js';
import { isManifestLike, MANIFEST_ACCEPT, MediaType } from '../../oci/mediatypes.js';
import { MAX_JSON_BYTES, parseManifestDocument, type Descriptor, type ImageIndex, type ParsedDocument } from '../../oci/manifest.js';
import type { FetchOptions, PutOptions, Referrer, Sink, Source, TagName } from '../../types.js';
import { errorDetail, TokenRenewed, type RegistryClient } from './client.js';
import { header, isRetryableError, RATE_LIMIT_HINT, type HttpResponse } from './http.js';
import { forgetUpload, loadUpload, saveUpload } from './upload-sessions.js';

export interface RepositoryOptions {
  /** Other repositories of the same registry to try cross-repository mounts from. */
  mountFrom?: string[];
  /** Blobs up to this size go in one PUT; larger ones in PATCH chunks. */
  monolithicMax?: number;
  chunkSize?: number;
}

const MiB = 1 << 20;

/**
 * One repository of a registry, as a Source (pull) and a Sink (push). Manifest bytes are kept
 * exactly as received; digests are computed from bytes, and a Docker-Content-Digest header that
 * disagrees is an error. Tags are pushed last, at commit().
 */
export class RegistryRepository implements Source, Sink {
  readonly caps = { concurrent: true, indexes: true };
  private readonly manifests = new Map<Digest, Buffer>();
  private readonly pendingTags: Array<{ root: Descriptor; tag: string }> = [];
  private readonly monolithicMax: number;
  private tagList?: Promise<string[]>;
  private readonly chunkSize: number;

  constructor(readonly client: RegistryClient, readonly path: string, private readonly opts: RepositoryOptions = {}) {
    this.monolithicMax = opts.monolithicMax ?? 64 * MiB;
    this.chunkSize = opts.chunkSize ?? 32 * MiB;
  }

  /** Adds a repository of the same registry whose blobs may be mounted instead of uploaded. */
  addMountSource(path: string): void {
    this.opts.mountFrom = [...new Set([...(this.opts.mountFrom ?? []), path])];
  }

  get name(): string {
    return `${this.client.domain}/${this.path}`;
  }

  private pull(): string[] {
    return [`repository:${this.path}:pull`];
  }

  private push(): string[] {
    return [`repository:${this.path}:pull,push`];
  }

  /** `name:tag` or `name@digest`, for messages. */
  private named(ref: string): string {
    return `${this.name}${isDigest(ref) ? '@' : ':'}${ref}`;
  }

  // ---- Source ----

  async resolve(ref: string, o: FetchOptions = {}): Promise<Descriptor> {
    const where = this.named(ref);
    const { res, bytes } = await this.getManifest(ref, where, o.signal);
    const contentType = (header(res, 'content-type') ?? '').split(';')[0]!.trim();
    if (/text\/html/i.test(contentType)) {
      throw new FerryError('INVALID_INPUT', `${where}: unexpected content type ${contentType} (a captive portal or proxy page instead of a manifest?)`);
    }
    const digest = digestOf(bytes);
    if (isDigest(ref) && ref !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `manifest ${where}: digest mismatch, expected ${ref}, got ${digest}`);
    }
    const announced = header(res, 'docker-content-digest');
    if (announced && announced !== digest && announced.startsWith('sha256:')) {
      throw new FerryError('DIGEST_MISMATCH', `manifest ${where}: Docker-Content-Digest ${announced} disagrees with the content's digest ${digest}`);
    }
    const declared = contentType && isManifestLike(contentType) ? contentType : undefined;
    const doc = parseManifestDocument(bytes, { declared, where: `manifest ${where}` });
    this.manifests.set(digest, bytes);
    return { mediaType: doc.mediaType, digest, size: bytes.byteLength };
  }

  /**
   * GET of a manifest, read whole (at most 4 MiB): a body the network cuts or stalls is asked for
   * again, as the request itself would be.
   */
  private async getManifest(ref: string, where: string, signal?: AbortSignal): Promise<{ res: HttpResponse; bytes: Buffer }> {
    const path = `/v2/${this.path}/manifests/${ref}`;
    return this.client.http.retryingRead(new URL(path, await this.client.baseUrl(signal)), async () => {
      const res = await this.client.request({ method: 'GET', path, scopes: this.pull(), headers: { accept: MANIFEST_ACCEPT }, signal });
      if (res.status === 404) {
        await res.body.dump();
        throw new FerryError('NOT_FOUND', `manifest ${where} not found`);
      }
      await expectStatus(res, [200], `GET manifest ${where}`);
      return { res, bytes: await readCapped(res.body, MAX_JSON_BYTES, `manifest ${where}`) };
    }, signal);
  }

  /**
   * The digest a tag points at, by HEAD (cheap; not counted as a pull on Docker Hub). Falls back
   * to a GET when the registry sends no Docker-Content-Digest. Undefined when the tag is absent.
   * `expected`, the digest the caller believes the tag has, goes out as If-None-Match: a registry
   * that keeps its manifests' digests as ETags (distribution does) then answers 304 without
   * reading the manifest, ~10 % of its CPU per HEAD in a no-op sync. One that ignores it answers
   * as usual.
   */
  async headDigest(ref: string, o: FetchOptions & { expected?: Digest } = {}): Promise<Digest | undefined> {
    const headers: Record<string, string> = { accept: MANIFEST_ACCEPT };
    if (o.expected) headers['if-none-match'] = `"${o.expected}"`;
    const res = await this.client.request({
      method: 'HEAD', path: `/v2/${this.path}/manifests/${ref}`, scopes: this.pull(), headers, signal: o.signal,
    });
    await res.body.dump();
    if (res.status === 404) return undefined;
    if (res.status === 304 && o.expected) return o.expected;
    await expectStatus(res, [200], `HEAD manifest ${this.named(ref)}`);
    const announced = header(res, 'docker-content-digest');
    if (announced && isDigest(announced)) return announced;
    return (await this.resolve(ref, o)).digest;
  }

  async fetch(d: Descriptor, o: FetchOptions = {}): Promise<Readable> {
    const cached = this.manifests.get(d.digest);
    if (cached && !o.offset) return Readable.from([cached]);
    if (isManifestLike(d.mediaType)) {
      const { bytes } = await this.getManifest(d.digest, `${this.name}@${d.digest}`, o.signal);
      return Readable.from([bytes]);
    }
    // A byte stream, not objectMode's default of 16 chunks buffered. 256 KiB ahead, not 1 MiB:
    // with a megabyte queued here, on top of the verifier's and the file's, socket chunks lived
    // through two minor GCs and waited for majors (37 per GiB pulled, 1-2 now; user CPU of a
    // 1 GiB pull 2.41 -> 2.07 s, median of 5).
    return Readable.from(this.blobChunks(d, o.offset ?? 0, o.signal), { objectMode: false, highWaterMark: 256 << 10 });
  }

  /**
   * A blob's bytes from `start`, resuming with Range after a broken connection: the engine's
   * verifying stream sees one continuous body. A server that ignores Range gets the prefix skipped.
   */
  private async *blobChunks(d: Descriptor, start: number, signal?: AbortSignal): AsyncGenerator<Buffer> {
    let offset = start;
    let failures = 0;
    while (offset < d.size || (offset === 0 && d.size === 0)) {
      const headers: Record<string, string> = offset > 0 ? { range: `bytes=${offset}-` } : {};
      const res = await this.client.request({ method: 'GET', path: `/v2/${this.path}/blobs/${d.digest}`, scopes: this.pull(), headers, signal });
      if (res.status === 404) {
        await res.body.dump();
        throw new FerryError('NOT_FOUND', `blob ${d.digest} not found in ${this.name}`);
      }
      if (res.status === 416 && offset > 0) {
        await res.body.dump();
        throw shortBlob(this.name, d, offset, header(res, 'content-range'));
      }
      await expectStatus(res, [200, 206], `GET blob ${this.name}@${d.digest}`);
      let skip = 0;
      if (offset > 0 && res.status === 206) {
        const range = /^bytes (\d+)-/.exec(header(res, 'content-range') ?? '');
        if (!range || Number(range[1]) !== offset) {
          await res.body.dump();
          throw new FerryError('NETWORK', `${this.name}: blob ${d.digest} resumed at the wrong offset (${header(res, 'content-range')}, wanted ${offset})`);
        }
      } else if (offset > 0) {
        skip = offset; // 200: the whole blob again
      }
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          let c = chunk;
          if (skip > 0) {
            const n = Math.min(skip, c.byteLength);
            skip -= n;
            c = c.subarray(n);
            if (c.byteLength === 0) continue;
          }
          offset += c.byteLength;
          yield c;
          if (offset > d.size) return; // the verifying stream reports the size error
        }
        // A body that ends cleanly but short (a proxy or CDN that closed a response it had
        // announced shorter) is resumed like a broken connection; the verifying stream reports
        // a size error once the failures run out.
        if (offset >= d.size || ++failures > 5) return;
      } catch (e) {
        if (signal?.aborted || !isRetryableError(e) || ++failures > 5) throw e;
      }
    }
  }

  // ---- Sink ----

  async has(d: Descriptor): Promise<boolean> {
    const kind = isManifestLike(d.mediaType) ? 'manifests' : 'blobs';
    const res = await this.client.request({
      method: 'HEAD', path: `/v2/${this.path}/${kind}/${d.digest}`, scopes: this.push(),
      headers: kind === 'manifests' ? { accept: MANIFEST_ACCEPT } : {},
    });
    await res.body.dump();
    if (res.status === 404) return false;
    await expectStatus(res, [200], `HEAD ${kind} ${this.name}@${d.digest}`);
    const length = Number(header(res, 'content-length'));
    const present = !Number.isFinite(length) || length === d.size || kind === 'manifests';
    if (present) await this.uploadNotNeeded(d);
    return present;
  }

  /** The blob is there now: a note an interrupted run left to resume its upload is stale. */
  private async uploadNotNeeded(d: Descriptor): Promise<void> {
    if (d.size > this.monolithicMax && !isManifestLike(d.mediaType)) await forgetUpload(this.name, d.digest);
  }

  async mount(d: Descriptor): Promise<boolean> {
    if (isManifestLike(d.mediaType)) return false;
    for (const from of this.opts.mountFrom ?? []) {
      if (from === this.path) continue;
      const res = await this.client.request({
        method: 'POST',
        path: `/v2/${this.path}/blobs/uploads/?mount=${encodeURIComponent(d.digest)}&from=${encodeURIComponent(from)}`,
        scopes: [...this.push(), `repository:${from}:pull`],
        headers: { 'content-length': '0' },
      });
      await res.body.dump();
      if (res.status === 201) {
        await this.uploadNotNeeded(d);
        return true;
      }
      if (res.status === 202) await this.cancel(location(res));
    }
    return false;
  }

  async put(d: Descriptor, body: Readable, o: PutOptions = {}): Promise<void> {
    if (isManifestLike(d.mediaType)) {
      const bytes = await readCapped(body, MAX_JSON_BYTES, `manifest ${d.digest}`);
      const recorded = await this.putManifest(d.digest, d.mediaType, bytes);
      this.manifests.set(d.digest, bytes);
      const doc = parseManifestDocument(bytes, { declared: d.mediaType, where: `manifest ${d.digest}` });
      const subject = doc.kind === 'manifest' ? doc.manifest.subject : doc.index.subject;
      if (subject && !recorded) await this.addToReferrersTag(subject.digest, d, doc);
      return;
    }
    const chunked = d.size > this.monolithicMax;
    const saved = chunked && o.reopen ? await this.savedUpload(d, o) : undefined;
    let loc: URL;
    if (saved) loc = saved.loc;
    else {
      const start = await this.client.request({
        method: 'POST', path: `/v2/${this.path}/blobs/uploads/`, scopes: this.push(), headers: { 'content-length': '0' }, signal: o.signal,
      });
      await expectStatus(start, [202], `start upload to ${this.name}`);
      await start.body.dump();
      loc = location(start);
      if (chunked) await saveUpload(this.name, d.digest, { location: loc.href, size: d.size });
    }
    try {
      loc = chunked ? await this.putChunks(loc, d, body, o, saved?.offset ?? 0) : await this.putWhole(loc, d, body, o);
      if (chunked) await forgetUpload(this.name, d.digest);
    } catch (e) {
      body.destroy();
      // A chunked upload cut off by the network stays open for the next run; anything else ends it.
      if (chunked && !o.signal?.aborted && (isRetryableError(e) || isRetryableCause(e))) throw e;
      await this.cancel(loc);
      if (chunked) await forgetUpload(this.name, d.digest);
      throw e;
    }
  }

  /** An upload of `d` that an earlier run left open (killed mid-blob): where and from which byte it continues. */
  private async savedUpload(d: Descriptor, o: PutOptions): Promise<{ loc: URL; offset: number } | undefined> {
    const saved = await loadUpload(this.name, d.digest);
    if (!saved || saved.size !== d.size || !URL.canParse(saved.location)) return undefined;
    const status = await this.client.request({ method: 'GET', path: new URL(saved.location), scopes: this.push(), signal: o.signal }).catch(() => undefined);
    if (!status) return undefined;
    await status.body.dump();
    const end = /(\d+)-(\d+)/.exec(header(status, 'range') ?? '');
    const offset = end ? Number(end[2]) + 1 : 0;
    if (status.status !== 204 || offset > d.size) {
      await forgetUpload(this.name, d.digest);
      return undefined;
    }
    return { loc: location(status, new URL(saved.location)), offset };
  }

  private async putWhole(loc: URL, d: Descriptor, body: Readable, o: PutOptions): Promise<URL> {
    const url = withDigest(loc, d.digest);
    const send = (b: Readable) => this.client.request({
      method: 'PUT', path: url, scopes: this.push(), body: b,
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(d.size) }, signal: o.signal,
    });
    let res: HttpResponse;
    try {
      res = await send(body);
    } catch (e) {
      if (!(e instanceof TokenRenewed) || !o.reopen) throw e;
      // The token ran out as the blob went up: once more with the new one, re-read and re-verified.
      body.destroy();
      res = await send(verifying(await o.reopen(0), d, `blob ${d.digest}`));
    }
    await expectStatus(res, [201], `upload ${d.digest} to ${this.name}`);
    await res.body.dump();
    return loc;
  }

  /**
   * Chunked upload. Each chunk streams straight from the body, a verifying stream, whose end is
   * awaited before the closing PUT so its verdict on the whole blob comes first. After a failed
   * chunk the upload resumes from the offset the registry reports: the source is re-read from
   * there (`reopen`, unverified), so from then on a running hash covers the blob instead, seeded
   * by hashing the part already sent again from the source. Hashing only then keeps the common
   * case at one SHA-256 pass (a second one cost ~0.8 s of CPU per GiB).
   */
  private async putChunks(loc: URL, d: Descriptor, body: Readable, o: PutOptions, from = 0): Promise<URL> {
    let source = body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let pending: Buffer | undefined;
    let offset = 0;
    // Set once the bytes no longer come from the verifying body.
    let hash: Hash | undefined;
    const reread = async (at: number): Promise<void> => {
      (source as { return?: () => unknown }).return?.();
      hash = at === 0 ? createHash('sha256') : await hashPrefix(await o.reopen!(0), at);
      source = (await o.reopen!(at))[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      pending = undefined;
      offset = at;
    };
    if (from > 0) {
      // Continuing a session from an earlier run: the registry holds `from` bytes (whatever it
      // kept, it got from this source), then send the rest.
      await reread(from); // closes the body
    }
    let failures = 0;
    while (offset < d.size) {
      const size = Math.min(this.chunkSize, d.size - offset);
      const chunkHash = hash?.copy();
      const piece = async function* (): AsyncGenerator<Buffer> {
        let left = size;
        while (left > 0) {
          let c = pending ?? (await source.next()).value as Buffer | undefined;
          pending = undefined;
          if (!c) throw new FerryError('SIZE_MISMATCH', `blob ${d.digest} ended early`);
          if (c.byteLength > left) {
            pending = c.subarray(left);
            c = c.subarray(0, left);
          }
          left -= c.byteLength;
          chunkHash?.update(c);
          yield c;
        }
      };
      try {
        const res = await this.client.request({
          method: 'PATCH', path: loc, scopes: this.push(), body: Readable.from(piece(), { objectMode: false, highWaterMark: 1 << 20 }), signal: o.signal,
          headers: { 'content-type': 'application/octet-stream', 'content-range': `${offset}-${offset + size - 1}`, 'content-length': String(size) },
        });
        await expectStatus(res, [202, 201, 204], `upload chunk of ${d.digest} to ${this.name}`);
        await res.body.dump();
        loc = location(res, loc);
        offset += size;
        hash = chunkHash;
        await saveUpload(this.name, d.digest, { location: loc.href, size: d.size });
      } catch (e) {
        if (o.signal?.aborted || !o.reopen || ++failures > 5 || !(isRetryableError(e) || isRetryableCause(e) || e instanceof TokenRenewed)) throw e;
        const status = await this.client.request({ method: 'GET', path: loc, scopes: this.push() });
        await status.body.dump();
        if (status.status !== 204) throw e;
        const end = /(\d+)-(\d+)/.exec(header(status, 'range') ?? '');
        const remote = end ? Number(end[2]) + 1 : 0;
        loc = location(status, loc);
        // The registry may hold more than was acknowledged (a chunk whose answer was lost, or kept
        // in part): whatever it holds came from this source, so the upload goes on from there.
        if (remote > d.size) throw e;
        await reread(remote);
      }
    }
    if (hash) {
      const actual = `sha256:${hash.digest('hex')}`;
      if (actual !== d.digest) {
        throw new FerryError('DIGEST_MISMATCH', `digest mismatch for blob ${d.digest}: expected ${d.digest}, got ${actual}`);
      }
    } else {
      // The verifying body checks size and digest as it ends: a wrong blob throws here.
      const rest = await source.next();
      if (!rest.done) throw new FerryError('SIZE_MISMATCH', `size mismatch for blob ${d.digest}: more than the expected ${d.size} bytes`);
    }
    const res = await this.client.request({ method: 'PUT', path: withDigest(loc, d.digest), scopes: this.push(), headers: { 'content-length': '0' }, signal: o.signal });
    await expectStatus(res, [201], `finish upload of ${d.digest} to ${this.name}`);
    await res.body.dump();
    return loc;
  }

  private async cancel(loc: URL): Promise<void> {
    try {
      const res = await this.client.request({ method: 'DELETE', path: loc, scopes: this.push() });
      await res.body.dump();
    } catch {
      // best effort: the registry expires abandoned uploads
    }
  }

  /** `o.tags`: the tags to look among for cosign's, when the caller has listed them already. */
  async referrers(d: Descriptor, o: FetchOptions & { tags?: string[] } = {}): Promise<Referrer[]> {
    if (!isManifestLike(d.mediaType)) return [];
    const out: Referrer[] = [];
    const res = await this.client.request({
      method: 'GET', path: `/v2/${this.path}/referrers/${d.digest}`, scopes: this.pull(), headers: { accept: MediaType.OciIndex }, signal: o.signal,
    });
    if (res.status === 200) {
      const doc = parseManifestDocument(await readCapped(res.body, MAX_JSON_BYTES, `referrers of ${d.digest}`), { where: `referrers of ${this.name}@${d.digest}` });
      if (doc.kind === 'index') out.push(...doc.index.manifests.map((descriptor) => ({ descriptor })));
    } else {
      await res.body.dump();
      // No Referrers API: the fallback tag holds an index of referrers.
      const fallback = await this.resolve(referrersTag(d.digest)).catch((e: unknown) => {
        if (isFerryError(e, 'NOT_FOUND')) return undefined;
        throw e;
      });
      if (fallback) {
        const doc = parseManifestDocument(this.manifests.get(fallback.digest)!, { where: `${this.name}:${referrersTag(d.digest)}` });
        if (doc.kind === 'index') out.push(...doc.index.manifests.map((descriptor) => ({ descriptor })));
      }
    }
    // cosign's tags: sha256-<hex>.sig / .att / .sbom
    const tags = o.tags ?? (await (this.tagList ??= this.listTags({ signal: o.signal }).catch(() => [])));
    const prefix = `${referrersTag(d.digest)}.`;
    for (const tag of tags.filter((t) => t.startsWith(prefix))) {
      out.push({ descriptor: await this.resolve(tag, o), tag });
    }
    return out;
  }

  /** PUTs a manifest; true when the registry says it recorded its subject (OCI-Subject). */
  private async putManifest(ref: string, mediaType: string, bytes: Buffer): Promise<boolean> {
    const res = await this.client.request({
      method: 'PUT', path: `/v2/${this.path}/manifests/${ref}`, scopes: this.push(), body: bytes,
      headers: { 'content-type': mediaType },
    });
    await expectStatus(res, [201, 200, 202], `push manifest ${this.named(ref)}`);
    await res.body.dump();
    const announced = header(res, 'docker-content-digest');
    const digest = digestOf(bytes);
    if (announced && announced !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `${this.named(ref)}: the registry stored the manifest as ${announced}, expected ${digest}`);
    }
    return header(res, 'oci-subject') !== undefined;
  }

  /** For registries without the Referrers API: keep the `sha256-<hex>` index of referrers current. */
  private async addToReferrersTag(subject: Digest, d: Descriptor, doc: ParsedDocument): Promise<void> {
    const tag = referrersTag(subject);
    let index: ImageIndex = { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [] };
    const current = await this.resolve(tag).catch((e: unknown) => {
      if (isFerryError(e, 'NOT_FOUND')) return undefined;
      throw e;
    });
    if (current) {
      const old = parseManifestDocument(this.manifests.get(current.digest)!, { where: `${this.name}:${tag}` });
      if (old.kind === 'index') index = old.index;
    }
    if (index.manifests.some((m) => m.digest === d.digest)) return;
    const m = doc.kind === 'manifest' ? doc.manifest : undefined;
    const entry: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
    const artifactType = m?.artifactType ?? m?.config.mediaType ?? (doc.kind === 'index' ? doc.index.artifactType : undefined);
    if (artifactType) entry.artifactType = artifactType;
    const annotations = m?.annotations ?? (doc.kind === 'index' ? doc.index.annotations : undefined);
    if (annotations) entry.annotations = annotations;
    const bytes = Buffer.from(JSON.stringify({ ...index, manifests: [...index.manifests, entry] }));
    await this.putManifest(tag, MediaType.OciIndex, bytes);
    this.manifests.set(digestOf(bytes), bytes);
  }

  async tag(root: Descriptor, name: TagName | undefined): Promise<void> {
    if (name) this.pendingTags.push({ root, tag: name.tag });
  }

  /** Pushes the tags, last: by now every blob and manifest they reach is in the registry. */
  async commit(): Promise<void> {
    for (const { root, tag } of this.pendingTags.splice(0)) {
      let bytes = this.manifests.get(root.digest);
      if (!bytes) {
        await this.resolve(root.digest);
        bytes = this.manifests.get(root.digest)!;
      }
      await this.putManifest(tag, root.mediaType, bytes);
    }
  }

  async listTags(o: { signal?: AbortSignal; pageSize?: number; maxPages?: number } = {}): Promise<string[]> {
    return paginate(this.client, `/v2/${this.path}/tags/list${o.pageSize ? `?n=${o.pageSize}` : ''}`, this.pull(), 'tags', { ...o, notFound: `repository ${this.name} not found` });
  }

  async deleteManifest(digest: Digest): Promise<void> {
    const res = await this.client.request({ method: 'DELETE', path: `/v2/${this.path}/manifests/${digest}`, scopes: [`repository:${this.path}:delete`, ...this.push()] });
    if (res.status === 404) {
      await res.body.dump();
      throw new FerryError('NOT_FOUND', `${this.name}@${digest} not found`);
    }
    if (res.status === 405 || res.status === 400) {
      // Not a mistake in the command line: the registry's choice (distribution needs delete: enabled: true).
      throw new FerryError('REFUSED', `${this.client.domain} does not allow deleting manifests${await errorDetail(res)}`, {
        hint: 'the registry is read-only or has deletes turned off (distribution: storage.delete.enabled)',
      });
    }
    await expectStatus(res, [202, 200], `delete ${this.name}@${digest}`);
    await res.body.dump();
  }

  /**
   * Removes one tag, leaving the manifest and its other tags (OCI distribution 1.1). A registry
   * that deletes only by digest refuses: distribution 2.8 answers 400 DIGEST_INVALID, others 405
   * or 404. Returns undefined when the tag is gone, else the refusal (`HTTP 400 DIGEST_INVALID`).
   */
  async deleteTag(tag: string): Promise<string | undefined> {
    const res = await this.client.request({ method: 'DELETE', path: `/v2/${this.path}/manifests/${tag}`, scopes: [`repository:${this.path}:delete`, ...this.push()] });
    if ([400, 404, 405, 501].includes(res.status)) {
      const code = /^: (\S+)/.exec(await errorDetail(res))?.[1];
      return `HTTP ${res.status}${code ? ` ${code}` : ''}`;
    }
    await expectStatus(res, [202, 200], `delete ${this.named(tag)}`);
    await res.body.dump();
    return undefined;
  }

  async close(): Promise<void> {}
}

/** Follows `Link: <…>; rel="next"` until it stops; a loop or too many pages is an error. */
export async function paginate(client: RegistryClient, first: string, scopes: string[], field: 'tags' | 'repositories', o: { signal?: AbortSignal; maxPages?: number; notFound?: string } = {}): Promise<string[]> {
  const out: string[] = [];
  const seen = new Set<string>();
  let next: string | URL | undefined = first;
  for (let page = 0; next; page++) {
    if (page >= (o.maxPages ?? 10_000)) throw new FerryError('NETWORK', `${client.domain}: more than ${o.maxPages ?? 10_000} pages of ${field}`);
    const key = String(next);
    if (seen.has(key)) throw new FerryError('NETWORK', `${client.domain}: pagination loops back to ${key}`);
    seen.add(key);
    const path: string | URL = next;
    const { res, doc }: { res: HttpResponse; doc: Record<string, unknown> } = await client.http.retryingRead(new URL(path, await client.baseUrl(o.signal)), async () => {
      const reply: HttpResponse = await client.request({ method: 'GET', path, scopes, signal: o.signal });
      if (reply.status === 404) {
        await reply.body.dump();
        throw new FerryError('NOT_FOUND', o.notFound ?? `${client.domain}${first}: not found`);
      }
      await expectStatus(reply, [200], `list ${field} of ${client.domain}`);
      const body = (await readCapped(reply.body, 16 * MiB, `${field} list`).then((b) => JSON.parse(b.toString('utf8')))) as Record<string, unknown>;
      return { res: reply, doc: body };
    }, o.signal);
    const items = doc[field];
    if (items !== null && items !== undefined && !Array.isArray(items)) throw new FerryError('INVALID_INPUT', `${client.domain}: "${field}" is not a list`);
    out.push(...((items as string[] | null) ?? []));
    const link = header(res, 'link');
    const m = link ? /<([^>]+)>\s*;\s*rel="?next"?/.exec(link) : null;
    next = m ? new URL(m[1]!, res.url) : undefined;
  }
  return out;
}

/** The fallback tag of the Referrers tag schema: `<alg>-<encoded>`, truncated as the spec says. */
export function referrersTag(d: Digest): string {
  const [alg, enc] = d.split(':') as [string, string];
  return `${alg.slice(0, 32)}-${enc.slice(0, 64)}`;
}

/**
 * A resumed download refused with 416: the registry holds fewer bytes than the `offset` already
 * read, so its copy is shorter than the manifest says. Damaged content, not a network failure.
 */
function shortBlob(repo: string, d: Descriptor, offset: number, contentRange: string | undefined): FerryError {
  const total = /^bytes \*\/(\d+)$/.exec(contentRange?.trim() ?? '');
  const has = total ? `only ${total[1]} bytes` : `no more than ${offset} bytes`;
  return new FerryError('SIZE_MISMATCH', `size mismatch for blob ${d.digest}: the registry has ${has}, the manifest says ${d.size} (${repo})`, {
    hint: "the registry's copy is truncated: push the image to it again, or copy from another source",
  });
}

function isRetryableCause(e: unknown): boolean {
  return isRetryableError((e as { cause?: unknown }).cause) || (e as { code?: string }).code === 'NETWORK';
}

function location(res: HttpResponse, fallback?: URL): URL {
  const loc = header(res, 'location');
  if (!loc) {
    if (fallback) return fallback;
    throw new FerryError('NETWORK', `${res.url.host} started an upload without a Location header`);
  }
  return new URL(loc, res.url);
}

/** Adds `digest=` to an upload URL that may already carry a query (`?_state=…`). */
function withDigest(loc: URL, digest: Digest): URL {
  const u = new URL(loc);
  u.searchParams.set('digest', digest);
  return u;
}

async function expectStatus(res: HttpResponse, ok: number[], what: string): Promise<void> {
  if (ok.includes(res.status)) return;
  const detail = await errorDetail(res);
  if (/DIGEST_INVALID/.test(detail)) throw new FerryError('DIGEST_MISMATCH', `${what}: the registry says the content does not match its digest${detail}`);
  if (res.status === 429) throw new FerryError('NETWORK', `${what}: rate limited (HTTP 429)${detail}`, { hint: RATE_LIMIT_HINT });
  if (res.status >= 500) throw new FerryError('NETWORK', `${what}: HTTP ${res.status} from ${res.url.host}${detail}`);
  if (res.status === 404) throw new FerryError('NOT_FOUND', `${what}: not found${detail}`);
  // Refusals that asking again will not change: not retried, and not called a network failure.
  if (res.status === 401 || res.status === 403) throw new FerryError('AUTH', `${what}: denied (HTTP ${res.status})${detail}`, { hint: 'check that your account may do this in that repository' });
  if (res.status === 405) {
    throw new FerryError('REFUSED', `${what}: ${res.url.host} does not allow this (HTTP 405)${detail}`, { hint: 'the registry (or this repository) is read-only, or does not offer this operation' });
  }
  if (res.status === 413) throw new FerryError('TOO_LARGE', `${what}: ${res.url.host} refused it as too large (HTTP 413)${detail}`);
  if (res.status === 408) throw new FerryError('NETWORK', `${what}: the registry timed out waiting (HTTP 408)${detail}`);
  // An upload chunk at an offset the registry does not hold: the upload asks where it stands and resumes.
  if (res.status === 416) throw new FerryError('NETWORK', `${what}: the registry holds the upload at another offset (HTTP 416)${detail}`);
  if (res.status >= 400) throw new FerryError('INVALID_INPUT', `${what}: ${res.url.host} refused it (HTTP ${res.status})${detail}`);
  throw new FerryError('NETWORK', `${what}: unexpected HTTP ${res.status}${detail}`);
}
