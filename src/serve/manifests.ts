import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { publishBytes } from '../blob/publish.js';
import { isFerryError } from '../errors.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, addRoot } from '../locations/layout.js';
import { algorithmOf, digestOf, type Digest } from '../oci/digest.js';
import { isForeignLayer, isLayerType, isManifestLike, isSchema1Type, MediaType } from '../oci/mediatypes.js';
import { MAX_JSON_BYTES, childrenOf, parseConfig, parseManifestDocument, type Descriptor, type ParsedDocument } from '../oci/manifest.js';
import { MAX_INDEX_DEPTH, readDocument } from '../graph.js';
import { readVerified } from '../blob/verify.js';
import { isValidTag } from '../oci/reference.js';
import { digestParam } from './blobs.js';
import { manifestUnknown, RegistryError, unsupported } from './errors.js';
import { acceptedTypes, contentType, readBody, send } from './http.js';
import { servedEntry, type RepoKey } from './names.js';
import { manifestInfo, type ManifestInfo } from './store-view.js';
import type { RepoRequest, ServeContext } from './context.js';
import { mkdirs } from '../util/mkdirs.js';

type Ref = { digest: Digest; tag?: undefined } | { tag: string; digest?: undefined };

/** A manifest reference from a URL: a digest (anything with ':') or a tag, validated. */
export function parseRef(ref: string): Ref {
  if (ref.includes(':')) return { digest: digestParam(ref) };
  if (!isValidTag(ref)) {
    throw new RegistryError(400, 'TAG_INVALID', `invalid tag ${JSON.stringify(ref.slice(0, 200))}: letters, digits, '_', '.', '-', at most 128, not starting with '.' or '-'`, { tag: ref.slice(0, 200) });
  }
  return { tag: ref };
}

/** The manifest a reference names in a repository: a tag of it, or a digest its images reach. */
async function locate(ctx: ServeContext, r: RepoRequest, ref: Ref): Promise<ManifestInfo> {
  let digest: Digest;
  if (ref.tag !== undefined) {
    const d = await ctx.view.resolveTag(r.key, ref.tag);
    if (!d) throw manifestUnknown(r.name, ref.tag, 'no such tag');
    digest = d.digest;
  } else {
    digest = ref.digest;
    if (!(await ctx.view.reachable(r.key)).has(digest)) throw manifestUnknown(r.name, digest);
  }
  const info = await ctx.view.info(digest);
  if (!info) throw manifestUnknown(r.name, ref.tag ?? digest, 'its manifest is missing from the store');
  return info;
}

/**
 * Never answers with a type the client did not list in Accept (it may be unable to parse it, and
 * a converted document would have another digest): 404 like distribution. No Accept, or a
 * wildcard, accepts anything.
 */
function negotiate(r: RepoRequest, info: ManifestInfo, ref: string): void {
  const accepted = acceptedTypes(r.req);
  if (accepted.length === 0 || accepted.includes('*/*') || accepted.includes('application/*')) return;
  if (accepted.includes(info.mediaType.toLowerCase())) return;
  throw manifestUnknown(r.name, ref, `its media type is ${info.mediaType}, which the request's Accept header does not list`);
}

