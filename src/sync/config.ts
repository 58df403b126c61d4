import { dirname, isAbsolute, resolve } from 'node:path';
import { isMap, isNode, isScalar, isSeq, LineCounter, parseDocument, type Document, type Node } from 'yaml';
import { FerryError } from '../errors.js';
import { readUserFile } from '../util/user-file.js';
import { parsePlatformSelection } from '../oci/platform.js';
import { parseRepository } from '../oci/reference.js';
import { tagFilter, type SyncJob } from './sync.js';
import { checkVolumeSize, parseSize } from '../archive/volumes.js';
import { namesArchive } from './archive-target.js';
import { refuseOutputPattern } from '../archive/patterns.js';

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
 *
 * Top-level keys starting `x-` are ignored (they hold anchors for `<<:` merge keys, as in Compose).
 */
const JOB_KEYS = ['source', 'destination', 'include', 'exclude', 'semver', 'platform', 'prune', 'referrers', 'volume-size'];
const TOP_KEYS = ['destination', 'platform', 'prune', 'referrers', 'include', 'exclude', 'semver', 'volume-size', 'repositories'];
const HINT = 'see "ferry sync" in the README for the format';

/** Where a value sits in the file: a top-level key, then a job's index, then a key of that job. */
type KeyPath = [string] | ['repositories', number] | ['repositories', number, string];

