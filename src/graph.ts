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
  const go = async (d: Descriptor, depth: number, read?: Promise<ParsedDocument>): Promise<void> => {
    if (depth > MAX_INDEX_DEPTH) {
      throw new FerryError('TOO_LARGE', `index nesting below ${root.digest} exceeds limit of ${MAX_INDEX_DEPTH} levels`);
    }
    let doc;
    try {
      doc = await (read ?? readDocument(src, d, o));
    } catch (e) {
      if (!visit.onMissing || !isFerryError(e, 'NOT_FOUND')) throw e;
      visit.onMissing(d);
      return;
    }
    const node: GraphNode = { descriptor: d, doc, depth };
    await visit.onDocument?.(node);
    if (doc.kind === 'index') {
      const children = visit.choose ? visit.choose(node) : doc.index.manifests;
      const ahead = src.sequential || depth + 1 > MAX_INDEX_DEPTH ? undefined : readAhead(src, children, o);
      try {
        for (const [i, c] of children.entries()) {
          if (isManifestLike(c.mediaType)) await go(c, depth + 1, ahead?.take(i));
          else await visit.onBlob?.(c, node);
        }
      } finally {
        ahead?.stop();
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

/** Child manifests of one index read at once (a 6-platform index cost 6 round trips in a row). */
const PREFETCH = 8;

/**
 * Reads an index's child manifests ahead of the walk, which visits them in order: taking child i
 * starts the reads of the next PREFETCH - 1, so a 6-platform index waits one round trip, not six,
 * while at most PREFETCH documents are read and not yet visited (a manifest may be 4 MiB), and
 * nothing more is asked once the walk stops (a failure, a missing manifest).
 */
function readAhead(src: Source, children: Descriptor[], o: FetchOptions): { take(i: number): Promise<ParsedDocument> | undefined; stop(): void } {
  const started = new Map<number, Promise<ParsedDocument>>();
  let next = 0;
  let stopped = false;
  return {
    take(i) {
      for (next = Math.max(next, i); !stopped && next < Math.min(children.length, i + PREFETCH); next++) {
        const c = children[next]!;
        if (!isManifestLike(c.mediaType)) continue;
        const read = readDocument(src, c, o);
        // Settled by the walk when it gets there; it may stop first.
        read.catch(() => {});
        started.set(next, read);
      }
      const read = started.get(i);
      started.delete(i);
      return read;
    },
    stop() {
      stopped = true;
      started.clear();
    },
  };
}
