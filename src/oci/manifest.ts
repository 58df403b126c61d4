import { FerryError } from '../errors.js';
import { digestOf, parseDigest, type Digest } from './digest.js';
import { isIndexType, isManifestType, isSchema1Type, MediaType } from './mediatypes.js';

/** Registries must accept 4 MiB manifests; nothing legitimate needs more, and the cap stops endless bodies. */
export const MAX_JSON_BYTES = 4 * 1024 * 1024;

export interface Platform {
  architecture: string;
  os: string;
  variant?: string;
  'os.version'?: string;
  'os.features'?: string[];
  features?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: Platform;
  annotations?: Record<string, string>;
  artifactType?: string;
  urls?: string[];
  data?: string;
  [key: string]: unknown;
}

export interface ImageManifest {
  schemaVersion: 2;
  mediaType?: string;
  config: Descriptor;
  layers: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface ImageIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
  subject?: Descriptor;
  artifactType?: string;
  annotations?: Record<string, string>;
  [key: string]: unknown;
}

export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  created?: string;
  config?: Record<string, unknown> | null;
  rootfs: { type: 'layers'; diff_ids: Digest[] };
  history?: Array<{ created?: string; created_by?: string; comment?: string; empty_layer?: boolean }> | null;
  [key: string]: unknown;
}

export type ParsedDocument =
  | { kind: 'manifest'; mediaType: string; manifest: ImageManifest; bytes: Uint8Array }
  | { kind: 'index'; mediaType: string; index: ImageIndex; bytes: Uint8Array };

const invalid = (where: string, what: string) => new FerryError('INVALID_INPUT', `${where}: ${what}`);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parseJson(bytes: Uint8Array, where: string): unknown {
  if (bytes.byteLength > MAX_JSON_BYTES) {
    throw new FerryError('TOO_LARGE', `${where}: JSON document of ${bytes.byteLength} bytes exceeds limit of ${MAX_JSON_BYTES} bytes`);
  }
  try {
    return JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('utf8'));
  } catch (e) {
    const reason = e instanceof RangeError ? 'nesting exceeds limit' : (e as Error).message;
    throw invalid(where, `not valid JSON (${reason})`);
  }
}

function stringMap(v: unknown, where: string): Record<string, string> | undefined {
  if (v === undefined || v === null) return undefined;
  if (!isObject(v)) throw invalid(where, 'annotations must be an object');
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== 'string') throw invalid(where, `annotation "${k}" must be a string`);
  }
  return v as Record<string, string>;
}

export function parsePlatformObject(v: unknown, where: string): Platform {
  if (!isObject(v) || typeof v.architecture !== 'string' || typeof v.os !== 'string') {
    throw invalid(where, 'platform needs string "architecture" and "os"');
  }
  if (v.variant !== undefined && typeof v.variant !== 'string') throw invalid(where, 'platform.variant must be a string');
  return v as unknown as Platform;
}

/** Validates one descriptor in place; unknown fields are kept untouched. */
export function parseDescriptor(v: unknown, where: string): Descriptor {
  if (!isObject(v)) throw invalid(where, 'descriptor must be an object');
  if (typeof v.mediaType !== 'string' || v.mediaType === '') throw invalid(where, 'descriptor needs a "mediaType" string');
  const digest = parseDigest(v.digest, where);
  if (typeof v.size !== 'number' || !Number.isSafeInteger(v.size) || v.size < 0) {
    throw invalid(where, `descriptor ${digest} has an invalid size ${JSON.stringify(v.size)}`);
  }
  if (v.platform !== undefined) parsePlatformObject(v.platform, where);
  stringMap(v.annotations, where);
  if (v.urls !== undefined && (!Array.isArray(v.urls) || v.urls.some((u) => typeof u !== 'string'))) {
    throw invalid(where, 'descriptor "urls" must be an array of strings');
  }
  if (v.data !== undefined) {
    // Embedded data is content like any other: it must match the digest and size it claims.
    if (typeof v.data !== 'string') throw invalid(where, 'descriptor "data" must be base64');
    const bytes = Buffer.from(v.data, 'base64');
    if (bytes.byteLength !== v.size || digestOf(bytes, 'sha256') !== digest) {
      throw new FerryError('DIGEST_MISMATCH', `${where}: embedded data of ${digest} does not match its digest or size`);
    }
  }
  return v as unknown as Descriptor;
}

/**
 * Parses a manifest or index from its exact bytes. `declared` is the media type the caller was
 * told (descriptor or Content-Type); if the body names a different one, the document is refused
 * (CVE-2021-41190), as is a body that has both `manifests` and `layers`/`config`.
 */
