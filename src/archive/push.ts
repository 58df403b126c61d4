import { copy, type CopyEvent, type CopyReport } from '../copy.js';
import { FerryError } from '../errors.js';
import type { RegistrySettings } from '../locations/location.js';
import { openRepository } from '../locations/registry/pool.js';
import type { Digest } from '../oci/digest.js';
import { formatReference, parseReference, repositoryName, type Reference } from '../oci/reference.js';
import { PlanBuilder, type Plan } from '../plan.js';
import { ArchiveSource } from './source.js';

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
  if (!prefix) return name;
  const p = prefix.replace(/\/+$/, '');
  const target = parseReference(`${p}/${name.path}:${name.tag ?? 'latest'}`);
  return target;
}

/**
 * `ferry push --from FILE [PREFIX]`: every named image of an archive goes to a registry, straight
 * from the archive. A plain tar is read in place, blob by blob (nothing unpacked); a compressed one
 * is decompressed once to a temporary plain tar first (ArchiveSource). Each blob is verified on the
 * way, and every digest is kept, since the OCI side of the archive is pushed as it is.
 */
export async function pushArchive(file: string, o: PushArchiveOptions = {}): Promise<PushedArchiveImage[]> {
  const out: PushedArchiveImage[] = [];
  await eachTarget(file, o, false, (name, r) => out.push({ reference: name, digest: r.images[0]!.digest }));
  return out;
}

/** `ferry push --from FILE --dry-run`: what the push would send; reads manifests, asks the registry what it has, uploads nothing. */
export async function planArchivePush(file: string, o: PushArchiveOptions = {}): Promise<Plan> {
  const plan = new PlanBuilder();
  await eachTarget(file, o, true, (name, r) => plan.add(repositoryName(parseReference(name)), name, r));
  return plan.build('push');
}

/** Copies (or plans) every named image of the archive to where it goes. */
async function eachTarget(file: string, o: PushArchiveOptions, dryRun: boolean, done: (name: string, r: CopyReport) => void): Promise<void> {
  const source = await ArchiveSource.open(file, { signal: o.signal });
  try {
    const images = source.images();
    if (images.length === 0) throw new FerryError('INVALID_INPUT', `${file} holds no images`);
    for (const img of images) {
      const names = img.names.filter((n) => n.name);
      if (names.length === 0) {
        throw new FerryError('USAGE', `an image of ${file} (${img.ref}) has no repository name to push it under`, {
          hint: 'load it with ferry load --tag NAME:TAG, then ferry push NAME:TAG',
        });
      }
      const root = await source.resolve(img.ref);
      for (const n of names) {
        const target = mapOntoPrefix(parseReference(n.name!), o.prefix);
        const repo = openRepository(target, o.registry);
        const name = formatReference({ domain: target.domain, path: target.path, tag: target.tag });
        const r = await copy(source, repo, [{ ref: root.digest, names: [{ tag: target.tag!, name }] }], {
          platforms: 'all',
          signal: o.signal,
          onEvent: o.onEvent,
          concurrency: o.jobs,
          dryRun,
        });
        done(name, r);
      }
    }
  } finally {
    await source.close();
  }
}
