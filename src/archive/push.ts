import { copy, type CopyEvent, type CopyOptions, type CopyReport, type Root } from '../copy.js';
import { walk } from '../graph.js';
import { FerryError } from '../errors.js';
import { readCapped } from '../blob/verify.js';
import type { RegistrySettings } from '../locations/location.js';
import { openRepository } from '../locations/registry/pool.js';
import type { Digest } from '../oci/digest.js';
import { MAX_JSON_BYTES, parseJson, parseManifestDocument, type Descriptor } from '../oci/manifest.js';
import { formatReference, parseReference, repositoryName, withoutDockerPrefix, type Reference } from '../oci/reference.js';
import { PlanBuilder, type Plan } from '../plan.js';
import type { TagName } from '../types.js';
import { entryNames, type ArchiveRoot } from './graph.js';
import { ingestArchive } from './ingest.js';
import { archiveFiles, shellQuoted, volumePattern } from './patterns.js';
import { orderInputs, skimmedArchiveBytes } from './scan.js';
import { ArchiveSource, openSniffed, repoTagNames, type ArchiveImage } from './source.js';
import { cleanPath, readTar } from './tar.js';
import { notAnImageArchive, VOLUME_HEADER } from './volumes.js';

export interface PushArchiveOptions {
  /** `REGISTRY[/PATH]`: images go to PREFIX/<their repository path>; default: their own names. */
  prefix?: string;
  registry?: RegistrySettings;
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
  jobs?: number;
}

export interface PushedArchiveImage {
  /** NAME:TAG pushed; for a referrer, REPOSITORY@DIGEST (or the tag a cosign-style one kept). */
  reference: string;
  digest: Digest;
  /** A referrer: the manifest it refers to (pushed into that image's repository). */
  subject?: Digest;
  artifactType?: string;
}

/** Where an archive image named `name` goes under `prefix` (docker.io/library/alpine:3 -> PREFIX/library/alpine:3). */
export function mapOntoPrefix(name: Reference, prefix: string | undefined): Reference {
  const p = prefixOf(prefix);
  if (!p) return name;
  return parseReference(`${p}/${name.path}:${name.tag ?? 'latest'}`);
}

/** REGISTRY[/PREFIX] as given (docker:// allowed), checked: a tag or digest there is a mistake. */
function prefixOf(prefix: string | undefined): string | undefined {
  if (!prefix) return undefined;
  const p = withoutDockerPrefix(prefix).replace(/\/+$/, '');
  const slash = p.indexOf('/');
  if (p === '' || (slash >= 0 && /[:@]/.test(p.slice(slash + 1)))) {
    throw new FerryError('USAGE', `push --from: "${prefix}" must be REGISTRY[/PREFIX], without a tag or digest`, {
      hint: 'each image keeps its own name and tag under it: REGISTRY/PREFIX/NAME:TAG',
    });
  }
  return p;
}

/**
 * An archive image with a tag at most (saved from an OCI layout, or unnamed) that refers to no image
 * of the archive either: the hint names a copy that sends it as it is.
 */
function noName(archive: PushedArchive, img: ArchiveImage, prefix: string | undefined, others: number): FerryError {
  const file = archive.label;
  const tags = img.names.map((n) => n.tag);
  const tag = tags[0];
  const ref = img.ref;
  const from = tag ? `oci-archive:${archive.location}:${tag}` : ref.startsWith('sha256:') ? `oci-archive:${archive.location}@${ref}` : undefined;
  const to = `docker://${prefixOf(prefix) ?? 'REGISTRY'}/NAME:${tag ?? 'TAG'}`;
  const what = tag ? `${ref}, tagged ${tags.join(', ')} without a repository` : ref;
  const referrer = img.from === 'index.json' ? ', nor is it a referrer of an image there' : '';
  const more = others > 0 ? ` (and ${others} more like it)` : '';
  return new FerryError('USAGE', `an image of ${file} (${what}) has no repository name to push it under${referrer}; nothing was pushed${more}`, {
    hint: from ? `send it under a name of your choosing: ferry copy ${from} ${to}` : 'load it with ferry load --tag NAME:TAG, then ferry push NAME:TAG',
  });
}

const repoOf = (r: Reference) => `${r.domain}/${r.path}`;
const fullName = (r: Reference) => formatReference({ domain: r.domain, path: r.path, tag: r.tag });

