import { FerryError } from '../errors.js';
import { display } from './tar-format.js';

/** Longest cleaned path accepted (Linux PATH_MAX); a longer one cannot be extracted anyway. */
export const MAX_PATH_BYTES = 4096;
/** Deepest path accepted, in components. */
export const MAX_DEPTH = 1024;

export const WHITEOUT_PREFIX = '.wh.';
export const OPAQUE_MARKER = '.wh..wh..opq';
const AUFS_PREFIX = '.wh..wh.';

export type Classified =
  | { kind: 'entry'; parts: string[] }
  | { kind: 'whiteout'; dir: string[]; target: string }
  | { kind: 'opaque'; dir: string[] }
  /** AUFS metadata (.wh..wh.plnk and the like): dropped with everything under it. */
  | { kind: 'aufs' };

const invalid = (m: string, hint?: string) => new FerryError('INVALID_INPUT', m, { hint });

/**
 * POSIX-cleans a path into components: `.` and empty parts vanish, `..` removes the previous
 * part. Returns undefined when `..` would climb above the start.
 */
export function cleanParts(path: string): string[] | undefined {
  const out: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') {
      if (out.length === 0) return undefined;
      out.pop();
    } else out.push(p);
  }
  return out;
}

function checkLimits(parts: string[], raw: string, where: string): void {
  if (parts.length > MAX_DEPTH) {
    throw new FerryError('TOO_LARGE', `${where}: entry ${display(raw)} is ${parts.length} directories deep, exceeds limit of ${MAX_DEPTH}`);
  }
  let bytes = parts.length - 1;
  for (const p of parts) bytes += p.length;
  if (bytes > MAX_PATH_BYTES) {
    throw new FerryError('TOO_LARGE', `${where}: entry path of ${bytes} bytes exceeds limit of ${MAX_PATH_BYTES} bytes (${display(raw.slice(0, 80))}…)`);
  }
}

/**
 * Validates a layer entry's name and says what it is: a path to create, a whiteout, an opaque
 * marker or AUFS metadata. Absolute names and names that climb out of the root are refused
 * (catalogue A4), as are malformed whiteouts (A9).
 */
export function classify(raw: string, where: string): Classified {
  if (raw.length > MAX_PATH_BYTES * 2) {
    throw new FerryError('TOO_LARGE', `${where}: entry name of ${raw.length} bytes exceeds limit of ${MAX_PATH_BYTES} bytes (${display(raw.slice(0, 80))}…)`);
  }
  // Fast path, the common case: relative, no ".", "..", empty or whiteout components.
  if (raw.charCodeAt(0) !== 0x2f) {
    const parts = raw.split('/');
    if (parts.length > 1 && parts[parts.length - 1] === '') parts.pop();
    let simple = true;
    for (const p of parts) {
      if (p === '' || p === '.' || p === '..' || p.startsWith(WHITEOUT_PREFIX)) {
        simple = false;
        break;
      }
    }
    if (simple) {
      checkLimits(parts, raw, where);
      return { kind: 'entry', parts };
    }
  }
  const trimmed = raw.replace(/\/+$/, '');
  const rawBase = trimmed.slice(trimmed.lastIndexOf('/') + 1);
  const isWhiteout = rawBase.startsWith(WHITEOUT_PREFIX);
  if (raw.startsWith('/')) {
    if (isWhiteout) throw invalid(`${where}: invalid whiteout ${display(raw)}: absolute path`);
    throw invalid(`${where}: entry ${display(raw)} has an absolute path`, 'layer entries must be relative to the image root; this layer is malformed or malicious');
  }
  const parts = cleanParts(raw);
  if (!parts) {
    if (isWhiteout) throw invalid(`${where}: invalid whiteout ${display(raw)}: outside the root`);
    throw invalid(`${where}: entry ${display(raw)} escapes the root ("..")`, 'this layer is malformed or malicious');
  }
  checkLimits(parts, raw, where);
  for (let i = 0; i < parts.length - 1; i++) {
    const p = parts[i]!;
    if (p.startsWith(AUFS_PREFIX)) return { kind: 'aufs' };
    if (p.startsWith(WHITEOUT_PREFIX)) throw invalid(`${where}: invalid whiteout ${display(raw)}: a whiteout cannot have children`);
  }
  const base = parts[parts.length - 1];
  if (base === undefined || !base.startsWith(WHITEOUT_PREFIX)) {
    if (isWhiteout) throw invalid(`${where}: invalid whiteout ${display(raw)}`);
    return { kind: 'entry', parts };
  }
  const dir = parts.slice(0, -1);
  if (base === OPAQUE_MARKER) return { kind: 'opaque', dir };
  if (base.startsWith(AUFS_PREFIX)) return { kind: 'aufs' };
  const target = base.slice(WHITEOUT_PREFIX.length);
  if (target === '' || target === '.' || target === '..') {
    throw invalid(`${where}: invalid whiteout ${display(raw)}: it names ${target === '' ? 'nothing' : `"${target}"`}`);
  }
  return { kind: 'whiteout', dir, target };
}

/**
 * A hardlink target: absolute targets are resolved inside the root (as moby/go-archive ≥ 0.3.3
 * does); one that climbs out is refused (catalogue A7).
 */
export function linkTargetParts(linkname: string, entry: string, where: string): string[] {
  const parts = cleanParts(linkname);
  if (!parts) {
    throw invalid(`${where}: hardlink ${display(entry)} points outside the root (${display(linkname)})`, 'this layer is malformed or malicious');
  }
  if (parts.length === 0) throw invalid(`${where}: hardlink ${display(entry)} points at the root directory`);
  checkLimits(parts, linkname, where);
  return parts;
}

export function joinParts(parts: string[]): string {
  return parts.join('/');
}
