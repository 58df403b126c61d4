import { FerryError } from '../errors.js';
import { ArchiveOutput, compressionForPath } from '../archive/output.js';
import { archiveExists, archiveFiles, isPattern, refuseOutputPattern, shellQuoted, volumePattern } from '../archive/patterns.js';
import { ArchiveSource } from '../archive/source.js';
import { ArchiveSink, SingleWriter, type ArchiveFormat } from '../archive/writer.js';
import { formatReference, tryParseReference } from '../oci/reference.js';
import type { TagName } from '../types.js';
import { locatePathRef, type OpenedSink, type OpenedSource, type Transport } from './transport.js';

function namedBy(n: TagName, ref: string): boolean {
  if (n.tag === ref || n.name === ref) return true;
  const parsed = tryParseReference(ref);
  return parsed?.tag !== undefined && n.name === formatReference({ domain: parsed.domain, path: parsed.path, tag: parsed.tag });
}

/**
 * Opens an archive file as a Source; without a reference, an archive of one image needs none. A
 * volume set is named by a pattern that matches all its volumes (`PREFIX/mnt/usb/app.*.tar`).
 */
export async function openArchiveSource(path: string, ref: string | undefined, example: string, signal?: AbortSignal, prefix = 'oci-archive:'): Promise<OpenedSource> {
  const files = await archiveFiles(path);
  const hint = (volume: string) => `give every volume of the set, as a pattern ferry expands: ${prefix}${shellQuoted(volumePattern(volume))}${ref ? `:${ref}` : ''}`;
  const source = await ArchiveSource.openFiles(files, { signal, hint, label: isPattern(path) ? path : undefined });
  try {
    if (ref) {
      const d = await source.resolve(ref);
      // Several names may share the digest: the one asked for, not the first in the index. A
      // docker-save entry is listed by position (@N), not by the digest its manifest gets here:
      // its name is the one asked for (it was lost, and the image saved or copied unnamed).
      const images = source.images();
      const names = images.filter((i) => i.ref === d.digest).flatMap((i) => i.names);
      const asked = images.filter((i) => i.from === 'manifest.json').flatMap((i) => i.names).find((n) => namedBy(n, ref));
      return { source, ref: d.digest, name: names.find((n) => namedBy(n, ref)) ?? names[0] ?? asked };
    }
    const images = source.images();
    if (images.length !== 1) {
      throw new FerryError('USAGE', `${path} holds ${images.length} images; name one as ${example}`, {
        hint: images.length ? `images: ${images.flatMap((i) => i.names.map((n) => n.name ?? n.tag)).slice(0, 8).join(', ')}` : undefined,
      });
    }
    const d = await source.resolve(images[0]!.ref);
    return { source, ref: d.digest, name: images[0]!.names[0] };
  } catch (e) {
    await source.close();
    throw e;
  }
}

/** Opens an archive file for writing (compressed as its suffix says; an existing file is refused). */
export async function openArchiveSink(path: string, format: ArchiveFormat, nameFor: OpenedSink['nameFor'], signal?: AbortSignal): Promise<OpenedSink> {
  refuseOutputPattern(path, `${format === 'oci' ? 'oci-archive' : 'docker-archive'}:${path}`, (plain) => `ferry save IMAGE… -o ${plain} --volume-size SIZE${format === 'oci' ? ' --format oci' : ''}`);
  const out = await ArchiveOutput.toFile(path, { compression: compressionForPath(path), noForceFlag: true });
  return { sink: new ArchiveSink(new SingleWriter(out), { format, signal }), nameFor };
}

/**
 * `oci-archive:FILE[:TAG]` — an OCI image layout in a tar file (optionally .gz or .zst). Read from,
 * FILE may be a pattern naming every volume of a set (`app.*.tar`).
 */
export const ociArchiveTransport: Transport = {
  prefix: 'oci-archive:',
  describe: 'oci-archive:FILE[:TAG]  an OCI layout in a tar file (.tar, .tar.gz, .tar.zst; a volume set as NAME.*.tar)',
  async openSource(rest, ctx) {
    const { path, ref } = await locatePathRef(rest, 'oci-archive:FILE[:TAG]', archiveExists);
    return openArchiveSource(path, ref, `oci-archive:${path}:TAG`, ctx.signal);
  },
  async openSink(rest, ctx) {
    const { path, ref } = await locatePathRef(rest, 'oci-archive:FILE[:TAG]');
    // skopeo's convention: the given TAG becomes org.opencontainers.image.ref.name.
    return openArchiveSink(path, 'oci', (src: TagName | undefined) => (ref ? { tag: ref } : src), ctx.signal);
  },
};
