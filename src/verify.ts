import { PARTIAL_PREFIX, TEMP_PREFIX } from './blob/temp-names.js';
import { createReadStream } from 'node:fs';
import { forEachLimited } from './util/limit.js';
import { streamed } from './util/memory.js';
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createHash } from 'node:crypto';
import { FerryError, toFerryError } from './errors.js';
import { decompressor, peek, sniff } from './blob/compression.js';
import { algorithmOf, isDigest, type Algorithm, type Digest } from './oci/digest.js';
import { isForeignLayer, isLayerType, isManifestLike } from './oci/mediatypes.js';
import { MAX_JSON_BYTES, parseConfig, parseManifestDocument, type Descriptor } from './oci/manifest.js';
import type { OciLayout } from './locations/layout.js';
import { hashLater, hashSink, readCapped } from './blob/verify.js';
import type { Source } from './types.js';

export type ProblemKind = 'missing' | 'size' | 'digest' | 'diff_id' | 'invalid' | 'unreadable';

export interface Problem {
  kind: ProblemKind;
  digest?: Digest;
  path?: string;
  message: string;
}

export interface VerifyReport {
  problems: Problem[];
  blobs: number;
  bytes: number;
  images: number;
}

interface Expectation {
  size: number;
  mediaType: string;
  diffId?: Digest;
  /** Only foreign layers: absent is not a problem. */
  optional?: boolean;
}

export interface VerifyOptions {
  /** Only these roots and what they reference; default: every entry of index.json and every blob file. */
  roots?: Descriptor[];
  signal?: AbortSignal;
}

/**
 * Checks a layout the slow, thorough way: re-hashes every blob, checks every size, checks the
 * diff_ids of layers against their uncompressed content and that the graph is complete. It
 * collects every problem instead of stopping at the first.
 */
export async function verifyLayout(layout: OciLayout, opts: VerifyOptions = {}): Promise<VerifyReport> {
  const problems: Problem[] = [];
  let roots = opts.roots;
  if (!roots) {
    try {
      if (!(await layout.hasIndexFile())) {
        problems.push({ kind: 'missing', path: join(layout.dir, 'index.json'), message: `${join(layout.dir, 'index.json')} is missing: the layout names no image, and gc would see every blob as unreferenced` });
      }
      roots = await layout.readIndex();
    } catch (e) {
      problems.push({ kind: 'invalid', path: join(layout.dir, 'index.json'), message: toFerryError(e).message });
      roots = [];
    }
  }
  const access: BlobAccess = {
    path: (d) => layout.blobPath(d),
    async open(d) {
      const path = layout.blobPath(d.digest);
      if (!(await stat(path).catch(() => undefined))) return undefined;
      return createReadStream(path, { highWaterMark: 1 << 20 });
    },
    // Every blob file, referenced or not, unless only some images are checked.
    list: opts.roots ? undefined : () => listBlobFiles(layout, problems),
  };
  return verifyGraph(access, roots, problems, opts.signal);
}

/**
 * Checks images in any Source (a registry) the same way: every blob of their graphs is fetched
 * and hashed, diff_ids included, and nothing is stored. Every problem is collected.
 */
export async function verifySource(src: Source, roots: Descriptor[], opts: { signal?: AbortSignal } = {}): Promise<VerifyReport> {
  const access: BlobAccess = {
    path: () => undefined,
    async open(d) {
      try {
        return await src.fetch(d, { signal: opts.signal });
      } catch (e) {
        if (toFerryError(e).code === 'NOT_FOUND') return undefined;
        throw e;
      }
    },
  };
  return verifyGraph(access, roots, [], opts.signal);
}

/** How verification reads blobs: a layout's files, or a Source's fetches. */
interface BlobAccess {
  /** Where a blob lives, for messages. */
  path(d: Digest): string | undefined;
  /** Its bytes, or undefined when it is not there. */
  open(d: Descriptor): Promise<Readable | undefined>;
  /** Every blob present, where there is such a list (a layout's blob files). */
  list?(): Promise<Map<Digest, string>>;
}