export function parseManifestDocument(bytes: Uint8Array, opts: { declared?: string; where: string }): ParsedDocument {
  const { where } = opts;
  const doc = parseJson(bytes, where);
  if (!isObject(doc)) throw invalid(where, 'manifest must be a JSON object');
  const bodyType = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (isSchema1Type(bodyType) || isSchema1Type(opts.declared) || doc.schemaVersion === 1) {
    throw new FerryError('UNSUPPORTED', `${where}: schema1 unsupported (legacy Docker schema1 manifest)`, {
      hint: 'rebuild and push the image with a current Docker or buildah; schema1 images cannot be verified by digest',
    });
  }
  if (doc.schemaVersion !== 2) throw invalid(where, `unsupported schemaVersion ${JSON.stringify(doc.schemaVersion)}`);
  if (bodyType !== undefined && opts.declared !== undefined && bodyType !== opts.declared) {
    throw invalid(where, `mediaType "${bodyType}" in the document disagrees with the declared "${opts.declared}"`);
  }
  const hasIndexShape = 'manifests' in doc;
  const hasManifestShape = 'layers' in doc || 'config' in doc;
  if (hasIndexShape && hasManifestShape) {
    throw invalid(where, 'ambiguous document: has both "manifests" and "layers"/"config" (refused, CVE-2021-41190)');
  }
  const type = bodyType ?? opts.declared;
  let kind: 'index' | 'manifest';
  if (type !== undefined && isIndexType(type)) kind = 'index';
  else if (type !== undefined && isManifestType(type)) kind = 'manifest';
  else if (type !== undefined) {
    throw new FerryError('UNSUPPORTED', `${where}: unsupported manifest media type "${type}"`);
  } else if (hasIndexShape) kind = 'index';
  else if (hasManifestShape) kind = 'manifest';
  else throw invalid(where, 'document is neither an image manifest nor an index');

  if (kind === 'index') {
    if (hasManifestShape) throw invalid(where, 'index must not have "layers" or "config"');
    if (!Array.isArray(doc.manifests)) throw invalid(where, 'index needs a "manifests" array');
    doc.manifests.forEach((m, i) => parseDescriptor(m, `${where} manifests[${i}]`));
    if (doc.subject !== undefined) parseDescriptor(doc.subject, `${where} subject`);
    stringMap(doc.annotations, where);
    return { kind, mediaType: type ?? MediaType.OciIndex, index: doc as unknown as ImageIndex, bytes };
  }
  if (hasIndexShape) throw invalid(where, 'image manifest must not have "manifests"');
  parseDescriptor(doc.config, `${where} config`);
  if (!Array.isArray(doc.layers)) throw invalid(where, 'manifest needs a "layers" array');
  doc.layers.forEach((l, i) => parseDescriptor(l, `${where} layers[${i}]`));
  if (doc.subject !== undefined) parseDescriptor(doc.subject, `${where} subject`);
  stringMap(doc.annotations, where);
  return { kind, mediaType: type ?? MediaType.OciManifest, manifest: doc as unknown as ImageManifest, bytes };
}

/** The tag under which a registry without the Referrers API keeps a manifest's referrers index (`sha256-<hex>`). */
export const REFERRERS_INDEX_TAG = /^sha256-[a-f0-9]{64}$/;

/** The digest a cosign-style tag (`sha256-<hex>.sig`, `.att`, `.sbom`) names, if `tag` is one. */
export function cosignSubject(tag: string): Digest | undefined {
  const m = /^sha256-([a-f0-9]{64})\.[a-z]+$/.exec(tag);
  return m ? (`sha256:${m[1]}` as Digest) : undefined;
}

/** The manifest a referrer names (`subject`); none for bytes that are no manifest this reader understands. */
export function subjectOf(bytes: Uint8Array, opts: { declared?: string; where: string }): Digest | undefined {
  try {
    const doc = parseManifestDocument(bytes, opts);
    return (doc.kind === 'manifest' ? doc.manifest.subject : doc.index.subject)?.digest;
  } catch {
    return undefined;
  }
}

export function parseConfig(bytes: Uint8Array, where: string): ImageConfig {
  const doc = parseJson(bytes, where);
  if (!isObject(doc)) throw invalid(where, 'config must be a JSON object');
  if (typeof doc.architecture !== 'string' || typeof doc.os !== 'string') {
    throw invalid(where, 'config needs string "architecture" and "os"');
  }
  const rootfs = doc.rootfs;
  if (!isObject(rootfs) || rootfs.type !== 'layers' || !Array.isArray(rootfs.diff_ids)) {
    throw invalid(where, 'config needs rootfs {"type": "layers", "diff_ids": [...]}');
  }
  rootfs.diff_ids.forEach((d, i) => parseDigest(d, `${where} rootfs.diff_ids[${i}]`));
  return doc as unknown as ImageConfig;
}

export function childrenOf(doc: ParsedDocument): Descriptor[] {
  return doc.kind === 'index' ? doc.index.manifests : [doc.manifest.config, ...doc.manifest.layers];
}

/** Strips the fields a descriptor copied out of an index carries but a root entry should not. */
export function plainDescriptor(d: Descriptor): Descriptor {
  const out: Descriptor = { mediaType: d.mediaType, digest: d.digest, size: d.size };
  if (d.artifactType !== undefined) out.artifactType = d.artifactType;
  return out;
}