/**
 * `ferry push --from FILE [PREFIX]`: every named image of an archive goes to a registry, straight
 * from the archive; every blob is verified on the way and every digest kept (the OCI side of the
 * archive is pushed as it is). Its referrers (unnamed manifests whose `subject` is an image there:
 * signatures, SBOMs) go into the repository of the image they refer to, after it, as `copy
 * --referrers` puts them. A plain tar is read in place, blob by blob, by byte range. A compressed
 * one cannot be seeked, so it is streamed (see pushCompressed): nothing is unpacked. A volume set
 * (every volume given, or a pattern for them) is read as one archive, each volume as such a file.
 */
export async function pushArchive(from: string | string[], o: PushArchiveOptions = {}): Promise<PushedArchiveImage[]> {
  prefixOf(o.prefix); // refused before the archive is read
  const archive = await pushedArchive(from);
  const file = archive.files[0]!;
  if (!archive.set && (await isCompressed(file))) {
    const images = await describedImages(file, o.signal);
    if (images.length === 0) throw new FerryError('INVALID_INPUT', `${file} holds no images`);
    // Unnamed images may be referrers: only the archive read as a Source can tell (and push them).
    if (images.every((i) => i.names.some((n) => n.name))) return pushCompressed(file, images, o);
  }
  const out: PushedArchiveImage[] = [];
  await eachRepository(archive, o, false, (group, r) => out.push(...pushedImages(group, r)));
  return out;
}

/** `ferry push --from FILE --dry-run`: what the push would send; reads manifests, asks the registry what it has, uploads nothing. */
export async function planArchivePush(from: string | string[], o: PushArchiveOptions = {}): Promise<Plan> {
  prefixOf(o.prefix);
  const archive = await pushedArchive(from);
  const plan = new PlanBuilder();
  // Listed by their names in the archive; where each goes is the plan's AS column.
  await eachRepository(archive, o, true, (g, r) => plan.add(repositoryName(g.target), (i) => (i.subject ? `referrer of ${i.subject}` : g.labels.get(i.names[0]!.name!)!), r));
  return plan.build('push');
}

/** What `--from` named: one archive file, or the volumes of one set. */
interface PushedArchive {
  files: string[];
  set: boolean;
  /** How messages name it: the file, or the pattern given. */
  label: string;
  /** How an `oci-archive:` location names it in hints (a set: a pattern matching its volumes). */
  location: string;
  /** How to name the whole set, given a volume (for a set given in part). */
  hint: (volume: string) => string;
}

/**
 * `--from` given once or more: a file each, or a pattern (`/mnt/usb/app.*.tar`) for every volume
 * of a set. Volumes are put in order, and a missing one or one of another set refused, here:
 * before anything is sent.
 */
async function pushedArchive(from: string | string[]): Promise<PushedArchive> {
  const given = [from].flat();
  const files: string[] = [];
  for (const f of given) files.push(...(await archiveFiles(f)));
  const hint = (volume: string) => `give every volume of the set: --from ${shellQuoted(volumePattern(volume))} (a pattern ferry expands), or --from each volume`;
  const inputs = await orderInputs(files, hint);
  const set = inputs[0]!.volume !== undefined;
  const label = given.length === 1 ? given[0]! : `${inputs[0]!.path} … (${inputs.length} volumes)`;
  return { files: inputs.map((i) => i.path), set, label, location: set ? shellQuoted(volumePattern(inputs[0]!.path)) : label, hint };
}

/** The images of an archive bound for one repository. */
interface RepositoryGroup {
  target: Reference;
  roots: Root[];
  /** Destination name -> the name the image has in the archive (what plans list). */
  labels: Map<string, string>;
}

/**
 * What goes where, worked out before anything is sent: every named image, grouped by destination
 * repository. An unnamed image is refused here unless it is a referrer of one of them (or of such a
 * referrer: two levels, as the copy engine carries them).
 */
async function repositoryGroups(source: ArchiveSource, archive: PushedArchive, o: PushArchiveOptions): Promise<RepositoryGroup[]> {
  const images = source.images();
  if (images.length === 0) throw new FerryError('INVALID_INPUT', `${archive.label} holds no images`);
  const groups = new Map<string, RepositoryGroup>();
  for (const img of images) {
    for (const n of img.names) {
      if (!n.name) continue;
      const t = mapOntoPrefix(parseReference(n.name), o.prefix);
      const g: RepositoryGroup = groups.get(repoOf(t)) ?? { target: t, roots: [], labels: new Map() };
      groups.set(repoOf(t), g);
      g.roots.push({ ref: img.ref, names: [{ tag: t.tag!, name: fullName(t) }], label: n.name });
      g.labels.set(fullName(t), n.name);
    }
  }
  const named = images.filter((i) => i.names.some((n) => n.name));
  const unnamed = images.filter((i) => !named.includes(i));
  if (unnamed.length > 0) {
    const strays = await notReferrers(source, named, unnamed, o.signal);
    if (strays.length > 0) throw noName(archive, strays[0]!, o.prefix, (await imagesAmong(source, strays)) - 1);
  }
  return [...groups.values()];
}

