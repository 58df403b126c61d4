import { createHash } from 'node:crypto';
import { FerryError } from '../errors.js';

export type Digest = `sha256:${string}` | `sha512:${string}`;
export type Algorithm = 'sha256' | 'sha512';

const GRAMMAR = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;
const ENCODED: Record<Algorithm, RegExp> = {
  sha256: /^[a-f0-9]{64}$/,
  sha512: /^[a-f0-9]{128}$/,
};

/**
 * Validates a digest before it is used anywhere (path, URL, comparison). Uppercase hex is refused,
 * never "fixed": the digest names exact bytes and a changed spelling is a different name.
 */
export function parseDigest(value: unknown, where?: string): Digest {
  const at = where ? ` in ${where}` : '';
  if (typeof value !== 'string') throw new FerryError('INVALID_DIGEST', `invalid digest${at}: expected a string`);
  const shown = JSON.stringify(value.length > 150 ? value.slice(0, 150) + '…' : value);
  if (!GRAMMAR.test(value)) throw new FerryError('INVALID_DIGEST', `invalid digest ${shown}${at}`);
  const i = value.indexOf(':');
  const alg = value.slice(0, i);
  const enc = value.slice(i + 1);
  if (alg !== 'sha256' && alg !== 'sha512') {
    throw new FerryError('INVALID_DIGEST', `invalid digest ${shown}${at}: unsupported algorithm "${alg}" (ferry verifies sha256 and sha512)`);
  }
  if (!ENCODED[alg].test(enc)) {
    throw new FerryError('INVALID_DIGEST', `invalid digest ${shown}${at}: ${alg} needs ${alg === 'sha256' ? 64 : 128} lowercase hex characters`);
  }
  return value as Digest;
}

export function isDigest(value: unknown): value is Digest {
  try {
    parseDigest(value);
    return true;
  } catch {
    return false;
  }
}

export function algorithmOf(d: Digest): Algorithm {
  return d.slice(0, d.indexOf(':')) as Algorithm;
}

export function encodedOf(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

/** The 12-character short form docker prints. */
export function shortDigest(d: Digest): string {
  return encodedOf(d).slice(0, 12);
}

export function digestOf(data: Uint8Array | string, alg: Algorithm = 'sha256'): Digest {
  return `${alg}:${createHash(alg).update(data).digest('hex')}` as Digest;
}

export const EMPTY_JSON_DIGEST = 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a' as Digest;
