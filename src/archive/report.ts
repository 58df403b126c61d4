import { FerryError, type ErrorCode } from '../errors.js';
import { warn } from '../log.js';
import type { Digest } from '../oci/digest.js';

export type ArchiveProblemKind = 'missing' | 'size' | 'digest' | 'diff_id' | 'invalid' | 'inconsistent' | 'volume';

export interface ArchiveProblem {
  kind: ArchiveProblemKind;
  /** Exit code class: 3 (invalid input) or 4 (integrity). */
  code: ErrorCode;
  message: string;
  digest?: Digest;
  path?: string;
  /** The volume of a set the problem is in, by its number. */
  volume?: number;
}

/**
 * Where archive problems go. Loading stops at the first one (it becomes the error); verifying
 * collects them all. Notes are things worth saying that do not make the archive wrong.
 */
export class Reporter {
  readonly problems: ArchiveProblem[] = [];
  readonly notes: string[] = [];

  constructor(readonly mode: 'throw' | 'record') {}

  problem(kind: ArchiveProblemKind, code: ErrorCode, message: string, extra: { digest?: Digest; path?: string; volume?: number; hint?: string; cause?: unknown } = {}): void {
    if (this.mode === 'throw') throw new FerryError(code, message, { hint: extra.hint, cause: extra.cause });
    const { digest, path, volume } = extra;
    this.problems.push({ kind, code, message, ...(digest ? { digest } : {}), ...(path ? { path } : {}), ...(volume ? { volume } : {}) });
  }

  /** Records a FerryError as a problem (or rethrows it). */
  error(e: unknown, kind: ArchiveProblemKind, extra: { digest?: Digest; path?: string } = {}): void {
    if (this.mode === 'throw' || !(e instanceof FerryError)) throw e;
    this.problems.push({ kind, code: e.code, message: e.message, ...extra });
  }

  /**
   * Two descriptions of one archive that disagree (index.json vs manifest.json) where one of them
   * is consistent: loading goes on with a warning; verify lists it as a problem.
   */
  inconsistency(message: string): void {
    if (this.mode === 'throw') warn(message);
    else this.problems.push({ kind: 'inconsistent', code: 'INTEGRITY', message });
  }

  note(message: string): void {
    if (this.mode === 'throw') warn(message);
    else this.notes.push(message);
  }
}

/** The kind of problem a FerryError stands for. */
export function kindOf(e: { code: ErrorCode; message: string }): ArchiveProblemKind {
  if (/diff_id/.test(e.message)) return 'diff_id';
  if (/not in the archive|is missing/.test(e.message)) return 'missing';
  switch (e.code) {
    case 'DIGEST_MISMATCH':
    case 'INTEGRITY':
      return 'digest';
    case 'SIZE_MISMATCH':
      return 'size';
    case 'NOT_FOUND':
      return 'missing';
    default:
      return 'invalid';
  }
}
