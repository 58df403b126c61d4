import { archiveFiles, isPattern } from '../../archive/patterns.js';
import { open, stat } from 'node:fs/promises';
import { FerryError } from '../../errors.js';
import { ARCHIVE_SUFFIX, sniff } from '../../blob/compression.js';
import { humanSize, interrupt, out, printJson, type GlobalArgs } from '../context.js';

/** A regular file given by a path or named like an archive, or whose bytes are a tar (ustar magic), gzip or zstd. */
export async function isArchiveFile(path: string): Promise<boolean> {
  // A pattern naming volumes of a set (quoted, so the shell left it): verified as that set.
  if (isPattern(path) && ARCHIVE_SUFFIX.test(path) && (await archiveFiles(path).then((f) => f.length > 0, () => false))) return true;
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) return false;
  // A path to an existing file is an archive to check, whatever its bytes (a damaged one should be
  // reported as such, not as a missing image); a bare word may still be a store name.
  if (path.includes('/') || ARCHIVE_SUFFIX.test(path)) return true;
  const fh = await open(path, 'r');
  try {
    const head = Buffer.alloc(263);
    const { bytesRead } = await fh.read(head, 0, 263, 0);
    return sniff(head.subarray(0, bytesRead)) !== 'none' || head.toString('latin1', 257, 262) === 'ustar';
  } finally {
    await fh.close();
  }
}

/** `ferry verify FILE…` for archives: prints every problem; exit 4 (3 if only invalid input). */
export async function verifyArchiveFiles(args: GlobalArgs, files: string[]): Promise<void> {
  const { verifyArchives } = await import('../../archive/operations.js');
  const { defaultStoreDir } = await import('../../store.js');
  const { DELTA_HINT } = await import('../../archive/graph.js');
  const reports = await verifyArchives(files, { signal: interrupt.signal, storeDir: args.store ?? defaultStoreDir() });
  if (args.json) printJson(reports.map((r) => ({ ...r, ok: r.problems.length === 0 })));
  else {
    for (const r of reports) {
      for (const n of r.notes) out(`NOTE ${n}`);
      for (const p of r.problems) out(`PROBLEM ${p.kind}: ${p.message}`);
      out(`${r.target}: ${r.images} image(s), ${r.blobs} file(s), ${humanSize(r.bytes)} checked, ${r.problems.length} problem(s)`);
    }
  }
  const problems = reports.flatMap((r) => r.problems);
  if (problems.length) {
    const onlyInvalid = problems.every((p) => p.code === 'INVALID_INPUT' || p.code === 'INVALID_DIGEST' || p.code === 'TOO_LARGE' || p.code === 'UNSUPPORTED');
    // A delta whose only problems are blobs left out on purpose that the store lacks is not damaged.
    const onlyLeftOut = reports.every((r) => r.problems.length === 0 || (r.delta && r.problems.every((p) => p.kind === 'missing')));
    throw new FerryError(onlyInvalid ? 'INVALID_INPUT' : 'INTEGRITY', `verify found ${problems.length} problem(s) in ${reports.filter((r) => r.problems.length).map((r) => r.target).join(', ')}`, {
      hint: reports.some((r) => r.incomplete)
        ? 'give every volume of the set (ferry verify NAME.*.tar); a volume that is lost or damaged means writing the set again from its source'
        : onlyLeftOut ? DELTA_HINT : 'the archive must be written again from its source',
    });
  }
}
