import { existsSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { destinationOf } from './blob/temp-names.js';

/**
 * One error class for everything ferry reports to a user. `code` is stable (scripts and tests
 * match on it); the exit code a CLI run ends with is derived from it in exitCodeFor, and only there.
 */
export type ErrorCode =
  | 'USAGE' // bad flags or arguments
  | 'NOT_FOUND' // an image, tag or file the user named does not exist
  | 'INVALID_REFERENCE'
  | 'INVALID_DIGEST'
  | 'INVALID_INPUT' // malformed or malicious document, archive or layout
  | 'TOO_LARGE' // a document or stream exceeds a limit
  | 'UNSUPPORTED' // e.g. schema1, unknown digest algorithm
  | 'DIGEST_MISMATCH'
  | 'SIZE_MISMATCH'
  | 'INTEGRITY' // verify found problems
  | 'AUTH'
  | 'NETWORK'
  | 'REFUSED' // the registry does not allow the operation (read-only, deletes turned off)
  | 'IO'
  | 'LOCKED'
  | 'ABORTED'
  | 'INTERNAL';

const EXIT: Record<ErrorCode, number> = {
  USAGE: 2,
  NOT_FOUND: 2,
  INVALID_REFERENCE: 2,
  INVALID_DIGEST: 3,
  INVALID_INPUT: 3,
  TOO_LARGE: 3,
  UNSUPPORTED: 3,
  DIGEST_MISMATCH: 4,
  SIZE_MISMATCH: 4,
  INTEGRITY: 4,
  AUTH: 5,
  NETWORK: 6,
  REFUSED: 6,
  IO: 7,
  LOCKED: 8,
  ABORTED: 130,
  INTERNAL: 1,
};

export interface FerryErrorOptions {
  /** What the user can do about it, shown after the message. */
  hint?: string;
  cause?: unknown;
  /** NETWORK errors: the host (host:port) that could not be reached at all (no HTTP answer). */
  unreachable?: string;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly unreachable?: string;
  constructor(code: ErrorCode, message: string, opts: FerryErrorOptions = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'FerryError';
    this.code = code;
    this.hint = opts.hint;
    if (opts.unreachable !== undefined) this.unreachable = opts.unreachable;
  }
}

/**
 * The host a connection-level failure (refused, reset, DNS, timeout) could not reach, looked for
 * along the cause chain; undefined for anything else, an HTTP error from a live registry included.
 */
export function unreachableHost(e: unknown): string | undefined {
  for (let c = e, depth = 0; c && typeof c === 'object' && depth < 8; c = (c as { cause?: unknown }).cause, depth++) {
    if (c instanceof FerryError && c.unreachable !== undefined) return c.unreachable;
  }
  return undefined;
}

/** `path` cannot be written because its directory does not exist. */
export function missingDirectory(path: string, cause?: unknown): FerryError {
  return new FerryError('IO', `cannot write ${path}: the directory ${dirname(path)} does not exist`, { cause, hint: 'create the directory first, or write somewhere else' });
}

export function isFerryError(e: unknown, code?: ErrorCode): e is FerryError {
  return e instanceof FerryError && (code === undefined || e.code === code);
}

const IO_CODES = new Set(['ENOSPC', 'EFBIG', 'EROFS', 'EACCES', 'EPERM', 'EDQUOT', 'EIO', 'EMFILE', 'ENFILE', 'EISDIR', 'ENOTDIR', 'EEXIST', 'EXDEV', 'ENOENT', 'ENAMETOOLONG']);

/** System calls whose EINVAL means the file name: not every EINVAL is one. */
const NAMING_CALLS = new Set(['open', 'mkdir', 'rename', 'link', 'symlink', 'copyfile']);

/** Connection-level failures (node and undici codes): the network or the server, not ferry. */
export const NETWORK_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ETIMEDOUT', 'EAI_AGAIN', 'ENETUNREACH', 'EHOSTUNREACH', 'ENOTFOUND',
  'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'UND_ERR_CLOSED',
]);