async function verifyGraph(access: BlobAccess, roots: Descriptor[], problems: Problem[], signal: AbortSignal | undefined): Promise<VerifyReport> {
  const expected = new Map<Digest, Expectation>();
  const report: VerifyReport = { problems, blobs: 0, bytes: 0, images: roots.length };

  const expect = (d: Descriptor, diffId?: Digest) => {
    const prev = expected.get(d.digest);
    if (prev && prev.size !== d.size) {
      problems.push({ kind: 'size', digest: d.digest, message: `${d.digest} is referenced with sizes ${prev.size} and ${d.size}` });
    }
    // A foreign layer may be absent (copies leave it behind); when present it is checked like any blob.
    const optional = isForeignLayer(d) && (prev?.optional ?? true);
    expected.set(d.digest, { size: d.size, mediaType: d.mediaType, diffId: diffId ?? prev?.diffId, optional });
  };

  // Manifests and configs hashed while reading them, with their sizes.
  const small = new Map<Digest, SmallBlob>();
  const visited = new Set<Digest>();
  const visit = async (d: Descriptor, depth: number): Promise<void> => {
    signal?.throwIfAborted();
    expect(d);
    if (visited.has(d.digest) || depth > 16) return;
    visited.add(d.digest);
    const doc = await readSmall(access, d, problems, small);
    if (!doc) return;
    let parsed;
    try {
      parsed = parseManifestDocument(doc, { declared: d.mediaType, where: `manifest ${d.digest}` });
    } catch (e) {
      problems.push({ kind: 'invalid', digest: d.digest, message: toFerryError(e).message });
      return;
    }
    if (parsed.kind === 'index') {
      for (const c of parsed.index.manifests) {
        if (isManifestLike(c.mediaType)) await visit(c, depth + 1);
        else expect(c);
      }
      return;
    }
    const { config, layers } = parsed.manifest;
    expect(config);
    const configBytes = await readSmall(access, config, problems, small);
    let diffIds: Digest[] | undefined;
    // Artifacts (attestations, signatures) carry non-layer blobs that have no diff_ids.
    if (configBytes && isImageConfig(config.mediaType) && layers.every((l) => isLayerType(l.mediaType))) {
      try {
        diffIds = parseConfig(configBytes, `config ${config.digest}`).rootfs.diff_ids;
        if (diffIds.length !== layers.length) {
          problems.push({ kind: 'diff_id', digest: config.digest, message: `config ${config.digest} lists ${diffIds.length} diff_ids for ${layers.length} layers of manifest ${d.digest}` });
          diffIds = undefined;
        }
      } catch (e) {
        problems.push({ kind: 'invalid', digest: config.digest, message: toFerryError(e).message });
      }
    }
    layers.forEach((l, i) => expect(l, isLayerType(l.mediaType) ? diffIds?.[i] : undefined));
  };
  for (const r of roots) await visit(r, 0);

  const present = await access.list?.();
  const toCheck = present ? [...new Set([...present.keys(), ...expected.keys()])] : [...expected.keys()];
  const pending = toCheck.filter((d) => !small.has(d));
  await forEachLimited(pending, 2, async (digest) => {
    signal?.throwIfAborted();
    const exp = expected.get(digest);
    const path = access.path(digest);
    const d: Descriptor = { digest, size: exp?.size ?? 0, mediaType: exp?.mediaType ?? 'application/octet-stream' };
    const open = () => access.open(d);
    const first = present && !present.has(digest) ? undefined : await open().catch((e: unknown) => e as Error);
    if (first === undefined) {
      if (!exp?.optional) problems.push({ kind: 'missing', digest, message: `blob ${digest} is referenced but missing` });
      return;
    }
    const result = first instanceof Error ? first : await hashBlob(first, open, algorithmOf(digest), exp?.diffId !== undefined).catch((e: unknown) => e as Error);
    if (result instanceof Error) {
      // A registry says "not found" only once the body is asked for.
      if (toFerryError(result).code === 'NOT_FOUND') {
        if (!exp?.optional) problems.push({ kind: 'missing', digest, message: `blob ${digest} is referenced but missing` });
      } else problems.push({ kind: 'unreadable', digest, path, message: `blob ${digest}: ${toFerryError(result).message}` });
      return;
    }
    report.blobs++;
    report.bytes += result.size;
    // One fault, one problem: a blob cut short also hashes wrong, and is said to be cut short.
    if (exp && result.size !== exp.size) {
      problems.push({ kind: 'size', digest, path, message: `blob ${digest}: size ${result.size}, expected ${exp.size}${sizeAndHash(result.digest, digest)}` });
    } else if (result.digest !== digest) {
      problems.push({ kind: 'digest', digest, path, message: `digest mismatch for blob ${digest}: content hashes to ${result.digest}` });
    } else if (exp?.diffId && result.diffId !== exp.diffId) {
      problems.push({ kind: 'diff_id', digest, path, message: `layer ${digest}: uncompressed content hashes to ${result.diffId ?? '(not decodable)'}, config says diff_id ${exp.diffId}` });
    }
  });
  for (const { size } of small.values()) {
    report.blobs++;
    report.bytes += size;
  }
  return report;
}

/** What a size problem adds when the content also hashes wrong. */
function sizeAndHash(actual: string, digest: string): string {
  return actual === digest ? '' : ` (content hashes to ${actual})`;
}

function isImageConfig(mediaType: string): boolean {
  return mediaType === 'application/vnd.oci.image.config.v1+json' || mediaType === 'application/vnd.docker.container.image.v1+json';
}

