import { ARCHIVE_SUFFIX } from '../blob/compression.js';
import { FerryError } from '../errors.js';
import { layoutTransport, storeTransport } from './layout-transport.js';
import { registryTransport } from './registry-transport.js';
import { ociArchiveTransport } from './oci-archive.js';
import { dockerArchiveTransport } from './docker-archive.js';
import type { OpenedSink, OpenedSource, LocationContext, Transport } from './transport.js';

export { locatePathRef, splitPathRef } from './transport.js';
export type { LocationContext, OpenedSink, OpenedSource, RegistrySettings, Transport } from './transport.js';

/** The transports, tried by prefix; a location with no known prefix is a store image name. */
const TRANSPORTS: Transport[] = [layoutTransport, registryTransport, ociArchiveTransport, dockerArchiveTransport];

const PLANNED = ['dir:', 'containers-storage:', 'docker-daemon:'];

/** What messages list as readable: every transport prefix, and store image names. */
const KNOWN = `${TRANSPORTS.map((x) => x.prefix).join(', ')} and store image names`;

/** A file-system path as people write one (`/…`, `./…`, `../…`, `~/…`, `.`, `..`): no image name starts so. */
export function isPathLike(text: string): boolean {
  return /^(\/|\.\.?(\/|$)|~\/)/.test(text);
}

export function transportFor(text: string): { transport: Transport; rest: string } {
  const t = TRANSPORTS.find((x) => text.startsWith(x.prefix));
  if (t) return { transport: t, rest: text.slice(t.prefix.length) };
  const later = PLANNED.find((p) => text.startsWith(p));
  if (later) throw new FerryError('USAGE', `the ${later.replace(/:\/*$/, '')} transport is not supported yet (supported: ${KNOWN})`);
  // No image name contains "://": this is a transport ferry does not know (http://, a typo).
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (scheme) {
    throw new FerryError('USAGE', `unknown location type ${scheme[1]}:// in "${text}" (ferry reads ${KNOWN})`, {
      hint: 'an image in a registry is docker://HOST/NAME[:TAG], with no http:// or https://',
    });
  }
  // A path, written without the transport that says what it is.
  if (isPathLike(text)) {
    const archive = ARCHIVE_SUFFIX.test(text);
    throw new FerryError('USAGE', `"${text}" is a path: say what it is (ferry reads ${KNOWN})`, {
      hint: archive ? `an archive is docker-archive:${text} (also docker-loadable) or oci-archive:${text}` : `a layout directory is oci:${text}`,
    });
  }
  return { transport: storeTransport, rest: text };
}

export function openSource(text: string, ctx: LocationContext): Promise<OpenedSource> {
  const { transport, rest } = transportFor(text);
  return transport.openSource(rest, ctx);
}

export function openSink(text: string, ctx: LocationContext): Promise<OpenedSink> {
  const { transport, rest } = transportFor(text);
  return transport.openSink(rest, ctx);
}