/**
 * How many images `list` holds: an archive describes each image in index.json and again in
 * manifest.json, and an unnamed manifest.json entry whose config a listed index.json image uses is
 * that image, not one more.
 */
async function imagesAmong(source: ArchiveSource, list: ArchiveImage[]): Promise<number> {
  const configs = new Set<string>();
  for (const img of list.filter((i) => i.from === 'index.json')) {
    // Only a count for a message: an image that cannot be read is one more.
    const parsed = await source
      .resolve(img.ref)
      .then(async (d) => parseManifestDocument(await readCapped(await source.fetch(d), MAX_JSON_BYTES, img.ref), { where: img.ref }))
      .catch(() => undefined);
    if (parsed?.kind === 'manifest') configs.add(`blobs/${parsed.manifest.config.digest.replace(':', '/')}`);
  }
  return list.filter((i) => i.from === 'index.json' || !configs.has(source.dockerConfigPath(i.ref) ?? '')).length;
}

/** The unnamed images that refer to nothing pushed: not to a manifest of a named image, nor to one of its referrers. */
async function notReferrers(source: ArchiveSource, named: ArchiveImage[], unnamed: ArchiveImage[], signal?: AbortSignal): Promise<ArchiveImage[]> {
  const reached = new Set<string>();
  const reach = async (img: ArchiveImage) => {
    // A docker-save image has no manifest of its own for a referrer to name (its layers may be gzip: not hashed for this).
    if (img.from !== 'index.json') return;
    await walk(source, await source.resolve(img.ref), { onDocument: (n) => void reached.add(n.descriptor.digest) }, { signal });
  };
  for (const img of named) await reach(img);
  let left = unnamed;
  for (let level = 0; level < 2 && left.length > 0; level++) {
    const found: ArchiveImage[] = [];
    const rest: ArchiveImage[] = [];
    for (const img of left) {
      const subject = img.from === 'index.json' ? await source.subjectOf(await source.resolve(img.ref)) : undefined;
      (subject && reached.has(subject) ? found : rest).push(img);
    }
    for (const img of found) await reach(img);
    left = rest;
  }
  return left;
}

/**
 * Copies (or plans) the archive's images, one repository at a time, read in place (a compressed one
 * by decompressing it again as blobs are read; a volume set as one archive, a blob cut into parts
 * read as one piece).
 */
async function eachRepository(archive: PushedArchive, o: PushArchiveOptions, dryRun: boolean, done: (g: RepositoryGroup, r: CopyReport) => void): Promise<void> {
  const source = await ArchiveSource.openFiles(archive.files, { signal: o.signal, label: archive.label, hint: archive.hint });
  try {
    const groups = await repositoryGroups(source, archive, o);
    const earlier: Reference[] = [];
    for (const g of groups) {
      const repo = openRepository(g.target, o.registry);
      // Blobs already sent to another repository of the same registry are mounted, not sent again.
      for (const e of earlier) if (e.domain === g.target.domain) repo.addMountSource(e.path);
      earlier.push(g.target);
      done(g, await copy(source, repo, g.roots, copyOptions(o, g.target, dryRun)));
    }
  } finally {
    await source.close();
  }
}

function copyOptions(o: PushArchiveOptions, target: Reference, dryRun = false): CopyOptions {
  return {
    platforms: 'all',
    referrers: true,
    // A referrer the archive names by a cosign-style tag keeps that tag in its image's repository.
    nameReferrerTag: (tag) => ({ tag, name: `${repoOf(target)}:${tag}` }),
    signal: o.signal,
    onEvent: o.onEvent,
    concurrency: o.jobs,
    dryRun,
  };
}

/** What one repository's copy reports as pushed: each name given, then each referrer carried. */
function pushedImages(g: RepositoryGroup, r: CopyReport): PushedArchiveImage[] {
  return r.images.map((i) => {
    if (!i.subject) return { reference: i.names[0]!.name!, digest: i.digest };
    const reference = i.names[0]?.name ?? `${repoOf(g.target)}@${i.digest}`;
    return { reference, digest: i.digest, subject: i.subject, ...(i.artifactType ? { artifactType: i.artifactType } : {}) };
  });
}

