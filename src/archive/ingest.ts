import { unlink } from 'node:fs/promises';
import { explainDiskFull } from '../util/space.js';
import { FerryError } from '../errors.js';
import { walk } from '../graph.js';
import { warn } from '../log.js';
import { OciLayout } from '../locations/layout.js';
import type { Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/manifest.js';
import { isManifestLike } from '../oci/mediatypes.js';
import type { Sink, TagName } from '../types.js';
import { buildGraph, type ArchiveRoot } from './graph.js';
import { Reporter } from './report.js';
import { orderInputs, scanArchive, targetFor, type IngestTarget, type ScanEvent } from './scan.js';

/** Blob progress as a copy reports it, archive bytes read, and each image once it is named. */
export type IngestEvent = ScanEvent | { type: 'image'; digest: Digest; names: TagName[] };

export interface IngestOptions {
  /** The archive: one file, `-` for stdin, or every volume of a set in any order. */
  inputs: string[];
  sink: Sink;
  /** The names to give an image, given those the archive has (default: the archive's). */
  rename?: (root: ArchiveRoot) => TagName[];
  /** The one name for the archive's only image (`load --tag`); an archive of several is refused. */
  tag?: TagName;
  signal?: AbortSignal;
  onEvent?: (e: IngestEvent) => void;
}

export interface IngestedImage {
  digest: Digest;
  mediaType: string;
  names: TagName[];
  /** Which description of the archive it came from. */
  from: 'index.json' | 'manifest.json';
}

export interface IngestReport {
  images: IngestedImage[];
  blobs: { stored: number; skipped: number; bytesStored: number };
}

/**
 * Reads an archive in one pass into a Sink: blobs as they come (verified), then the content held
 * in memory and the manifests built for docker-save images (children first), then every name in
 * one commit. Nothing is named unless the whole archive was read and verified; blobs written by a
 * failed run are removed from a layout (or, when another ferry process is writing to it, left
 * for `ferry gc`).
 */
export async function ingestArchive(o: IngestOptions): Promise<IngestReport> {
  const inputs = await orderInputs(o.inputs);
  const target = targetFor(o.sink);
  const report: IngestReport = { images: [], blobs: { stored: 0, skipped: 0, bytesStored: 0 } };
  try {
    const state = await scanArchive(inputs, {
      target,
      reporter: new Reporter('throw'),
      signal: o.signal,
      onEvent: (e) => {
        if (e.type === 'blob-skip') report.blobs.skipped++;
        else if (e.type === 'blob-done') {
          report.blobs.stored++;
          report.blobs.bytesStored += e.size;
        }
        o.onEvent?.(e);
      },
    });
    const graph = await buildGraph(state, target, new Reporter('throw'));
    // A load that loads nothing is a failed load (a nightly job would report success), as push --from refuses it.
    if (graph.roots.length === 0) throw new FerryError('INVALID_INPUT', `${state.where} holds no images; nothing was loaded`, { hint: `ferry verify ${state.where} says what it holds` });
    const distinct = new Set(graph.roots.map((r) => r.descriptor.digest));
    if (o.tag && distinct.size > 1) {
      throw new FerryError('USAGE', `--tag names one image, but ${state.where} holds ${distinct.size}: ${graph.roots.map((r) => r.label).join(', ')}`, {
        hint: 'load without --tag, then name them with ferry tag',
      });
    }
    // Small files (configs, manifests, small layers) were held in memory: counted as they land.
    for (const w of graph.writes) {
      o.signal?.throwIfAborted();
      const blob = { digest: w.descriptor.digest, size: w.descriptor.size };
      if (await target.has(w.descriptor)) {
        report.blobs.skipped++;
        o.onEvent?.({ type: 'blob-skip', ...blob });
        continue;
      }
      // Children come first in `writes`; a registry needs them stored before the manifest.
      if (target.ordered && isManifestLike(w.descriptor.mediaType)) await target.settle();
      o.onEvent?.({ type: 'blob-start', ...blob });
      await target.putBytes(w.descriptor, w.bytes, {
        signal: o.signal,
        check: true,
        done: () => {
          report.blobs.stored++;
          report.blobs.bytesStored += w.descriptor.size;
          o.onEvent?.({ type: 'blob-done', ...blob });
        },
      });
    }
    await target.settle();
    const tagged = new Set<Digest>();
    for (const root of graph.roots) {
      if (o.tag && tagged.has(root.descriptor.digest)) continue;
      tagged.add(root.descriptor.digest);
      const names = o.tag ? [o.tag] : o.rename ? o.rename(root) : root.names;
      if (names.length === 0) await o.sink.tag(root.descriptor, undefined);
      for (const n of names) await o.sink.tag(root.descriptor, n);
      report.images.push({ digest: root.descriptor.digest, mediaType: root.descriptor.mediaType, names, from: root.from });
    }
    o.signal?.throwIfAborted();
    await o.sink.commit();
    for (const i of report.images) o.onEvent?.({ type: 'image', digest: i.digest, names: i.names });
    if (o.sink instanceof OciLayout) await removeUnreferenced(o.sink, target, graph.roots.map((r) => r.descriptor));
    return report;
  } catch (e) {
    await target.settle().catch(() => {});
    if (o.sink instanceof OciLayout) await removeUnreferenced(o.sink, target, []).catch(() => {});
    throw e instanceof FerryError ? e : await explainDiskFull(e);
  }
}

/**
 * Deletes the blobs this run created that the layout's index does not reach (all of them after a
 * failure; stray legacy files after success). Skipped, with a note, while another ferry process
 * writes to the layout: it may be about to name one of them, and `ferry gc` spares such blobs.
 */
async function removeUnreferenced(layout: OciLayout, target: IngestTarget, roots: Descriptor[]): Promise<void> {
  if (target.created.size === 0) return;
  const reached = new Set<Digest>();
  const reach = async (list: Descriptor[]) => {
    for (const r of list) {
      reached.add(r.digest);
      await walk(layout, r, { onDocument: (n) => void reached.add(n.descriptor.digest), onBlob: (d) => void reached.add(d.digest), onMissing: () => {} }).catch(() => {});
    }
  };
  await reach(roots);
  if ([...target.created].every((d) => reached.has(d))) return;
  await layout.withIndexLock(async () => {
    await reach(await layout.readIndex());
    const stray = [...target.created].filter((d) => !reached.has(d));
    if (stray.length === 0) return;
    if ((await layout.liveWriters()).length > 0) {
      warn(`left ${stray.length} unreferenced blob(s) in ${layout.dir} because another ferry process is writing to it; \`ferry gc\` removes them`);
      return;
    }
    for (const d of stray) await unlink(layout.blobPath(d)).catch(() => {});
  });
}
