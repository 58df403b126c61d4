import { readFile } from 'node:fs/promises';
import { dirname, isAbsolute, resolve } from 'node:path';
import { parse } from 'yaml';
import { FerryError } from '../errors.js';
import { parsePlatformSelection } from '../oci/platform.js';
import { tagFilter, type SyncJob } from './sync.js';
import { checkVolumeSize, parseSize } from '../archive/volumes.js';
import { namesArchive } from './archive-target.js';

/**
 * A sync configuration file (YAML or JSON):
 *
 *   destination: docker://mirror.internal:5000/mirror   # default for every repository (omit: the store)
 *   platform: linux/amd64,linux/arm64                    # default: all
 *   prune: true
 *   referrers: true
 *   repositories:
 *     - source: docker.io/library/alpine
 *       semver: ">=3.18"
 *     - source: ghcr.io/org/app
 *       include: ['^v\d+\.\d+']
 *       exclude: ['-rc']
 *       destination: oci:/backup/app
 *     - source: ghcr.io/org/db
 *       destination: /mnt/usb/db.tar
 *       volume-size: 4G                                  # db.001.tar, db.002.tar, … (an archive only)
 */
const JOB_KEYS = ['source', 'destination', 'include', 'exclude', 'semver', 'platform', 'prune', 'referrers', 'volume-size'];
const TOP_KEYS = ['destination', 'platform', 'prune', 'referrers', 'include', 'exclude', 'semver', 'volume-size', 'repositories'];

export async function loadSyncConfig(path: string): Promise<SyncJob[]> {
  let doc: unknown;
  try {
    // Merge keys (`<<: *defaults`) are how YAML shares settings between entries.
    doc = parse(await readFile(path, 'utf8'), { merge: true });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new FerryError('NOT_FOUND', `sync configuration ${path} does not exist`);
    // yaml's first line ends "at line 3, column 1:" before a snippet of the file; the place is enough.
    throw new FerryError('USAGE', `${path}: not valid YAML or JSON: ${(e as Error).message.split('\n')[0]!.replace(/:\s*$/, '')}`, {
      hint: 'see "ferry sync" in the README for the format',
    });
  }
  const bad = (what: string) => new FerryError('USAGE', `${path}: ${what}`, { hint: 'see "ferry sync" in the README for the format' });
  if (doc === null || doc === undefined) throw bad('the file is empty: expected a mapping with a "repositories" list');
  if (typeof doc !== 'object' || Array.isArray(doc)) throw bad('expected a mapping with a "repositories" list');
  const top = doc as Record<string, unknown>;
  for (const k of Object.keys(top)) if (!TOP_KEYS.includes(k)) throw bad(`unknown key "${k}"${suggest(k, TOP_KEYS)}`);
  if (!Array.isArray(top.repositories) || top.repositories.length === 0) throw bad('"repositories" must be a non-empty list');
  return top.repositories.map((entry, i) => {
    const where = `repositories[${i}]`;
    const e = (typeof entry === 'string' ? { source: entry } : entry) as Record<string, unknown>;
    if (!e || typeof e !== 'object') throw bad(`${where} must be a mapping or a repository name`);
    for (const k of Object.keys(e)) if (!JOB_KEYS.includes(k)) throw bad(`${where}: unknown key "${k}"${suggest(k, JOB_KEYS)}`);
    const pick = (k: string) => (e[k] !== undefined ? e[k] : top[k]);
    // A default from the top of the file is named as such, not as a key of this entry.
    const at = (k: string) => (e[k] !== undefined ? `${where}.${k}` : `the top-level "${k}"`);
    const str = (k: string) => {
      const v = pick(k);
      if (v !== undefined && typeof v !== 'string') throw bad(`${at(k)} must be a string`);
      return v as string | undefined;
    };
    const list = (k: string) => {
      const v = pick(k);
      if (v === undefined) return undefined;
      const arr = Array.isArray(v) ? v : [v];
      if (!arr.every((x) => typeof x === 'string')) throw bad(`${at(k)} must be a list of strings`);
      return arr as string[];
    };
    const bool = (k: string) => {
      const v = pick(k);
      if (v !== undefined && typeof v !== 'boolean') {
        const yamlOne = typeof v === 'string' && /^(yes|no|on|off|y|n)$/i.test(v) ? ` (YAML 1.2 reads ${v} as text)` : '';
        throw bad(`${at(k)} must be true or false, not ${JSON.stringify(v)}${yamlOne}`);
      }
      return v as boolean | undefined;
    };
    const source = str('source');
    if (!source) throw bad(`${where} needs a "source"`);
    const platform = str('platform');
    const platformsAt = (text: string) => {
      try {
        return parsePlatformSelection(text);
      } catch (e) {
        throw bad(`${at('platform')}: ${(e as Error).message}`);
      }
    };
    const volumeSize = () => {
      const v = pick('volume-size');
      if (v === undefined) return undefined;
      if (typeof v !== 'string' && !(typeof v === 'number' && Number.isSafeInteger(v))) throw bad(`${at('volume-size')} must be a size such as 4G, or a number of bytes`);
      const dest = str('destination');
      if (!dest || !namesArchive(dest)) {
        throw bad(`${at('volume-size')} writes an archive as volumes, but ${dest ? `the destination "${dest}" is not an archive` : `${where} has no destination (the store is not an archive)`}`);
      }
      try {
        const size = typeof v === 'number' ? v : parseSize(v);
        checkVolumeSize(size);
        return size;
      } catch (e) {
        throw bad(`${at('volume-size')}: ${(e as Error).message}`);
      }
    };
    const filters = { include: list('include'), exclude: list('exclude'), semver: str('semver') };
    // Checked here, so that a mistake is named by its place in the file, not as a flag.
    tagFilter(filters, (field, problem) => bad(`${at(field)}: ${field === 'semver' ? problem : `invalid ${problem}`}`));
    return {
      source,
      destination: relativeTo(dirname(path), str('destination')),
      ...filters,
      platforms: platform ? platformsAt(platform) : undefined,
      prune: bool('prune'),
      referrers: bool('referrers'),
      volumeSize: volumeSize(),
    };
  });
}

/**
 * A relative path in a destination is taken from the file's directory, not from wherever the
 * command runs (a cron job's working directory is seldom the file's).
 */
function relativeTo(dir: string, dest: string | undefined): string | undefined {
  // Only what names a path: anything else is refused later as written.
  if (!dest || !(dest.startsWith('oci:') || namesArchive(dest))) return dest;
  const prefix = /^(oci|oci-archive|docker-archive):/.exec(dest)?.[0] ?? '';
  const rest = dest.slice(prefix.length);
  return rest && !isAbsolute(rest) ? prefix + resolve(dir, rest) : dest;
}

/** ` (did you mean "platform"?)` for a key one or two letters off a known one. */
function suggest(key: string, known: string[]): string {
  const near = known.find((k) => editDistance(key.toLowerCase(), k) <= 2);
  return near ? ` (did you mean "${near}"?)` : '';
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}
