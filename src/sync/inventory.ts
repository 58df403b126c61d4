import { stat } from 'node:fs/promises';
import { archiveFiles, isPattern, shellQuoted, volumePattern } from '../archive/patterns.js';
import { readVolumeHeader } from '../archive/scan.js';
import { ArchiveSource } from '../archive/source.js';
import { ARCHIVE_SUFFIX } from '../blob/compression.js';
import { FerryError } from '../errors.js';
import { readUserFile } from '../util/user-file.js';
import { walk } from '../graph.js';
import { OciLayout } from '../locations/layout.js';
import { isPathLike, type RegistrySettings } from '../locations/location.js';
import { openRepository } from '../locations/registry/pool.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { isManifestLike } from '../oci/mediatypes.js';
import { formatReference, namesTagOrDigest, parseReference, repositoryName, withoutDockerPrefix } from '../oci/reference.js';
import type { Source } from '../types.js';

/**
 * What a place already holds, so that a delta archive can leave it out: every blob and manifest
 * digest reachable from its images, and its tags. Written as JSON; read back by `--exclude-from`.
 */
export interface Inventory {
  ferryInventory: 1;
  created: string;
  sources: string[];
  blobs: Digest[];
  manifests: Digest[];
  tags: Record<string, Digest>;
}

export interface InventoryOptions {
  storeDir: string;
  registry?: RegistrySettings;
  signal?: AbortSignal;
}

async function collect(src: Source, roots: Array<{ name: string; digest: Digest; ref: string }>, inv: Inventory, o: InventoryOptions): Promise<void> {
  const blobs = new Set(inv.blobs);
  const manifests = new Set(inv.manifests);
  for (const root of roots) {
    const d = await src.resolve(root.ref);
    await walk(src, d, {
      onDocument: (n) => void manifests.add(n.descriptor.digest),
      onBlob: (b) => void (isManifestLike(b.mediaType) ? manifests : blobs).add(b.digest),
      onMissing: () => {},
    }, { signal: o.signal });
    inv.tags[root.name] = root.digest;
  }
  inv.blobs = [...blobs].sort();
  inv.manifests = [...manifests].sort();
}

/** An archive file named as a place: `oci-archive:FILE`, `docker-archive:FILE`, or a path to a file (or a pattern for a set's volumes). */
async function archivePlace(place: string): Promise<string | undefined> {
  const m = /^(oci|docker)-archive:(.+)$/.exec(place);
  if (m) return m[2];
  // An archive's name is enough (a missing one is then reported as a missing file).
  if (ARCHIVE_SUFFIX.test(place)) return place;
  return (await stat(place).catch(() => undefined))?.isFile() ? place : undefined;
}

/** A place to inventory: one archive (a file, or the volumes of one set), or anything else as given. */
type Place = { archive: string[]; label?: string; set?: string } | { other: string };

/**
 * The places named, with the volumes of a set (each named, as a shell expands `NAME.*.tar`, or by
 * a pattern ferry expands) gathered into one archive: they are read together, as load reads them.
 */
async function gatherPlaces(places: string[]): Promise<Place[]> {
  const out: Place[] = [];
  for (const place of places) {
    const file = await archivePlace(place);
    if (file === undefined) {
      out.push({ other: place });
      continue;
    }
    const files = await archiveFiles(file);
    const header = await readVolumeHeader(files[0]!).catch(() => undefined);
    const same = header && out.find((p): p is Extract<Place, { archive: string[] }> => 'archive' in p && p.set === header.set);
    if (same) same.archive.push(...files);
    else out.push({ archive: files, label: isPattern(file) ? file : undefined, set: header?.set });
  }
  return out;
}

/**
 * Inventories layouts (`oci:DIR` or a path, or the store when the text is empty/`store`), archive
 * files and volume sets (what an earlier USB run carried over) and registry repositories.
 */
