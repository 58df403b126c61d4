import type { Writable } from 'node:stream';
import { FerryError } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { extractPlan } from './extract.js';
import { outMode, scan, streamCarriers, type FlattenOptions, type Scanned } from './flatten.js';
import { outputCompression } from '../blob/compression.js';
import { Batcher, openFileOutput, openStreamOutput, type OutputCompression, type TarOutput } from './output.js';
import { contentPadding, encodeEntry, END_OF_ARCHIVE, type OutEntry } from './tar-writer.js';
import type { Meta, Node } from './tree.js';
import { explainDiskFull } from '../util/space.js';

export type ExportOptions = FlattenOptions;
export type { ExportEvent } from './flatten.js';

export interface ExportTarOptions extends ExportOptions {
  /** A file path, '-' for stdout, or an open stream. */
  output: string | Writable;
  /** Default: from the file suffix (.tar.gz, .tar.zst), plain for streams. */
  compression?: OutputCompression;
  /** Replace an existing output file. */
  force?: boolean;
}

export interface ExportDirOptions extends ExportOptions {
  dir: string;
  /** Create device nodes (root only) and FIFOs instead of skipping them. */
  devices?: boolean;
}

export interface ExportReport {
  image: string;
  digest: Digest;
  platform: string;
  layers: number;
  /** Entries in the result (directories, files, links, ...). */
  entries: number;
  /** Content bytes of regular files. */
  bytes: number;
  output: string;
}

function outEntry(path: string, kind: OutEntry['type'], meta: Meta, noSetuid: boolean | undefined, extra: Partial<OutEntry> = {}): OutEntry {
  const e: OutEntry = {
    name: path,
    type: kind,
    mode: outMode(meta, noSetuid),
    uid: meta.uid,
    gid: meta.gid,
    size: 0,
    mtime: meta.mtime,
    uname: meta.uname,
    gname: meta.gname,
    ...extra,
  };
  if (meta.mtimePax !== undefined) e.mtimePax = meta.mtimePax;
  if (meta.xattrs) e.xattrs = meta.xattrs;
  return e;
}

export function nodeEntry(path: string, node: Node, noSetuid: boolean | undefined): OutEntry {
  switch (node.kind) {
    case 'symlink':
      return outEntry(path, 'symlink', node.meta, noSetuid, { linkname: node.linkname });
    case 'char':
    case 'block':
      return outEntry(path, node.kind, node.meta, noSetuid, { devmajor: node.devmajor, devminor: node.devminor });
    case 'dir':
    case 'fifo':
      return outEntry(path, node.kind, node.meta, noSetuid);
    case 'file':
      throw new Error('regular files are written from their layer');
  }
}

/**
 * Flattens an image into one tar: the image's layers applied in order (whiteouts, opaque
 * directories, replacements, hardlinks kept correct), no whiteouts in the output, every path
 * once. Directories, symlinks, devices and FIFOs come first (parents before children), then the
 * regular files layer by layer as their content streams past; a file's extra hardlinks follow
 * it. Memory holds metadata only.
 */
export async function exportImage(o: ExportTarOptions): Promise<ExportReport> {
  const compression = typeof o.output === 'string' ? outputCompression(o.output, o.compression) : (o.compression ?? 'none');
  const scanned = await scan(o);
  const target = typeof o.output === 'string' ? o.output : '(stream)';
  let out: TarOutput | undefined;
  try {
    const toStdout = o.output === '-';
    if (typeof o.output !== 'string') out = openStreamOutput(o.output, compression);
    else if (toStdout) out = openStreamOutput(process.stdout, compression);
    else out = await openFileOutput(o.output, compression, { force: o.force });
    const report = await writeTar(scanned, out.stream, o);
    await out.commit();
    return { ...report, output: toStdout ? '-' : target };
  } catch (e) {
    await out?.abort();
    const err = e as NodeJS.ErrnoException;
    if (err?.code === 'EPIPE' || err?.code === 'ERR_STREAM_DESTROYED') {
      throw new FerryError('IO', `${target === '-' ? 'stdout' : target}: the reader went away before the export finished (${err.code})`, { cause: e });
    }
    throw await explainDiskFull(e, { path: typeof o.output === 'string' && o.output !== '-' ? o.output : undefined });
  } finally {
    await scanned.cleanup();
  }
}

async function writeTar(s: Scanned, out: Writable, o: ExportTarOptions): Promise<Omit<ExportReport, 'output'>> {
  const { plan, tree, image } = s;
  let entries = 0;
  let bytes = 0;
  const batch = new Batcher(out);
  const put = (b: Buffer) => batch.put(b);
  if (tree.rootExplicit) {
    await put(encodeEntry(nodeEntry('', tree.root, o.noSetuid)));
    entries++;
  }
  for (const { path, node } of plan.meta) {
    o.signal?.throwIfAborted();
    await put(encodeEntry(nodeEntry(path, node, o.noSetuid)));
    entries++;
  }
  for (const layer of image.layers) {
    const carriers = plan.carriers[layer.index]!;
    if (carriers.size === 0) continue;
    await streamCarriers(
      s.source,
      layer,
      carriers,
      {
        start: (inode) => {
          entries++;
          bytes += inode.size;
          return put(encodeEntry(outEntry(inode.path!, 'file', inode.meta, o.noSetuid, { size: inode.size })));
        },
        data: (chunk) => put(chunk),
        end: async (inode) => {
          const pad = contentPadding(inode.size);
          if (pad) await put(pad);
          for (const p of inode.links ?? []) {
            entries++;
            await put(encodeEntry(outEntry(p, 'hardlink', inode.meta, o.noSetuid, { linkname: inode.path! })));
          }
        },
      },
      o.signal,
    );
    o.onEvent?.({ type: 'layer-written', index: layer.index, digest: layer.descriptor.digest });
  }
  await put(END_OF_ARCHIVE);
  await batch.flush();
  return { image: o.image, digest: image.manifest.digest, platform: image.platform, layers: image.layers.length, entries, bytes };
}

/**
 * Extracts the flattened image into `dir` (which must be new or empty). The whole tree is
 * built and checked first; nothing is written before every layer has been read and verified,
 * and no path written goes through a symlink (see extract.ts).
 */
export async function exportToDir(o: ExportDirOptions): Promise<ExportReport> {
  const scanned = await scan(o);
  try {
    const r = await extractPlan(scanned, o);
    return { image: o.image, digest: scanned.image.manifest.digest, platform: scanned.image.platform, layers: scanned.image.layers.length, ...r, output: o.dir };
  } finally {
    await scanned.cleanup();
  }
}
