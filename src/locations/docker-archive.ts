import { FerryError } from '../errors.js';
import { storeTagName } from '../store.js';
import { openArchiveSink, openArchiveSource } from './oci-archive.js';
import type { Transport } from './transport.js';

/** `FILE[:NAME:TAG]`: the path ends at the first ':' (as skopeo reads docker-archive references). */
function split(rest: string): { path: string; ref?: string } {
  if (rest === '') throw new FerryError('USAGE', 'location needs a path: docker-archive:FILE[:NAME:TAG]');
  const i = rest.indexOf(':');
  if (i < 0) return { path: rest };
  const ref = rest.slice(i + 1);
  if (ref === '') throw new FerryError('USAGE', `docker-archive:${rest} ends with ':' but names no image`);
  return { path: rest.slice(0, i), ref };
}

/**
 * `docker-archive:FILE[:NAME:TAG]` — a `docker save` tarball. Written in ferry's dual format: an
 * OCI layout that docker load also reads; read in every docker-save generation.
 */
export const dockerArchiveTransport: Transport = {
  prefix: 'docker-archive:',
  describe: 'docker-archive:FILE[:NAME:TAG]  a docker save tarball (read: every generation; written: also an OCI layout)',
  async openSource(rest, ctx) {
    const { path, ref } = split(rest);
    return openArchiveSource(path, ref, `docker-archive:${path}:NAME:TAG`, ctx.signal);
  },
  async openSink(rest, ctx) {
    const { path, ref } = split(rest);
    const name = ref ? storeTagName(ref) : undefined;
    if (ref && !name) throw new FerryError('USAGE', `docker-archive:${rest}: name the image as NAME:TAG (docker load refuses digests)`);
    return openArchiveSink(path, 'docker', (src) => name ?? src, ctx.signal);
  },
};
