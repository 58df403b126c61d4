import { FerryError } from '../errors.js';
import { archiveExists } from '../archive/patterns.js';
import { storeTagName } from '../store.js';
import { openArchiveSink, openArchiveSource } from './oci-archive.js';
import { locatePathRef, type Transport } from './transport.js';

/** `FILE[:NAME:TAG]`: the path is what exists on disk (usually up to the first ':', as skopeo reads it). */
async function split(rest: string): Promise<{ path: string; ref?: string }> {
  if (rest === '') throw new FerryError('USAGE', 'location needs a path: docker-archive:FILE[:NAME:TAG]');
  if (rest.endsWith(':')) throw new FerryError('USAGE', `docker-archive:${rest} ends with ':' but names no image`);
  return locatePathRef(rest, 'docker-archive:FILE[:NAME:TAG]', archiveExists);
}

/**
 * `docker-archive:FILE[:NAME:TAG]` — a `docker save` tarball. Written in ferry's dual format: an
 * OCI layout that docker load also reads; read in every docker-save generation, and from a volume
 * set named by a pattern (`app.*.tar`).
 */
export const dockerArchiveTransport: Transport = {
  prefix: 'docker-archive:',
  describe: 'docker-archive:FILE[:NAME:TAG]  a docker save tarball (read: every generation, or a volume set as NAME.*.tar; written: also an OCI layout)',
  async openSource(rest, ctx) {
    const { path, ref } = await split(rest);
    return openArchiveSource(path, ref, `docker-archive:${path}:NAME:TAG`, ctx.signal, 'docker-archive:');
  },
  async openSink(rest, ctx) {
    const { path, ref } = await split(rest);
    const name = ref ? storeTagName(ref) : undefined;
    if (ref && !name) throw new FerryError('USAGE', `docker-archive:${rest}: name the image as NAME:TAG (docker load refuses digests)`);
    return openArchiveSink(path, 'docker', (src) => name ?? src, ctx.signal);
  },
};
