import { isFerryError } from '../errors.js';
import { isValidRepositoryPath, parseReference, tryParseReference } from '../oci/reference.js';
import type { LayoutEntry } from '../locations/layout.js';
import { nameInvalid } from './errors.js';

/*
 * Repository names <-> store names. A repository name in a URL is read the way docker reads an
 * image name, and the store keeps the normalised full name:
 *
 *   /v2/team/app/…                    <-> docker.io/team/app
 *   /v2/alpine/… and /v2/library/alpine/… <-> docker.io/library/alpine
 *   /v2/example.com/ferry/testdata/…  <-> example.com/ferry/testdata
 *
 * Listings show docker.io names without "docker.io/" and other names with their domain. A store
 * name whose domain has a port or uppercase letters (registry:5000/app) cannot be written as a
 * repository path, so it is not served; `ferry tag` can give such an image a servable name.
 */

/** The store's key for a repository: the normalised full name without tag, e.g. docker.io/team/app. */
export type RepoKey = string;

const MAX_NAME = 255;

/** Validates a repository name from a URL and returns its store key (NAME_INVALID otherwise). */
export function repoKeyFor(name: string): RepoKey {
  if (name.length > MAX_NAME) throw nameInvalid(name.slice(0, 64) + '…', `longer than ${MAX_NAME} characters`);
  if (!isValidRepositoryPath(name)) {
    throw nameInvalid(name, "use lowercase letters and digits in components separated by '/', joined by '.', '_', '__' or '-'");
  }
  try {
    const r = parseReference(name);
    return `${r.domain}/${r.path}`;
  } catch (e) {
    if (isFerryError(e)) throw nameInvalid(name, e.message);
    throw e;
  }
}

/** How a store key is listed by _catalog, or undefined when it cannot be a repository path. */
export function repositoryFor(key: RepoKey): string | undefined {
  const slash = key.indexOf('/');
  const domain = key.slice(0, slash);
  const path = key.slice(slash + 1);
  // docker.io/foo.com/x cannot be listed as foo.com/x (that is another domain): keep its domain then.
  const candidates = domain === 'docker.io' ? [path, key] : [key];
  return candidates.find((name) => repoKeyOrUndefined(name) === key);
}

function repoKeyOrUndefined(name: string): RepoKey | undefined {
  try {
    return repoKeyFor(name);
  } catch {
    return undefined;
  }
}

/** An index.json entry as the registry sees it: its repository key and its tag (none: untagged). */
export interface ServedEntry {
  entry: LayoutEntry;
  key: RepoKey;
  tag?: string;
}

/**
 * Reads an entry's repository and tag from its full name (io.containerd.image.name, or a
 * ref.name that is a full reference). Entries with only a bare tag belong to no repository.
 */
export function servedEntry(entry: LayoutEntry): ServedEntry | undefined {
  const full = entry.name ?? (entry.tag !== undefined && /[/:@]/.test(entry.tag) ? entry.tag : undefined);
  if (full === undefined) return undefined;
  const r = tryParseReference(full);
  if (!r) return undefined;
  const out: ServedEntry = { entry, key: `${r.domain}/${r.path}` };
  if (r.tag !== undefined) out.tag = r.tag;
  return out;
}