/** A manifest or config read and checked: its size (0: missing) and, when its digest held, its bytes. */
interface SmallBlob {
  size: number;
  bytes?: Buffer;
}

/** Reads a manifest or config, recording problems instead of throwing. */
async function readSmall(access: BlobAccess, d: Descriptor, problems: Problem[], checked: Map<Digest, SmallBlob>): Promise<Buffer | undefined> {
  if (checked.has(d.digest)) return checked.get(d.digest)!.bytes;
  const path = access.path(d.digest);
  if (d.size > MAX_JSON_BYTES) return undefined; // hashed with the large blobs
  let bytes: Buffer;
  try {
    const body = await access.open(d);
    if (!body) {
      problems.push({ kind: 'missing', digest: d.digest, message: `blob ${d.digest} is referenced but missing` });
      checked.set(d.digest, { size: 0 });
      return undefined;
    }
    bytes = await readCapped(body, MAX_JSON_BYTES, `blob ${d.digest}`);
  } catch (e) {
    // Larger than any document may be, or unreadable: left to the large blobs' check, which says which.
    if (toFerryError(e).code === 'TOO_LARGE') return undefined;
    throw e;
  }
  const actual = `${algorithmOf(d.digest)}:${createHash(algorithmOf(d.digest)).update(bytes).digest('hex')}`;
  if (bytes.byteLength !== d.size) {
    problems.push({ kind: 'size', digest: d.digest, path, message: `blob ${d.digest}: size ${bytes.byteLength}, expected ${d.size}${sizeAndHash(actual, d.digest)}` });
  } else if (actual !== d.digest) {
    problems.push({ kind: 'digest', digest: d.digest, path, message: `digest mismatch for blob ${d.digest}: content hashes to ${actual}` });
  }
  if (actual !== d.digest) {
    checked.set(d.digest, { size: bytes.byteLength });
    return undefined;
  }
  checked.set(d.digest, { size: bytes.byteLength, bytes });
  return bytes;
}

async function listBlobFiles(layout: OciLayout, problems: Problem[]): Promise<Map<Digest, string>> {
  const out = new Map<Digest, string>();
  const root = join(layout.dir, 'blobs');
  for (const alg of await readdir(root).catch(() => [] as string[])) {
    for (const name of await readdir(join(root, alg)).catch(() => [] as string[])) {
      if (name.startsWith(TEMP_PREFIX) || name.startsWith(PARTIAL_PREFIX)) continue; // temp files, partial downloads
      const digest = `${alg}:${name}`;
      if (!isDigest(digest)) {
        problems.push({ kind: 'invalid', path: join(root, alg, name), message: `${join(root, alg, name)}: file name is not a valid digest` });
        continue;
      }
      out.set(digest, join(root, alg, name));
    }
  }
  return out;
}

/** Hashes a blob with its own algorithm; diff_ids are always sha256 of the uncompressed tar. */
async function hashBlob(file: Readable, reopen: () => Promise<Readable | undefined>, alg: Algorithm, withDiffId: boolean): Promise<{ digest: Digest; size: number; diffId?: Digest }> {
  const outer = createHash(alg);
  let size = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _e, cb) {
      hashLater(chunk.byteLength, () => {
        outer.update(chunk);
        size += chunk.byteLength;
        streamed(chunk.byteLength);
        cb(null, withDiffId ? chunk : undefined);
      });
    },
  });
  if (!withDiffId) {
    await pipeline(file, counter, new Writable({ write: (_c, _e, cb) => cb() }));
    return { digest: `${alg}:${outer.digest('hex')}` as Digest, size };
  }
  const { head, stream } = await peek(file, 6);
  const compression = sniff(head);
  if (compression === 'none' && alg === 'sha256') {
    // An uncompressed layer is its own diff_id: one hash serves both checks.
    await pipeline(stream, counter, new Writable({ write: (_c, _e, cb) => cb() }));
    const digest = `${alg}:${outer.digest('hex')}` as Digest;
    return { digest, size, diffId: digest };
  }
  const inner = createHash('sha256');
  let diffId: Digest | undefined;
  try {
    await pipeline(stream, counter, decompressor(compression, { chunk: 1 << 20 }), hashSink(inner, streamed));
    diffId = `sha256:${inner.digest('hex')}` as Digest;
  } catch (e) {
    if (e instanceof FerryError) throw e;
    // Undecodable content: hash the raw bytes alone so the digest check still reports.
    const again = await reopen();
    if (!again) throw new FerryError('NOT_FOUND', 'the blob went away while it was read');
    return hashBlob(again, reopen, alg, false);
  }
  return { digest: `${alg}:${outer.digest('hex')}` as Digest, size, diffId };
}

