import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FerryError, toFerryError } from '../errors.js';
import { processAlive } from '../locations/lock.js';

/**
 * A private temporary directory in TMPDIR for spooled layers (`ferry-PURPOSE-PID-XXXXXX`);
 * failing, it names the variable to fix. Spools that killed runs left there are removed first:
 * a layer of gigabytes in /tmp after an OOM kill stayed until the machine's own cleanup.
 */
export async function spoolDirectory(purpose: string): Promise<string> {
  const base = tmpdir();
  await removeDeadSpools(base);
  try {
    return await mkdtemp(join(base, `ferry-${purpose}-${process.pid}-`));
  } catch (e) {
    const err = toFerryError(e);
    throw new FerryError(err.code, `cannot make a temporary directory in ${base} (TMPDIR): ${err.message}`, {
      cause: e,
      hint: 'set TMPDIR to a writable directory with room for the largest layer',
    });
  }
}

/** Spool directories of ferry processes that are gone, owned by this user. */
async function removeDeadSpools(base: string): Promise<void> {
  for (const name of await readdir(base).catch(() => [] as string[])) {
    const pid = Number(/^ferry-[a-z]+-(\d+)-[A-Za-z0-9]{6}$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || (await processAlive(pid))) continue;
    const path = join(base, name);
    const st = await lstat(path).catch(() => undefined);
    if (!st?.isDirectory() || (process.getuid !== undefined && st.uid !== process.getuid())) continue;
    await rm(path, { recursive: true, force: true }).catch(() => {});
  }
}
