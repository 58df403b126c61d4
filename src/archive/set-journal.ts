import { readFile, rename, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FerryError } from '../errors.js';
import { publishBytes, syncDir } from '../blob/publish.js';
import { readVolumeHeader } from './scan.js';
import { existingVolumes } from './volumes.js';

/**
 * Replacing a volume set in place, for a destination written again and again (sync). Several files
 * cannot be renamed at once, so the switch is journalled:
 *
 *  1. the new volumes are written as temp files beside the set and fsynced (VolumeWriter);
 *  2. a journal (`.NAME.tar.ferry-volumes`) naming each temp file and the volume it becomes is
 *     written atomically (temp, fsync, rename, fsync of the directory);
 *  3. each temp file is renamed over its volume; the directory is fsynced;
 *  4. volumes of the old set the new one does not replace (a larger old set's last ones) are
 *     removed, last first; the directory is fsynced;
 *  5. the journal is removed.
 *
 * A crash before 2 leaves the old set whole (and dead temp files, removed when these names are
 * next written). From 2 until 5 the files may mix volumes of the old and the new set; every volume
 * names its set, so verify and load refuse such a mix, and the next sync completes the journal
 * (3 to 5) before it reads anything, leaving the new set whole. After 5: the new set.
 */
interface SetJournal {
  ferryVolumeJournal: 1;
  /** The new set's id (each volume's header names it). */
  set: string;
  /** Temp file -> volume, names in the set's directory. Empty: the set is being removed. */
  renames: Array<{ from: string; to: string }>;
}

export function journalPath(base: string): string {
  return join(dirname(base), `.${basename(base)}.ferry-volumes`);
}

/** Puts a finished set (its volumes still temp files) in the place of whatever set `base` has now. */
export async function replaceSet(base: string, set: string, files: Array<{ temp: string; dest: string }>): Promise<void> {
  const journal: SetJournal = { ferryVolumeJournal: 1, set, renames: files.map((f) => ({ from: basename(f.temp), to: basename(f.dest) })) };
  try {
    await publishBytes(journalPath(base), JSON.stringify(journal), { syncDir: true });
  } catch (e) {
    // Nothing was switched: the old set stands, and the new one is dropped.
    for (const f of files) await unlink(f.temp).catch(() => {});
    throw e;
  }
  await applyJournal(base, journal);
}

/** Removes the set `base` has, through the journal too: a crash midway is completed by the next run. */
export async function removeSet(base: string): Promise<void> {
  if ((await existingVolumes(base)).length === 0) return;
  const journal: SetJournal = { ferryVolumeJournal: 1, set: '', renames: [] };
  await publishBytes(journalPath(base), JSON.stringify(journal), { syncDir: true });
  await applyJournal(base, journal);
}

/**
 * Completes a switch an interrupted run left (its journal is still there). Returns whether there
 * was one. To be called before the set is read, by the one run allowed to write it.
 */
export async function completeInterruptedSwitch(base: string): Promise<boolean> {
  const path = journalPath(base);
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw e;
  }
  let journal: SetJournal;
  try {
    journal = JSON.parse(text) as SetJournal;
  } catch {
    // Written atomically: a torn journal is not ours.
    throw badJournal(path, 'it is not valid JSON');
  }
  const names = Array.isArray(journal?.renames) ? journal.renames : undefined;
  if (journal?.ferryVolumeJournal !== 1 || typeof journal.set !== 'string' || !names?.every((r) => isName(r?.from) && isName(r?.to))) {
    throw badJournal(path, 'it is not a journal this ferry wrote');
  }
  await applyJournal(base, journal);
  return true;
}

const isName = (x: unknown): x is string => typeof x === 'string' && x !== '' && !x.includes('/') && x !== '.' && x !== '..';

function badJournal(path: string, why: string): FerryError {
  return new FerryError('INVALID_INPUT', `${path}: cannot complete the interrupted rewrite of the volume set: ${why}`, {
    hint: 'check the volumes with ferry verify; remove this file and the set, and sync again to write the set anew',
  });
}

/** Steps 3 to 5; each can be done again after a crash. */
async function applyJournal(base: string, j: SetJournal): Promise<void> {
  const dir = dirname(base);
  for (const r of j.renames) {
    const to = join(dir, r.to);
    try {
      await rename(join(dir, r.from), to);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      // Renamed before the crash: what is in place must then be the new set's volume.
      if ((await readVolumeHeader(to).catch(() => undefined))?.set !== j.set) {
        throw badJournal(journalPath(base), `neither ${r.from} nor a volume of the new set at ${r.to} is there`);
      }
    }
  }
  await syncDir(dir);
  const ours = new Set(j.renames.map((r) => r.to));
  const stale = (await existingVolumes(base)).filter((p) => !ours.has(basename(p)));
  // Last first: cut short, what stays is an old set without its last volumes, which verify names.
  for (const p of stale.reverse()) {
    await unlink(p).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') throw e;
    });
  }
  if (stale.length) await syncDir(dir);
  await unlink(journalPath(base));
  await syncDir(dir);
}
