import { FerryError, isFerryError } from './errors.js';
import { readVerified } from './blob/verify.js';
import { isForeignLayer, isManifestLike } from './oci/mediatypes.js';
import { MAX_JSON_BYTES, parseManifestDocument, type Descriptor, type ParsedDocument } from './oci/manifest.js';
import type { FetchOptions, Source } from './types.js';

/** Indexes nested deeper than this are refused rather than followed (catalogue A18). */
export const MAX_INDEX_DEPTH = 16;

/** Fetches, verifies and parses one manifest or index. */
export async function readDocument(src: Source, d: Descriptor, o: FetchOptions = {}): Promise<ParsedDocument> {
  if (d.size > MAX_JSON_BYTES) {
    throw new FerryError('TOO_LARGE', `manifest ${d.digest}: ${d.size} bytes exceeds limit of ${MAX_JSON_BYTES} bytes`);
  }
  const bytes = await readVerified(await src.fetch(d, o), d, `manifest ${d.digest}`);
  return parseManifestDocument(bytes, { declared: d.mediaType, where: `manifest ${d.digest}` });
}

export interface GraphNode {
  descriptor: Descriptor;
  doc: ParsedDocument;
  depth: number;
}

/**
 * Visits a root and everything below it, parents before children. `choose` may narrow an index's
 * children (platform selection); blobs are reported through `onBlob` once per visit.
 */
export async function walk(
  src: Source,
  root: Descriptor,
  visit: {
    onDocument?: (n: GraphNode) => void | Promise<void>;
    onBlob?: (d: Descriptor, parent: GraphNode) => void | Promise<void>;
    choose?: (n: GraphNode) => Descriptor[];
    /** When given, a missing manifest is reported here and its subtree skipped instead of failing. */
    onMissing?: (d: Descriptor) => void;
    /** When given, foreign layers (isForeignLayer) are reported here instead of through onBlob. */
    onForeign?: (d: Descriptor, parent: GraphNode) => void;
  },
  o: FetchOptions = {},
): Promise<void> {
  const go = async (d: Descriptor, depth: number): Promise<void> => {
    if (depth > MAX_INDEX_DEPTH) {
      throw new FerryError('TOO_LARGE', `index nesting below ${root.digest} exceeds limit of ${MAX_INDEX_DEPTH} levels`);
    }
    let doc;
    try {
      doc = await readDocument(src, d, o);
    } catch (e) {
      if (!visit.onMissing || !isFerryError(e, 'NOT_FOUND')) throw e;
      visit.onMissing(d);
      return;
    }
    const node: GraphNode = { descriptor: d, doc, depth };
    await visit.onDocument?.(node);
    if (doc.kind === 'index') {
      const children = visit.choose ? visit.choose(node) : doc.index.manifests;
      for (const c of children) {
        if (isManifestLike(c.mediaType)) await go(c, depth + 1);
        else await visit.onBlob?.(c, node);
      }
    } else {
      await visit.onBlob?.(doc.manifest.config, node);
      for (const l of doc.manifest.layers) {
        if (visit.onForeign && isForeignLayer(l)) visit.onForeign(l, node);
        else await visit.onBlob?.(l, node);
      }
    }
  };
  await go(root, 0);
}
