import { access, constants, readdir, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { FerryError, toFerryError } from './errors.js';
import { walk } from './graph.js';
import { isDigest, type Digest } from './oci/digest.js';
import { ANNOTATION_IMAGE_NAME, ANNOTATION_REF_NAME, type OciLayout } from './locations/layout.js';

export interface GcReport {
  removed: Array<{ digest: Digest; size: number }>;
  bytes: number;
  kept: number;
  /** Unreferenced blobs spared because another ferry process was writing when they appeared. */
  spared: number;
  temps: number;
  /** Partial downloads of dead runs deleted: their blob is complete, or no rerun came for a day. */
  partials: number;
  partialBytes: number;
  /** Partial downloads of dead runs kept for a rerun to continue, and when the last one expires. */
  partialsKept: number;
  partialKeptBytes: number;
  partialsKeptUntil?: string;
}

export function emptyGcReport(): GcReport {
  return { removed: [], bytes: 0, kept: 0, spared: 0, temps: 0, partials: 0, partialBytes: 0, partialsKept: 0, partialKeptBytes: 0 };
}

function nameOf(root: { annotations?: Record<string, string> }): string {
  const name = root.annotations?.[ANNOTATION_IMAGE_NAME] ?? root.annotations?.[ANNOTATION_REF_NAME];
  return name ? ` of ${name}` : '';
}

export interface GcOptions {
  dryRun?: boolean;
  /** Also delete partial downloads kept for resuming (of dead runs only). */
  partials?: boolean;
}

/**
 * Deletes blobs no index.json entry reaches. Refuses to run when a referenced document is missing
 * or cannot be read: without its children list, live layers would look unreferenced.
 */
export async function collectGarbage(layout: OciLayout, opts: GcOptions = {}): Promise<GcReport> {
  const report = emptyGcReport();
  if (!(await layout.hasIndexFile())) {
    throw new FerryError('INTEGRITY', `gc stopped: ${join(layout.dir, 'index.json')} is missing, so every blob would look unreferenced`, {
      hint: 'nothing was deleted; index.json lists the layout\'s images: restore it from a backup, or copy the images again into a new store',
    });
  }
  if (!opts.dryRun) report.temps = await layout.removeDeadTemps();
  const partials = await layout.removeStalePartials({ dryRun: opts.dryRun, all: opts.partials });
  report.partials = partials.count;
  report.partialBytes = partials.bytes;
  report.partialsKept = partials.kept;
  report.partialKeptBytes = partials.keptBytes;
  if (partials.keptUntil !== undefined) report.partialsKeptUntil = new Date(partials.keptUntil).toISOString();
  // A dry run deletes nothing: on a layout it cannot write (a stick mounted read-only) it looks
  // without the lock, which it could not take.
  const locked = opts.dryRun && !(await access(layout.dir, constants.W_OK).then(() => true, () => false))
    ? <T>(fn: () => Promise<T>) => fn()
    : <T>(fn: () => Promise<T>) => layout.withIndexLock(fn);
  await locked(async () => {
    const manifests = await layout.readIndex();
    const live = new Set<Digest>();
    const missing: string[] = [];
    for (const root of manifests) {
      try {
        await walk(layout, root, {
          onDocument: (n) => void live.add(n.descriptor.digest),
          onBlob: (d) => void live.add(d.digest),
          onMissing: (d) => void missing.push(`${d.digest}${d.digest === root.digest ? '' : ` (in ${root.digest})`}${nameOf(root)}`),
        });
      } catch (e) {
        const err = toFerryError(e);
        throw new FerryError('INTEGRITY', `gc stopped: cannot read the graph of ${root.digest}: ${err.message}`, {
          hint: 'run `ferry verify` to see what is damaged; nothing was deleted',
        });
      }
    }
    // The blobs below a missing manifest would look unreferenced, yet they are what a repair
    // (pulling or loading the image again) reuses; deleting them turns damage into loss.
    if (missing.length) {
      throw new FerryError('INTEGRITY', `gc stopped: ${missing.length} referenced manifest(s) missing from ${layout.dir}: ${missing.join('; ')}`, {
        hint: 'nothing was deleted; pull or load the image again to repair it, or remove it with `ferry rmi NAME`, then run gc again',
      });
    }
    const writers = await layout.liveWriters();
    const cutoff = writers.length ? Math.min(...writers) - 2000 : Infinity;
    const blobs = join(layout.dir, 'blobs');
    for (const alg of await readdir(blobs)) {
      for (const name of await readdir(join(blobs, alg))) {
        const digest = `${alg}:${name}`;
        if (!isDigest(digest)) continue;
        if (live.has(digest)) {
          report.kept++;
          continue;
        }
        const path = join(blobs, alg, name);
        const st = await stat(path);
        if (st.mtimeMs >= cutoff) {
          report.spared++;
          continue;
        }
        if (!opts.dryRun) await unlink(path);
        report.removed.push({ digest, size: st.size });
        report.bytes += st.size;
      }
    }
  });
  return report;
}