/** Turns whatever was thrown into a FerryError, so the CLI has one thing to print. */
export function toFerryError(e: unknown): FerryError {
  if (e instanceof FerryError) return e;
  const err = e as NodeJS.ErrnoException | undefined;
  if (err && typeof err === 'object') {
    if (err.name === 'AbortError' || err.code === 'ABORT_ERR') {
      return new FerryError('ABORTED', 'interrupted', { cause: e });
    }
    if (typeof err.code === 'string' && IO_CODES.has(err.code)) {
      const path = err.path === undefined ? undefined : destinationOf(err.path);
      if (err.code === 'ENOENT' && path !== undefined && path !== err.path) {
        // Creating the temp file beside the output failed: the output's directory is missing, or
        // is one where files cannot be made (/proc). One stat on the way out, not on a data path.
        const dir = dirname(path);
        return existsSync(dir)
          ? new FerryError('IO', `cannot write ${path}: no file can be created in ${dir}`, { cause: e, hint: 'write somewhere else' })
          : missingDirectory(path, e);
      }
      const where = path ? ` ${path}` : '';
      const hint =
        err.code === 'ENOSPC' ? 'free some space on that filesystem and run the same command again' :
        err.code === 'EFBIG' ? `that filesystem (or a ulimit) caps the size of one file (FAT32: 4 GiB): cut an archive into volumes with --volume-size 4G, or write to another filesystem` :
        err.code === 'EROFS' || err.code === 'EACCES' || err.code === 'EPERM' ? (path && fatNameHint(path)) ?? 'choose a writable location or fix its permissions' :
        undefined;
      return new FerryError('IO', `${err.code}:${where} ${describeErrno(err.code)}`.trim(), { cause: e, hint });
    }
    if (err.code === 'EINVAL' && typeof err.path === 'string' && NAMING_CALLS.has(err.syscall ?? '')) {
      // A name the filesystem will not hold (kernel FAT and exFAT: EINVAL).
      const path = destinationOf(err.path);
      return new FerryError('IO', `EINVAL: ${path} (the filesystem refuses this name)`, { cause: e, hint: fatNameHint(path) ?? 'choose another name or location' });
    }
    if (typeof err.code === 'string' && NETWORK_CODES.has(err.code)) {
      return new FerryError('NETWORK', `network failure: ${err.message} (${err.code})`, {
        cause: e,
        hint: 'check the link to the registry; on a slow link raise --timeout; the same command again resumes (complete blobs are kept)',
      });
    }
  }
  const message = err && typeof err.message === 'string' ? err.message : String(e);
  return new FerryError('INTERNAL', message, { cause: e });
}

/**
 * FAT and exFAT (USB sticks) refuse names with these characters (EINVAL, or EPERM through FUSE):
 * a name with one of them is the likelier cause than permissions.
 */
function fatNameHint(path: string): string | undefined {
  if (!/[:*?"<>|\\]/.test(basename(path))) return undefined;
  return 'FAT and exFAT (USB sticks) allow none of : * ? " < > | \\ in a file name: choose another name (or, elsewhere, fix the permissions)';
}

function describeErrno(code: string): string {
  switch (code) {
    case 'ENOSPC': return '(no space left on device)';
    case 'EFBIG': return '(file too large for this filesystem)';
    case 'EROFS': return '(read-only filesystem)';
    case 'EACCES': case 'EPERM': return '(permission denied)';
    case 'ENOENT': return '(no such file or directory)';
    case 'EDQUOT': return '(disk quota exceeded)';
    case 'EISDIR': return '(is a directory)';
    case 'ENOTDIR': return '(not a directory)';
    case 'EEXIST': return '(already exists)';
    case 'ENAMETOOLONG': return '(a name is too long for this filesystem)';
    default: return '';
  }
}

export function exitCodeFor(e: FerryError): number {
  return EXIT[e.code];
}