export async function loadSyncConfig(path: string): Promise<SyncJob[]> {
  const { doc, place } = await readConfig(path);
  /** An error named by its place in the file (`sync.yaml:42:5: …`) when `at` is given. */
  const bad = (what: string, at?: KeyPath, key = false) => {
    const where = at && place(at, key);
    return new FerryError('USAGE', `${path}${where ? `:${where}` : ''}: ${what}`, { hint: HINT });
  };
  if (doc === null || doc === undefined) throw bad('the file is empty: expected a mapping with a "repositories" list');
  if (typeof doc !== 'object' || Array.isArray(doc)) throw bad('expected a mapping with a "repositories" list');
  const top = doc as Record<string, unknown>;
  for (const k of Object.keys(top)) {
    // `x-` keys hold anchors for merge keys, as in Docker Compose files.
    if (!TOP_KEYS.includes(k) && !k.startsWith('x-')) throw bad(`unknown key "${k}"${suggest(k, TOP_KEYS)}`, [k], true);
  }
  if (!Array.isArray(top.repositories) || top.repositories.length === 0) {
    throw bad('"repositories" must be a non-empty list', 'repositories' in top ? ['repositories'] : undefined);
  }
  const jobs = top.repositories.map((entry, i) => {
    const where = `repositories[${i}]`;
    const e = (typeof entry === 'string' ? { source: entry } : entry) as Record<string, unknown>;
    if (!e || typeof e !== 'object') throw bad(`${where} must be a mapping or a repository name`, ['repositories', i]);
    for (const k of Object.keys(e)) if (!JOB_KEYS.includes(k)) throw bad(`${where}: unknown key "${k}"${suggest(k, JOB_KEYS)}`, ['repositories', i, k], true);
    const pick = (k: string) => (e[k] !== undefined ? e[k] : top[k]);
    // A default from the top of the file is named as such, not as a key of this entry.
    const at = (k: string) => (e[k] !== undefined ? `${where}.${k}` : `the top-level "${k}"`);
    const atValue = (k: string): KeyPath => (e[k] !== undefined ? ['repositories', i, k] : [k]);
    const str = (k: string) => {
      const v = pick(k);
      if (v !== undefined && typeof v !== 'string') throw bad(`${at(k)} must be a string`, atValue(k));
      return v as string | undefined;
    };
    const list = (k: string) => {
      const v = pick(k);
      if (v === undefined) return undefined;
      const arr = Array.isArray(v) ? v : [v];
      if (!arr.every((x) => typeof x === 'string')) throw bad(`${at(k)} must be a list of strings`, atValue(k));
      return arr as string[];
    };
    const bool = (k: string) => {
      const v = pick(k);
      if (v !== undefined && typeof v !== 'boolean') {
        const yamlOne = typeof v === 'string' && /^(yes|no|on|off|y|n)$/i.test(v) ? ` (YAML 1.2 reads ${v} as text)` : '';
        throw bad(`${at(k)} must be true or false, not ${JSON.stringify(v)}${yamlOne}`, atValue(k));
      }
      return v as boolean | undefined;
    };
    const source = str('source');
    if (!source) throw bad(`${where} needs a "source"`, ['repositories', i]);
    try {
      // Checked here too, so that a mistyped source is named by its place in the file.
      parseRepository(source, 'the source');
    } catch (e) {
      throw bad(`${at('source')}: ${(e as Error).message}`, atValue('source'));
    }
    const platform = str('platform');
    const platformsAt = (text: string) => {
      try {
        return parsePlatformSelection(text);
      } catch (e) {
        throw bad(`${at('platform')}: ${(e as Error).message}`, atValue('platform'));
      }
    };
    const volumeSize = () => {
      const v = pick('volume-size');
      if (v === undefined) return undefined;
      if (typeof v !== 'string' && !(typeof v === 'number' && Number.isSafeInteger(v))) throw bad(`${at('volume-size')} must be a size such as 4G, or a number of bytes`, atValue('volume-size'));
      const dest = str('destination');
      if (!dest || !namesArchive(dest)) {
        throw bad(`${at('volume-size')} writes an archive as volumes, but ${dest ? `the destination "${dest}" is not an archive` : `${where} has no destination (the store is not an archive)`}`, atValue('volume-size'));
      }
      try {
        const size = typeof v === 'number' ? v : parseSize(v);
        checkVolumeSize(size);
        return size;
      } catch (e) {
        throw bad(`${at('volume-size')}: ${(e as Error).message}`, atValue('volume-size'));
      }
    };
    const destination = str('destination');
    if (destination === '') throw bad(`${at('destination')} is empty: leave it out to sync into the store`, atValue('destination'));
    // What sync refuses before any request, named here by its place in the file.
    if (destination !== undefined && !destination.startsWith('oci:') && !destination.startsWith('docker://') && !namesArchive(destination)) {
      throw bad(`${at('destination')} "${destination}" must be oci:DIR, docker://REGISTRY[/PREFIX] or an archive file (.tar, .tar.gz, .tar.zst); leave it out for the store`, atValue('destination'));
    }
    if (destination !== undefined && namesArchive(destination)) {
      try {
        refuseOutputPattern(destination.replace(/^(oci|docker)-archive:/, ''), `${at('destination')} "${destination}"`, (plain) => `destination: ${plain} with volume-size: SIZE`);
      } catch (e) {
        throw bad((e as Error).message, atValue('destination'));
      }
    }
    const filters = { include: list('include'), exclude: list('exclude'), semver: str('semver') };
    // Checked here, so that a mistake is named by its place in the file, not as a flag.
    tagFilter(filters, (field, problem) => bad(`${at(field)}: ${field === 'semver' ? problem : `invalid ${problem}`}`, atValue(field)));
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
  // The same job twice (a copy-paste slip) would plan and report every image twice.
  const seen = new Map<string, number>();
  for (const [i, job] of jobs.entries()) {
    const key = JSON.stringify(job);
    const first = seen.get(key);
    if (first !== undefined) throw bad(`repositories[${i}] repeats repositories[${first}] (the same source, destination and settings)`, ['repositories', i]);
    seen.set(key, i);
  }
  return jobs;
}

/**
 * The file's value (as parse() gives it) and `place`, which turns a key path into `line:column`
 * (the key itself when `key`, else its value).
 */
async function readConfig(path: string): Promise<{ doc: unknown; place: (at: KeyPath, key: boolean) => string | undefined }> {
  if (path === '-') throw new FerryError('USAGE', 'the sync configuration is read from a file, not from standard input', { hint: 'write it to a file and give its path: --config FILE' });
  // Without a byte-order mark (some Windows editors write one): it is no column of the first line.
  const text = await readUserFile(path, 'sync configuration', HINT);
  const lines = new LineCounter();
  // Merge keys (`<<: *defaults`) are how YAML shares settings between entries.
  const parsed = parseDocument(text, { merge: true, lineCounter: lines });
  const wrong = parsed.errors[0];
  if (wrong) {
    // yaml's first line ends "at line 3, column 1:" before a snippet of the file; the place goes in front.
    const pos = wrong.linePos?.[0];
    const message =
      wrong.code === 'MULTIPLE_DOCS'
        ? 'the file holds more than one YAML document (a second "---"); a configuration is one document'
        : wrong.message.split('\n')[0]!.replace(/ at line \d+, column \d+:?\s*$/, '').replace(/:\s*$/, '');
    throw new FerryError('USAGE', `${path}${pos ? `:${pos.line}:${pos.col}` : ''}: not valid YAML or JSON: ${message}`, { hint: HINT });
  }
  let doc: unknown;
  try {
    // yaml's guard against alias bombs allows 100 uses of an anchor: a config of 100 entries
    // sharing `<<: *defaults` tripped it. A bomb still stops at 10,000.
    doc = parsed.toJS({ maxAliasCount: 10_000 });
  } catch (e) {
    // An alias to no anchor, a merge of something not a mapping, a bomb: the file, not ferry.
    throw new FerryError('USAGE', `${path}: not a valid configuration: ${(e as Error).message}`, { hint: HINT });
  }
  const place = (at: KeyPath, key: boolean) => {
    const node = nodeAt(parsed, at, key);
    const offset = node?.range?.[0];
    if (offset === undefined) return undefined;
    const { line, col } = lines.linePos(offset);
    return `${line}:${col}`;
  };
  return { doc, place };
}

/**
 * The node at a key path, or the deepest one the file spells out on the way. A key an entry gets
 * through a merge key (`<<: *defaults`) is not among the entry's own: its node is in the anchor,
 * which other entries share, so the entry itself is named instead (and an entry that is an alias,
 * `- *app`, is named as the alias).
 */
function nodeAt(doc: Document, at: KeyPath, key: boolean): Node | undefined {
  let node: Node | undefined = isNode(doc.contents) ? doc.contents : undefined;
  for (const [n, step] of at.entries()) {
    const last = n === at.length - 1;
    if (typeof step === 'number') {
      const item: unknown = isSeq(node) ? node.items[step] : undefined;
      if (!isNode(item)) return node;
      node = item;
      continue;
    }
    const pair = isMap(node) ? node.items.find((p) => isScalar(p.key) && p.key.value === step) : undefined;
    if (!pair) return node;
    const next: unknown = last && key ? pair.key : (pair.value ?? pair.key);
    if (!isNode(next)) return node;
    node = next;
  }
  return node;
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