/** If-None-Match (RFC 9110 13.1.2): `*`, or a list of entity tags compared weakly. */
function etagListed(header: string | undefined, etag: string): boolean {
  if (!header) return false;
  return header.split(',').some((t) => {
    const v = t.trim();
    return v === '*' || v.replace(/^W\//, '') === etag;
  });
}

/** GET/HEAD /v2/<name>/manifests/<reference> */
export async function getManifest(ctx: ServeContext, r: RepoRequest, text: string): Promise<void> {
  const info = await locate(ctx, r, parseRef(text));
  negotiate(r, info, text);
  const etag = `"${info.digest}"`;
  if (etagListed(r.req.headers['if-none-match'], etag)) {
    // Unchanged since the client's copy (a sync's tag check): the manifest is not read.
    send(r.req, r.res, 304, { 'Docker-Content-Digest': info.digest, ETag: etag });
    return;
  }
  const bytes = await ctx.view.readBytes(info.digest);
  if (!bytes) throw manifestUnknown(r.name, text, 'its manifest is missing from the store');
  send(r.req, r.res, 200, { 'Content-Type': info.mediaType, 'Docker-Content-Digest': info.digest, ETag: `"${info.digest}"` }, bytes);
}

/** Blobs a document needs in the store: children, config, layers; not `subject`, not foreign layers with URLs. */
function requiredBlobs(doc: ParsedDocument): Descriptor[] {
  return childrenOf(doc).filter((d) => !isForeignLayer(d));
}

/** PUT /v2/<name>/manifests/<reference> */
export async function putManifest(ctx: ServeContext, r: RepoRequest, text: string): Promise<void> {
  const ref = parseRef(text);
  const bytes = await readBody(r.req, MAX_JSON_BYTES, () =>
    new RegistryError(413, 'MANIFEST_INVALID', `manifest exceeds the limit of ${MAX_JSON_BYTES} bytes`, { limit: MAX_JSON_BYTES }),
  );
  const type = contentType(r.req);
  const declared = type !== undefined && (isManifestLike(type) || isSchema1Type(type)) ? type : undefined;
  let doc: ParsedDocument;
  try {
    doc = parseManifestDocument(bytes, { declared, where: 'manifest' });
  } catch (e) {
    if (isFerryError(e)) throw new RegistryError(400, 'MANIFEST_INVALID', e.message, { reason: e.code });
    throw e;
  }
  const digest = digestOf(bytes, ref.digest ? algorithmOf(ref.digest) : 'sha256');
  if (ref.digest && digest !== ref.digest) {
    throw new RegistryError(400, 'DIGEST_INVALID', `manifest body has digest ${digest}, not ${ref.digest} named in the URL`, { expected: ref.digest, actual: digest });
  }
  const missing: Descriptor[] = [];
  for (const d of requiredBlobs(doc)) {
    if (await ctx.layout.has(d)) continue;
    await refuseWrongSize(ctx, d);
    missing.push(d);
  }
  if (missing.length) {
    const list = missing.slice(0, 5).map((d) => `${d.digest} (${d.size} bytes)`).join(', ');
    throw new RegistryError(400, 'MANIFEST_BLOB_UNKNOWN', `manifest references ${missing.length} blob(s) the registry does not have: ${list}; push them first`, { digest: missing[0]!.digest });
  }

  await refuseUnwalkable(ctx, doc, 0);

  const path = ctx.layout.blobPath(digest);
  await mkdirs(dirname(path));
  await publishBytes(path, bytes);
  const info = manifestInfo(digest, doc);
  ctx.view.note(info);
  const root: Descriptor = { mediaType: doc.mediaType, digest, size: bytes.byteLength };
  if (info.artifactType !== undefined && (doc.kind === 'index' ? doc.index : doc.manifest).artifactType !== undefined) root.artifactType = info.artifactType;
  if (ref.tag !== undefined) {
    const below = await ctx.view.reachableFrom(digest);
    const tag = ref.tag;
    await ctx.layout.editIndex((m) => addRoot(m.filter((e) => !(isUntaggedIn(e, r.key) && below.has(e.digest))), root, { tag, name: `${r.key}:${tag}` }));
  } else if (!(await ctx.view.reachable(r.key)).has(digest)) {
    // Kept as an untagged entry of the repository, so it survives gc and can be pulled by digest.
    const entry: Descriptor = { ...root, annotations: { [ANNOTATION_IMAGE_NAME]: `${r.key}@${digest}` } };
    await ctx.layout.editIndex((m) => (m.some((e) => e.digest === digest && keyOf(e) === r.key) ? m : [...m, entry]));
  }
  ctx.view.invalidate();
  const headers: Record<string, string> = { Location: `/v2/${r.name}/manifests/${digest}`, 'Docker-Content-Digest': digest };
  if (info.subject) headers['OCI-Subject'] = info.subject;
  send(r.req, r.res, 201, headers);
}

/**
 * What the store's own graph walk (gc, verify, pull) would stop at below this document, refused
 * at the door: an index entry that is not the kind of document it is declared as (a layer, or a
 * manifest declared as an index), nesting deeper than the walk goes, an image config that is not
 * a config. Accepted, one such document stopped every later `ferry gc` of the whole store.
 */
async function refuseUnwalkable(ctx: ServeContext, doc: ParsedDocument, depth: number): Promise<void> {
  const invalid = (d: Descriptor, e: unknown): never => {
    if (!isFerryError(e)) throw e;
    throw new RegistryError(400, 'MANIFEST_INVALID', `${d.digest}: ${e.message}`, { digest: d.digest });
  };
  if (doc.kind === 'index') {
    for (const c of doc.index.manifests) {
      if (!isManifestLike(c.mediaType)) continue;
      if (depth + 1 > MAX_INDEX_DEPTH) throw new RegistryError(400, 'MANIFEST_INVALID', `index nesting exceeds the limit of ${MAX_INDEX_DEPTH} levels`, { digest: c.digest });
      const child = await readDocument(ctx.layout, c).catch((e: unknown) => invalid(c, e));
      await refuseUnwalkable(ctx, child, depth + 1);
    }
    return;
  }
  // As verify reads it: an image's config (config type, only layers), which gives the diff_ids.
  const config = doc.manifest.config;
  const image = (config.mediaType === MediaType.OciConfig || config.mediaType === MediaType.DockerConfig) && doc.manifest.layers.every((l) => isLayerType(l.mediaType));
  if (!image || config.size > MAX_JSON_BYTES) return;
  try {
    parseConfig(await readVerified(await ctx.layout.fetch(config), config, `config ${config.digest}`), `config ${config.digest}`);
  } catch (e) {
    invalid(config, e);
  }
}

/** A referenced blob the store has with another size: pushing it again cannot help, the manifest is wrong. */
async function refuseWrongSize(ctx: ServeContext, d: Descriptor): Promise<void> {
  const st = await stat(ctx.layout.blobPath(d.digest)).catch(() => undefined);
  if (!st?.isFile() || st.size === d.size) return;
  throw new RegistryError(400, 'MANIFEST_INVALID', `manifest gives ${d.digest} a size of ${d.size} bytes, but that blob has ${st.size} bytes; correct the size in the manifest`, {
    digest: d.digest,
    size: d.size,
    actual: st.size,
  });
}

function keyOf(d: Descriptor): RepoKey | undefined {
  const a = d.annotations ?? {};
  return servedEntry({ descriptor: d, tag: a[ANNOTATION_REF_NAME], name: a[ANNOTATION_IMAGE_NAME] })?.key;
}

function isUntaggedIn(d: Descriptor, key: RepoKey): boolean {
  const a = d.annotations ?? {};
  return a[ANNOTATION_REF_NAME] === undefined && a[ANNOTATION_IMAGE_NAME] === `${key}@${d.digest}`;
}

/**
 * DELETE /v2/<name>/manifests/<reference>. By digest: removes every name of the repository that
 * points at it (tags and the untagged entry). By tag: removes that tag only. Blobs stay until
 * `ferry gc`. A manifest reached only through an index of the repository cannot be deleted alone.
 */
export async function deleteManifest(ctx: ServeContext, r: RepoRequest, text: string): Promise<void> {
  const ref = parseRef(text);
  // A manifest an index of the repository holds stays served by digest whatever its own tags: its
  // deletion is refused before any of them goes (they went, and the 202 was not true).
  if (ref.digest && (await ctx.view.reachableWithout(r.key, ref.digest)).has(ref.digest)) {
    throw unsupported(`${ref.digest} is part of an index in ${r.name}; delete the index instead`);
  }
  const removed = await ctx.layout.untag((e) => {
    const s = servedEntry(e);
    if (s?.key !== r.key) return false;
    return ref.digest !== undefined ? e.descriptor.digest === ref.digest : s.tag === ref.tag;
  });
  ctx.view.invalidate();
  if (removed.length === 0) {
    if (ref.digest && (await ctx.view.reachable(r.key)).has(ref.digest)) {
      throw unsupported(`${ref.digest} is part of an index in ${r.name}; delete the index instead`);
    }
    throw manifestUnknown(r.name, text);
  }
  send(r.req, r.res, 202);
}
