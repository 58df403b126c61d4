import { open } from 'node:fs/promises';
import { copy, type CopyEvent, type CopyReport } from '../copy.js';
import { FerryError } from '../errors.js';
import { readCapped } from '../blob/verify.js';
import { sniff } from '../blob/compression.js';
import type { RegistrySettings } from '../locations/location.js';
import { openRepository } from '../locations/registry/pool.js';
import type { Digest } from '../oci/digest.js';
import { MAX_JSON_BYTES, parseJson, parseManifestDocument, type Descriptor } from '../oci/manifest.js';
import { formatReference, parseReference, repositoryName, withoutDockerPrefix, type Reference } from '../oci/reference.js';
import { PlanBuilder, type Plan } from '../plan.js';
import type { TagName } from '../types.js';
import { entryNames, type ArchiveRoot } from './graph.js';
import { ingestArchive } from './ingest.js';
import { refuseDirectory, skimmedArchiveBytes } from './scan.js';
import { ArchiveSource, repoTagNames, type ArchiveImage } from './source.js';
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
  reference: string;
  digest: Digest;
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

/** An archive image with a tag at most (saved from an OCI layout, or unnamed): the hint names a copy that sends it as it is. */
function noName(file: string, ref: string, tags: string[], prefix: string | undefined): FerryError {
  const tag = tags[0];
  const from = tag ? `oci-archive:${file}:${tag}` : ref.startsWith('sha256:') ? `oci-archive:${file}@${ref}` : undefined;
  const to = `docker://${prefixOf(prefix) ?? 'REGISTRY'}/NAME:${tag ?? 'TAG'}`;
  const what = tag ? `${ref}, tagged ${tags.join(', ')} without a repository` : ref;
  return new FerryError('USAGE', `an image of ${file} (${what}) has no repository name to push it under`, {
    hint: from ? `send it under a name of your choosing: ferry copy ${from} ${to}` : 'load it with ferry load --tag NAME:TAG, then ferry push NAME:TAG',
  });
}

const repoOf = (r: Reference) => `${r.domain}/${r.path}`;
const fullName = (r: Reference) => formatReference({ domain: r.domain, path: r.path, tag: r.tag });

/**
 * `ferry push --from FILE [PREFIX]`: every named image of an archive goes to a registry, straight
 * from the archive; every blob is verified on the way and every digest kept (the OCI side of the
 * archive is pushed as it is). A plain tar is read in place, blob by blob, by byte range. A
 * compressed one cannot be seeked, so it is streamed (see pushCompressed): nothing is unpacked.
 */
export async function pushArchive(file: string, o: PushArchiveOptions = {}): Promise<PushedArchiveImage[]> {
  prefixOf(o.prefix); // refused before the archive is read
  if (await isCompressed(file)) return pushCompressed(file, o);
  const out: PushedArchiveImage[] = [];
  await eachTarget(file, o, false, (name, r) => out.push({ reference: name, digest: r.images[0]!.digest }));
  return out;
}

/** `ferry push --from FILE --dry-run`: what the push would send; reads manifests, asks the registry what it has, uploads nothing. */
export async function planArchivePush(file: string, o: PushArchiveOptions = {}): Promise<Plan> {
  prefixOf(o.prefix);
  const plan = new PlanBuilder();
  // Listed by their names in the archive; where each goes is the plan's AS column.
  await eachTarget(file, o, true, (name, r, from) => plan.add(repositoryName(parseReference(name)), from, r));
  return plan.build('push');
}

/** Copies (or plans) every named image of the archive, read in place (a compressed one by decompressing it again as blobs are read). */
async function eachTarget(file: string, o: PushArchiveOptions, dryRun: boolean, done: (name: string, r: CopyReport, from: string) => void): Promise<void> {
  const source = await ArchiveSource.open(file, { signal: o.signal });
  try {
    const images = source.images();
    if (images.length === 0) throw new FerryError('INVALID_INPUT', `${file} holds no images`);
    for (const img of images) {
      const names = img.names.filter((n) => n.name);
      if (names.length === 0) throw noName(file, img.ref, img.names.map((n) => n.tag), o.prefix);
      const root = await source.resolve(img.ref);
      for (const n of names) {
        const { name, report } = await copyInto(source, root, mapOntoPrefix(parseReference(n.name!), o.prefix), o, { dryRun });
        done(name, report, n.name!);
      }
    }
  } finally {
    await source.close();
  }
}

async function copyInto(
  source: ArchiveSource | ReturnType<typeof openRepository>,
  root: Descriptor,
  target: Reference,
  o: PushArchiveOptions,
  x: { mountFrom?: string; dryRun?: boolean } = {},
): Promise<{ name: string; report: CopyReport }> {
  const repo = openRepository(target, o.registry);
  if (x.mountFrom) repo.addMountSource(x.mountFrom);
  const name = fullName(target);
  const report = await copy(source, repo, [{ ref: root.digest, names: [{ tag: target.tag!, name }] }], {
    platforms: 'all',
    signal: o.signal,
    onEvent: o.onEvent,
    concurrency: o.jobs,
    dryRun: x.dryRun,
  });
  return { name, report };
}

async function isCompressed(file: string): Promise<boolean> {
  await refuseDirectory(file);
  const fh = await open(file, 'r').catch((e: NodeJS.ErrnoException) => {
    throw e.code === 'ENOENT' ? new FerryError('NOT_FOUND', `${file}: no such file`) : e;
  });
  try {
    const head = Buffer.alloc(6);
    const { bytesRead } = await fh.read(head, 0, 6, 0);
    return sniff(head.subarray(0, bytesRead)) !== 'none';
  } finally {
    await fh.close();
  }
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
async function pushCompressed(file: string, o: PushArchiveOptions): Promise<PushedArchiveImage[]> {
  const images = await describedImages(file, o.signal);
  if (images.length === 0) throw new FerryError('INVALID_INPUT', `${file} holds no images`);
  for (const img of images) if (!img.names.some((n) => n.name)) throw noName(file, img.ref, img.names.map((n) => n.tag), o.prefix);
  const targetOf = (n: TagName) => mapOntoPrefix(parseReference(n.name!), o.prefix);
  const first = targetOf(images[0]!.names.find((n) => n.name)!);
  const carrier = openRepository(first, o.registry);
  const out: PushedArchiveImage[] = [];
  const elsewhere: Array<{ root: Descriptor; target: Reference }> = [];
  const rename = (root: ArchiveRoot): TagName[] => {
    const named = root.names.filter((n) => n.name);
    if (named.length === 0) throw noName(file, root.label, root.names.map((n) => n.tag), o.prefix);
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
    const { name, report } = await copyInto(carrier, root, target, o, { mountFrom: carrier.path });
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
