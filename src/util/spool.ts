import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError, toFerryError } from '../errors.js';

/** A private temporary directory in TMPDIR for spooled layers; failing, it names the variable to fix. */
export async function spoolDirectory(purpose: string): Promise<string> {
  const base = tmpdir();
  try {
    return await mkdtemp(join(base, `ferry-${purpose}-`));
  } catch (e) {
    const err = toFerryError(e);
    throw new FerryError(err.code, `cannot make a temporary directory in ${base} (TMPDIR): ${err.message}`, {
      cause: e,
      hint: 'set TMPDIR to a writable directory with room for the largest layer',
    });
  }
}