async function copyInto(
  source: ReturnType<typeof openRepository>,
  root: Descriptor,
  target: Reference,
  o: PushArchiveOptions,
  mountFrom: string,
): Promise<{ name: string; report: CopyReport }> {
  const repo = openRepository(target, o.registry);
  repo.addMountSource(mountFrom);
  const name = fullName(target);
  const report = await copy(source, repo, [{ ref: root.digest, names: [{ tag: target.tag!, name }] }], { platforms: 'all', signal: o.signal, onEvent: o.onEvent, concurrency: o.jobs });
  return { name, report };
}

async function isCompressed(file: string): Promise<boolean> {
  const { fh, compression } = await openSniffed(file);
  await fh.close();
  return compression !== 'none';
}

/**
 * A compressed archive, without a temporary plain tar. The names come last in every archive
 * format (index.json, manifest.json), after the blobs, and a registry stores blobs per
 * repository, so: a first pass decompresses the archive reading only its descriptions (blob
 * bodies are skipped, nothing is stored) to learn where images go; a second pass is `load`'s
 * one-pass ingest with the first destination repository as its sink — blobs are uploaded as they
 * stream by, verified, and only a legacy layer whose digest is learnt by hashing it is spooled (one
 * blob at a time). Images bound for other repositories are then copied from there, by
 * cross-repository mount where the registry allows it.
 */
async function pushCompressed(file: string, images: ArchiveImage[], o: PushArchiveOptions): Promise<PushedArchiveImage[]> {
  const targetOf = (n: TagName) => mapOntoPrefix(parseReference(n.name!), o.prefix);
  const first = targetOf(images[0]!.names.find((n) => n.name)!);
  const carrier = openRepository(first, o.registry);
  const out: PushedArchiveImage[] = [];
  const elsewhere: Array<{ root: Descriptor; target: Reference }> = [];
  const rename = (root: ArchiveRoot): TagName[] => {
    const named = root.names.filter((n) => n.name);
    // Every image was named (pushArchive checked), but the tar's description of itself is read again here.
    if (named.length === 0) throw new FerryError('INVALID_INPUT', `${file}: ${root.label} has no name in this pass, unlike the first`);
    const here: TagName[] = [];
    for (const t of named.map(targetOf)) {
      if (repoOf(t) !== repoOf(first)) elsewhere.push({ root: root.descriptor, target: t });
      else {
        here.push({ tag: t.tag!, name: fullName(t) });
        out.push({ reference: fullName(t), digest: root.descriptor.digest });
      }
    }
    return here;
  };
  await ingestArchive({
    inputs: [file],
    sink: carrier,
    rename,
    signal: o.signal,
    // The ingest's blob events are the copy engine's; archive read totals and image lines are load's.
    onEvent: (e) => {
      if (e.type !== 'read' && e.type !== 'image') o.onEvent?.(e);
    },
  });
  for (const { root, target } of elsewhere) {
    const { name, report } = await copyInto(carrier, root, target, o, carrier.path);
    out.push({ reference: name, digest: report.images[0]!.digest });
  }
  return out;
}

/**
 * The images an archive describes, read from its index.json and manifest.json only: one pass
 * over the decompressed tar that skips every other entry's body.
 */
async function describedImages(file: string, signal?: AbortSignal): Promise<ArchiveImage[]> {
  const meta = new Map<string, Buffer>();
  let volume = false;
  for await (const e of readTar(skimmedArchiveBytes(file, file, signal), { where: file, signal })) {
    const path = e.type === 'file' ? cleanPath(e.name) : undefined;
    if (path === 'index.json' || path === 'manifest.json') meta.set(path, await readCapped(e.body(), MAX_JSON_BYTES, `${file}: ${path}`));
    if (path === VOLUME_HEADER) volume = true;
  }
  const out: ArchiveImage[] = [];
  const index = meta.get('index.json');
  if (index) {
    const parsed = parseManifestDocument(index, { where: `${file}: index.json` });
    if (parsed.kind === 'index') for (const e of parsed.index.manifests) out.push({ ref: e.digest, names: entryNames(e), from: 'index.json' });
  }
  const manifest = meta.get('manifest.json');
  const entries = manifest ? parseJson(manifest, `${file}: manifest.json`) : [];
  for (const [i, e] of (Array.isArray(entries) ? entries : []).entries()) {
    const names = repoTagNames((e as { RepoTags?: unknown } | null)?.RepoTags);
    if (names.length > 0 && names.every((n) => out.some((x) => x.names.some((m) => m.name === n.name)))) continue;
    out.push({ ref: `@${i}`, names, from: 'manifest.json' });
  }
  if (!index && !manifest) throw notAnImageArchive(file, volume);
  return out;
}