export async function buildInventory(places: string[], o: InventoryOptions): Promise<Inventory> {
  const inv: Inventory = { ferryInventory: 1, created: new Date().toISOString(), sources: [], blobs: [], manifests: [], tags: {} };
  for (const gathered of await gatherPlaces(places.length ? places : ['store'])) {
    if ('archive' in gathered) {
      const hint = (volume: string) => `give every volume of the set: ferry inventory ${shellQuoted(volumePattern(volume))}`;
      const archive = await ArchiveSource.openFiles(gathered.archive, { signal: o.signal, hint, label: gathered.label });
      try {
        const roots = [];
        for (const image of archive.images()) {
          const { digest } = await archive.resolve(image.ref);
          const names = image.names.length ? image.names.map((n) => n.name ?? n.tag) : [digest];
          for (const name of names) roots.push({ name, digest, ref: image.ref });
        }
        await collect(archive, roots, inv, o);
      } finally {
        await archive.close();
      }
      inv.sources.push(`archive:${archive.label}`);
      continue;
    }
    const place = gathered.other;
    // A path (`/mnt/usb/store`, `./layout`) is a store or layout like `oci:PATH`.
    const path = isPathLike(place);
    if (place === 'store' || place.startsWith('oci:') || path) {
      const dir = place === 'store' ? o.storeDir : path ? place : place.slice(4);
      const layout = await OciLayout.open(dir);
      const roots = (await layout.entries()).map((e) => ({ name: e.name ?? e.tag ?? e.descriptor.digest, digest: e.descriptor.digest, ref: e.descriptor.digest }));
      await collect(layout, roots, inv, o);
      inv.sources.push(place === 'store' ? `store:${dir}` : path ? `oci:${dir}` : place);
    } else {
      const text = withoutDockerPrefix(place);
      const ref = parseReference(text);
      const repo = openRepository(ref, o.registry);
      const roots = [];
      const one = namesTagOrDigest(text);
      if (one) {
        // One image: what the other side is known to have, when it is less than the repository.
        const digest = ref.digest ?? (await repo.headDigest(ref.tag!, { signal: o.signal }));
        if (!digest) throw new FerryError('NOT_FOUND', `${formatReference(ref)} not found`);
        roots.push({ name: formatReference(ref), digest, ref: digest });
      } else {
        for (const tag of await repo.listTags({ signal: o.signal })) {
          const digest = await repo.headDigest(tag, { signal: o.signal });
          if (digest) roots.push({ name: `${repositoryName(ref)}:${tag}`, digest, ref: digest });
        }
      }
      await collect(repo, roots, inv, o);
      inv.sources.push(`docker://${one ? formatReference(ref) : repositoryName(ref)}`);
    }
  }
  return inv;
}

/** Reads an inventory file: the set of digests a delta may leave out. */
export async function readInventory(path: string): Promise<Set<Digest>> {
  return (await readInventoryFile(path)).blobs;
}

/**
 * An inventory's digests, and what it recorded, in words a delta archive keeps (index.json
 * annotation) so that whoever loads it can tell which archive or store it was made against.
 */
export async function readInventoryFile(path: string): Promise<{ blobs: Set<Digest>; base: string }> {
  const doc = await inventoryJson(path);
  const bad = (what: string) => new FerryError('INVALID_INPUT', `${path}: ${what}`, { hint: REWRITE });
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc) || !('ferryInventory' in doc)) {
    throw new FerryError('INVALID_INPUT', `${path} is not a ferry inventory (it has no "ferryInventory" field)`, { hint: REWRITE });
  }
  const inv = doc as Record<string, unknown>;
  if (inv.ferryInventory !== 1) {
    throw bad(`an inventory of format ${JSON.stringify(inv.ferryInventory)}; this ferry reads format 1 (written by another version of ferry?)`);
  }
  const digests = (field: string, list: unknown): Digest[] => {
    if (!Array.isArray(list)) throw bad(`"${field}" must be a list of digests`);
    for (const [i, d] of list.entries()) if (!isDigest(d)) throw bad(`${field}[${i}]: invalid digest ${JSON.stringify(d).slice(0, 100)}`);
    return list as Digest[];
  };
  const out = new Set(digests('blobs', inv.blobs));
  // What a delta records of its base: each field checked, not only the ones save uses.
  if (inv.manifests !== undefined) digests('manifests', inv.manifests);
  if (inv.tags !== undefined) {
    if (typeof inv.tags !== 'object' || inv.tags === null || Array.isArray(inv.tags)) throw bad('"tags" must map names to digests');
    for (const [name, d] of Object.entries(inv.tags)) if (!isDigest(d)) throw bad(`tags[${JSON.stringify(name)}]: invalid digest ${JSON.stringify(d).slice(0, 100)}`);
  }
  if (inv.sources !== undefined && !(Array.isArray(inv.sources) && inv.sources.every((x) => typeof x === 'string'))) throw bad('"sources" must be a list of strings');
  if (inv.created !== undefined && (typeof inv.created !== 'string' || Number.isNaN(Date.parse(inv.created)))) {
    throw bad(`"created" must be a date and time (ISO 8601), not ${JSON.stringify(inv.created).slice(0, 100)}`);
  }
  const sources = (inv.sources as string[] | undefined) ?? [];
  const base = `${sources.length ? sources.join(', ') : path}${typeof inv.created === 'string' ? ` as of ${inv.created}` : ''}`;
  return { blobs: out, base };
}

const REWRITE = 'an inventory is what ferry inventory writes: write it again where the images are, ferry inventory PLACE -o FILE';

/** The file parsed as JSON, or an error saying why it cannot be: missing, a directory, too large, cut short, not JSON. */
async function inventoryJson(path: string): Promise<unknown> {
  const text = await readUserFile(path, 'inventory', REWRITE);
  try {
    return JSON.parse(text);
  } catch (e) {
    const cut = /Unexpected end of JSON input|Unterminated/.test((e as Error).message);
    throw new FerryError('INVALID_INPUT', `${path} is not an inventory: ${cut ? 'the JSON is cut short (copied only in part?)' : `not JSON (${(e as Error).message})`}`, { hint: REWRITE });
  }
}
