import { createHash } from 'node:crypto';
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { publishBytes } from '../../blob/publish.js';
import { stateDir } from '../../util/state-dir.js';
import { mkdirs } from '../../util/mkdirs.js';

/**
 * Open chunked uploads, one small file per repository and blob, so that a push killed mid-blob
 * can continue the registry's upload session on the next run instead of starting over. The
 * Location URL carries the registry's signed upload state: files are private (0600).
 */
export interface UploadRecord {
  location: string;
  size: number;
}

function recordPath(repository: string, digest: string): string {
  const key = createHash('sha256').update(`${repository}@${digest}`).digest('hex');
  return join(stateDir(), 'uploads', `${key}.json`);
}

export async function loadUpload(repository: string, digest: string): Promise<UploadRecord | undefined> {
  try {
    const r = JSON.parse(await readFile(recordPath(repository, digest), 'utf8')) as Partial<UploadRecord>;
    return typeof r.location === 'string' && typeof r.size === 'number' ? { location: r.location, size: r.size } : undefined;
  } catch {
    return undefined;
  }
}

/** Best effort: a push never fails because its resume note could not be written. */
export async function saveUpload(repository: string, digest: string, r: UploadRecord): Promise<void> {
  const path = recordPath(repository, digest);
  try {
    await mkdirs(join(stateDir(), 'uploads'), 0o700);
    await publishBytes(path, JSON.stringify(r), { mode: 0o600 });
  } catch {
    // no state directory (read-only home): the upload simply cannot resume across runs
  }
}

export async function forgetUpload(repository: string, digest: string): Promise<void> {
  await unlink(recordPath(repository, digest)).catch(() => {});
}
