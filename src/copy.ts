import { Readable } from 'node:stream';
import { forEachLimited } from './util/limit.js';
import { explainDiskFull } from './util/space.js';
import { FerryError, isFerryError } from './errors.js';
import { warn } from './log.js';
import { verifying } from './blob/verify.js';
import { readConfig } from './images.js';
import { walk, type GraphNode } from './graph.js';
import { digestOf, type Digest } from './oci/digest.js';
import { plainDescriptor, type Descriptor, type ImageIndex, type Platform } from './oci/manifest.js';
import { formatPlatform, isAttestation, normalizePlatform, selectPlatforms, servesPlatform, type PlatformSelection } from './oci/platform.js';
import type { Sink, Source, TagName } from './types.js';

const BLOB_ATTEMPTS = 3;

/** Annotation on a root whose platforms were narrowed: the digest of the index it came from. */
export const ANNOTATION_SOURCE_INDEX = 'dev.ferry.source.index.digest';

export interface Root {
  /** Tag, name or digest at the source. */
  ref: string;
  /** Names to give the copied root at the destination (none: stored untagged). */
  names?: TagName[];
  /** Annotations for the root's entry at the destination (what an earlier copy recorded there). */
  annotations?: Record<string, string>;
  /** How messages name the image (`registry/repo:tag`); default `ref`, which may be a bare tag. */
  label?: string;
}

export type CopyEvent =
  | { type: 'resolved'; ref: string; digest: Digest; mediaType: string }
  /** Once per copy, before any blob moves: what it will look at (progress totals and ETA). */
  | { type: 'queued'; blobs: number; bytes: number }
  | { type: 'blob-skip'; digest: Digest; size: number }
  | { type: 'blob-start'; digest: Digest; size: number }
  | { type: 'blob-progress'; digest: Digest; bytes: number; size: number }
  | { type: 'blob-done'; digest: Digest; size: number }
  | { type: 'blob-mount'; digest: Digest; size: number }
  | { type: 'blob-retry'; digest: Digest; attempt: number; reason: string }
  | { type: 'manifest'; digest: Digest; skipped: boolean }
  | { type: 'tagged'; name: string; digest: Digest };

export interface CopyOptions {
  /** Default: every platform. */
  platforms?: PlatformSelection;
  /**
   * A single-platform image for another platform than `platforms` is copied anyway, as docker
   * pulls one for its host by default. Otherwise an explicit choice refuses it.
   */
  anyPlatformOfSingle?: boolean;
  /** Also copy the manifests that refer to the copied ones (signatures, SBOMs, attestations). */
  referrers?: boolean;
  /** Plan only: read manifests, ask the destination what it has, move nothing. */
  dryRun?: boolean;
  /** Blobs the far side already has (an inventory): treated as present, never copied (configs excepted). */
  exclude?: ReadonlySet<Digest>;
  /** How a referrer found under a tag (cosign's `sha256-<hex>.sig`) is named at the destination. */
  nameReferrerTag?: (tag: string) => TagName | undefined;
  /** Blobs in flight at once. */
  concurrency?: number;
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
}

export interface CopiedImage {
  ref: string;
  /** What the destination holds: for an index narrowed to some platforms, not the source's digest. */
  digest: Digest;
  /** The index it was narrowed from (what `NAME@DIGEST` names at the source), when that differs. */
  source?: Digest;
  mediaType: string;
  platforms: string[];
  names: TagName[];
  /** Set for a referrer carried by `referrers`: the manifest it refers to. */
  subject?: Digest;
  /** A referrer's artifact type (its `artifactType`, else its config's media type), when known. */
  artifactType?: string;
}

/** In a dry run, what would happen to each blob: sent, already at the destination, or left out (an inventory has it). */
export type BlobFate = 'move' | 'present' | 'excluded';

export interface CopyReport {
  images: CopiedImage[];
  blobs: { copied: number; skipped: number; mounted: number; bytesCopied: number; bytesSkipped: number };
  manifests: { copied: number; skipped: number };
  /** Dry runs only: every blob and manifest once, with its fate (plan.ts merges these across copies). */
  planned?: Array<{ digest: Digest; size: number; fate: BlobFate; manifest?: true }>;
}

interface Planned {
  root: Root;
  /** The descriptor that ends up as the root at the destination. */
  target: Descriptor;
  /** Manifests to store, children before parents, with their exact bytes. */
  documents: Array<{ descriptor: Descriptor; bytes: Uint8Array }>;
  blobs: Descriptor[];
  platforms: string[];
  /** The source index this copy narrowed to some of its platforms. */
  narrowed?: Digest;
  /** The config of a root that is a single manifest (its platform is named only there). */
  config?: Descriptor;
  /** A referrer's subject and artifact type (planReferrers). */
  referrer?: { subject: Digest; artifactType?: string };
}

/**
 * Copies the descriptor graphs of `roots` from `src` to `dst`: blobs first (verified, bounded
 * concurrency, skipping what the sink has), then manifests bottom-up, then the names, committed
 * last. If anything fails, nothing is named: the destination never references a missing blob.
 */
export async function copy(src: Source, dst: Sink, roots: Root[], opts: CopyOptions = {}): Promise<CopyReport> {
  const emit = opts.onEvent ?? (() => {});
  const report: CopyReport = {
    images: [],
    blobs: { copied: 0, skipped: 0, mounted: 0, bytesCopied: 0, bytesSkipped: 0 },
    manifests: { copied: 0, skipped: 0 },
  };

  const plans: Planned[] = [];
  for (const root of roots) {
    opts.signal?.throwIfAborted();
    plans.push(await plan(src, root, opts));
  }
  if (opts.referrers && src.referrers) await planReferrers(src, plans, opts);

  const uniqueBlobs = new Map<Digest, Descriptor>();
  for (const p of plans) for (const b of p.blobs) {
    const seen = uniqueBlobs.get(b.digest);
    if (seen && seen.size !== b.size) {
      throw new FerryError('INVALID_INPUT', `blob ${b.digest} is referenced with two sizes (${seen.size} and ${b.size})`);
    }
    uniqueBlobs.set(b.digest, b);
  }
  if (opts.dryRun) {
    await platformsFromConfigs(src, plans, opts);
    return dryRunReport(plans, [...uniqueBlobs.values()], dst, report, opts);
  }
  emit({ type: 'queued', blobs: uniqueBlobs.size, bytes: [...uniqueBlobs.values()].reduce((n, d) => n + d.size, 0) });
  const mountedBytes = { n: 0 };
  try {
    await copyContent(src, dst, plans, [...uniqueBlobs.values()], report, mountedBytes, opts);
  } catch (e) {
    // A full disk: say how much more the rest of the copy needs (blobs not yet stored, documents).
    let left = -(report.blobs.bytesCopied + report.blobs.bytesSkipped + mountedBytes.n);
    for (const d of uniqueBlobs.values()) left += d.size;
    for (const p of plans) for (const d of p.documents) left += d.bytes.byteLength;
    throw await explainDiskFull(e, { remaining: left });
  }

  await nameRoots(plans, dst, report, opts);
  return report;
}

/** Blobs (bounded concurrency, verified, continued where the sink kept a partial), then manifests bottom-up. */
async function copyContent(src: Source, dst: Sink, plans: Planned[], blobs: Descriptor[], report: CopyReport, mounted: { n: number }, opts: CopyOptions): Promise<void> {
  const emit = opts.onEvent ?? (() => {});
  // A sink that writes one stream (an archive) takes blobs one at a time; a source read as one
  // stream (a compressed archive) gives them one at a time.
  await forEachLimited(blobs, dst.caps.concurrent && !src.sequential ? (opts.concurrency ?? 4) : 1, async (d) => {
    opts.signal?.throwIfAborted();
    if (excluded(opts, d) || (await dst.has(d))) {
      report.blobs.skipped++;
      report.blobs.bytesSkipped += d.size;
      emit({ type: 'blob-skip', digest: d.digest, size: d.size });
      return;
    }
    if (dst.mount && (await dst.mount(d, { signal: opts.signal }))) {
      report.blobs.mounted++;
      mounted.n += d.size;
      emit({ type: 'blob-mount', digest: d.digest, size: d.size });
      return;
    }
    const reopen = (offset: number) => src.fetch(d, { signal: opts.signal, offset });
    for (let attempt = 1; ; attempt++) {
      // Bytes kept from an interrupted run are re-hashed by the sink; only the rest is fetched.
      const prefix = await dst.resumable?.(d, { signal: opts.signal });
      if (attempt === 1) emit({ type: 'blob-start', digest: d.digest, size: d.size, ...(prefix ? { resumeAt: prefix.offset } : {}) });
      const onBytes = (bytes: number) => emit({ type: 'blob-progress', digest: d.digest, bytes, size: d.size });
      const body = verifying(await src.fetch(d, { signal: opts.signal, offset: prefix?.offset }), d, src.label ? `blob ${d.digest} in ${src.label}` : `blob ${d.digest}`, onBytes, prefix);
      // A sink may read the body only later (a registry opens an upload first): an interrupt in
      // between must not be an unhandled stream error. put() reports the failure.
      body.on('error', () => {});
      try {
        await dst.put(d, body, { signal: opts.signal, reopen, resumeFrom: prefix?.offset });
        break;
      } catch (e) {
        // A transfer broken by the network is tried again (from what the sink kept); wrong content
        // once more (a flaky proxy), then it is an integrity failure.
        const network = isFerryError(e, 'NETWORK');
        const integrity = isFerryError(e, 'DIGEST_MISMATCH') || isFerryError(e, 'SIZE_MISMATCH');
        if (integrity && attempt >= 2 && src.label && !(e as FerryError).hint) {
          // Read twice, wrong twice: the copy there is damaged, not the transfer.
          throw new FerryError((e as FerryError).code, (e as FerryError).message, { cause: e, hint: `the copy in ${src.label} is damaged: ferry verify ${src.label} says what else is; get the image again from where it came` });
        }
        if (opts.signal?.aborted || !(network || integrity) || attempt >= (network ? BLOB_ATTEMPTS : 2)) throw e;
        emit({ type: 'blob-retry', digest: d.digest, attempt, reason: (e as Error).message });
      }
    }
    report.blobs.copied++;
    report.blobs.bytesCopied += d.size;
    emit({ type: 'blob-done', digest: d.digest, size: d.size });
  });

  const storedDocs = new Set<Digest>();
  for (const p of plans) {
    for (const { descriptor, bytes } of p.documents) {
      if (storedDocs.has(descriptor.digest)) continue;
      storedDocs.add(descriptor.digest);
      opts.signal?.throwIfAborted();
      if (await dst.has(descriptor)) {
        report.manifests.skipped++;
        emit({ type: 'manifest', digest: descriptor.digest, skipped: true });
        continue;
      }
      await dst.put(descriptor, verifying(Readable.from([Buffer.from(bytes)]), descriptor), { signal: opts.signal });
      report.manifests.copied++;
      emit({ type: 'manifest', digest: descriptor.digest, skipped: false });
    }
  }
}


/** Names every root and commits: the last step, so a failure before it leaves nothing named. */
async function nameRoots(plans: Planned[], dst: Sink, report: CopyReport, opts: CopyOptions): Promise<void> {
  for (const p of plans) {
    const names = p.root.names ?? [];
    if (names.length === 0) await dst.tag(p.target, undefined);
    for (const n of names) {
      await dst.tag(p.target, n);
      opts.onEvent?.({ type: 'tagged', name: n.name ?? n.tag, digest: p.target.digest });
    }
    report.images.push(copiedImage(p));
  }
  opts.signal?.throwIfAborted();
  await dst.commit();
}

function copiedImage(p: Planned): CopiedImage {
  return {
    ref: p.root.ref,
    digest: p.target.digest,
    ...(p.narrowed ? { source: p.narrowed } : {}),
    mediaType: p.target.mediaType,
    platforms: p.platforms,
    names: p.root.names ?? [],
    ...(p.referrer ? { subject: p.referrer.subject, ...(p.referrer.artifactType ? { artifactType: p.referrer.artifactType } : {}) } : {}),
  };
}

/** Reads every document of one root, applies platform selection and lists what must move. */
async function plan(src: Source, root: Root, opts: CopyOptions): Promise<Planned> {
  const resolved = await src.resolve(root.ref);
  opts.onEvent?.({ type: 'resolved', ref: root.ref, digest: resolved.digest, mediaType: resolved.mediaType });
  const wanted = opts.platforms ?? 'all';
  const documents: Planned['documents'] = [];
  const blobs: Descriptor[] = [];
  const platforms = new Set<string>();
  const foreign = new Set<Digest>();
  let topSelection: Descriptor[] | undefined;

  const choose = (n: GraphNode): Descriptor[] => {
    if (n.doc.kind !== 'index') return [];
    const all = n.doc.index.manifests;
    if (wanted === 'all' || n.depth > 0) return all;
    // Nested indexes without a platform are searched too: flatten one level of candidates.
    const label = root.label ?? root.ref;
    const where = label === n.descriptor.digest ? label : `${label} (${n.descriptor.digest})`;
    topSelection = selectPlatforms(all, wanted, where);
    return topSelection;
  };
  const order: GraphNode[] = [];
  await walk(
    src,
    resolved,
    {
      choose,
      onDocument: (n) => {
        order.push(n);
        if (n.doc.kind === 'manifest' && n.descriptor.platform) {
          if (!isAttestation(n.descriptor)) platforms.add(formatPlatform(normalizePlatform(n.descriptor.platform)));
        }
      },
      onBlob: (d) => {
        blobs.push(d);
      },
      onForeign: (d) => {
        if (foreign.has(d.digest)) return;
        foreign.add(d.digest);
        warn(`${root.label ?? root.ref}: layer ${d.digest} is a foreign layer (downloaded from ${urlHost(d.urls![0]!)} by whoever runs the image): the manifest is copied, the layer is not`);
      },
    },
    { signal: opts.signal },
  );
  // Parents were visited first; store children first.
  for (const n of order.slice().reverse()) documents.push({ descriptor: plainDescriptor(n.descriptor), bytes: n.doc.bytes });

  let target: Descriptor = plainDescriptor(resolved);
  const rootDoc = order[0]!.doc;
  if (rootDoc.kind === 'index' && topSelection && wanted !== 'all') {
    const index = rootDoc.index;
    if (topSelection.length === 1) {
      // One platform: the image is that manifest, as docker stores it; remember where it came from.
      target = { ...plainDescriptor(topSelection[0]!), annotations: { [ANNOTATION_SOURCE_INDEX]: resolved.digest } };
      documents.pop();
    } else if (topSelection.length < index.manifests.length) {
      // Several platforms: a new index listing only those, so no entry points at a missing blob.
      const subset: ImageIndex = { ...index, manifests: topSelection };
      const bytes = Buffer.from(JSON.stringify(subset));
      const d: Descriptor = { mediaType: rootDoc.mediaType, digest: digestOf(bytes), size: bytes.byteLength };
      documents.pop();
      documents.push({ descriptor: d, bytes });
      target = { ...d, annotations: { [ANNOTATION_SOURCE_INDEX]: resolved.digest } };
    }
  }
  if (root.annotations) target = { ...target, annotations: { ...root.annotations, ...target.annotations } };
  const narrowed = target.digest !== resolved.digest ? resolved.digest : undefined;
  const config = rootDoc.kind === 'manifest' ? rootDoc.manifest.config : undefined;
  if (config && wanted !== 'all' && !opts.anyPlatformOfSingle) {
    const single = await platformOf(src, config, opts);
    if (single) {
      refuseOtherPlatform(single, wanted, root.label ?? root.names?.[0]?.name ?? root.ref);
      platforms.add(formatPlatform(single));
    }
  }
  return { root, target, documents, blobs, platforms: [...platforms], narrowed, config };
}

/** The platform a single manifest's config names; undefined for an artifact (its config is no image config). */
async function platformOf(src: Source, config: Descriptor, opts: CopyOptions): Promise<Platform | undefined> {
  const c = await readConfig(src, config).catch((e: unknown) => {
    if (opts.signal?.aborted) throw e;
    return undefined;
  });
  return c?.os && c.architecture ? normalizePlatform({ os: c.os, architecture: c.architecture, variant: c.variant }) : undefined;
}

/** `--platform linux/arm64` of an amd64-only image: refused as inspect and export refuse it, not copied as if it matched. */
function refuseOtherPlatform(has: Platform, wanted: Platform[], label: string): void {
  if (wanted.every((w) => servesPlatform(has, w))) return;
  throw new FerryError('NOT_FOUND', `${label} is a single-platform image for ${formatPlatform(has)}, not ${wanted.map(formatPlatform).join(',')}`, {
    hint: 'choose its platform, or --platform all',
  });
}

/**
 * A plan shows each image's platforms. A single manifest names its platform only in its config:
 * read it (small) for dry runs; a real copy leaves this out rather than fetch the config twice.
 */
async function platformsFromConfigs(src: Source, plans: Planned[], opts: CopyOptions): Promise<void> {
  for (const p of plans) {
    if (p.platforms.length > 0 || !p.config) continue;
    // A plan without the platform is still a plan (an artifact's config is no image config); the copy itself reports a bad one.
    const single = await platformOf(src, p.config, opts);
    if (single) p.platforms.push(formatPlatform(single));
  }
}

/** Delta copies leave out blobs the far side has; configs always travel (they are small and name the image). */
function excluded(opts: CopyOptions, d: Descriptor): boolean {
  return opts.exclude !== undefined && opts.exclude.has(d.digest) && !/\.config\.|container\.image\.v1\+json$/.test(d.mediaType);
}

/**
 * What a copy would move: blobs and bytes to copy or skip, manifests, images; nothing is written.
 * A sink that can measure (an archive being planned) is walked through the same steps, in the
 * same order, as a real copy, with reserve() in place of put().
 */
async function dryRunReport(plans: Planned[], blobs: Descriptor[], dst: Sink, report: CopyReport, opts: CopyOptions): Promise<CopyReport> {
  const fates = new Map<Digest, BlobFate>();
  await forEachLimited(blobs, dst.caps.concurrent ? (opts.concurrency ?? 4) : 1, async (d) => {
    opts.signal?.throwIfAborted();
    const fate: BlobFate = excluded(opts, d) ? 'excluded' : (await dst.has(d)) ? 'present' : 'move';
    fates.set(d.digest, fate);
    if (fate === 'move') {
      report.blobs.copied++;
      report.blobs.bytesCopied += d.size;
      await dst.reserve?.(d);
    } else {
      report.blobs.skipped++;
      report.blobs.bytesSkipped += d.size;
    }
  });
  report.planned = blobs.map((d) => ({ digest: d.digest, size: d.size, fate: fates.get(d.digest)! }));
  const docs = new Map(plans.flatMap((p) => p.documents.map((d) => [d.descriptor.digest, d] as const)));
  for (const { descriptor, bytes } of docs.values()) {
    const present = await dst.has(descriptor);
    report.planned.push({ digest: descriptor.digest, size: descriptor.size, fate: present ? 'present' : 'move', manifest: true });
    if (present) report.manifests.skipped++;
    else {
      report.manifests.copied++;
      await dst.reserve?.(descriptor, bytes);
    }
  }
  if (dst.reserve) await nameRoots(plans, dst, report, { ...opts, onEvent: undefined });
  else report.images.push(...plans.map(copiedImage));
  return report;
}

/**
 * Adds every referrer of every copied manifest as an extra root (two levels: a signature of an
 * attestation is carried too). Referrers found under a tag keep that tag.
 */
async function planReferrers(src: Source, plans: Planned[], opts: CopyOptions): Promise<void> {
  const planned = new Set(plans.flatMap((p) => p.documents.map((d) => d.descriptor.digest)));
  let subjects = plans.flatMap((p) => p.documents.map((d) => d.descriptor));
  for (let level = 0; level < 2 && subjects.length > 0; level++) {
    const next: Descriptor[] = [];
    for (const subject of subjects) {
      for (const r of await src.referrers!(subject, { signal: opts.signal })) {
        if (planned.has(r.descriptor.digest)) continue;
        planned.add(r.descriptor.digest);
        const name = r.tag ? opts.nameReferrerTag?.(r.tag) : undefined;
        const p = await plan(src, { ref: r.descriptor.digest, names: name ? [name] : [] }, { ...opts, platforms: 'all' });
        p.referrer = { subject: subject.digest, artifactType: r.descriptor.artifactType ?? artifactTypeOf(p) };
        plans.push(p);
        next.push(...p.documents.map((d) => d.descriptor));
      }
    }
    subjects = next;
  }
}

/** What a referrer manifest says it is: `artifactType`, else its config's media type unless that is an image's. */
function artifactTypeOf(p: Planned): string | undefined {
  const root = p.documents.find((d) => d.descriptor.digest === p.target.digest);
  if (!root) return undefined;
  try {
    const doc = JSON.parse(Buffer.from(root.bytes).toString('utf8')) as { artifactType?: unknown; config?: { mediaType?: unknown } };
    if (typeof doc.artifactType === 'string') return doc.artifactType;
    const config = doc.config?.mediaType;
    const plain = ['application/vnd.oci.image.config.v1+json', 'application/vnd.docker.container.image.v1+json', 'application/vnd.oci.empty.v1+json'];
    return typeof config === 'string' && !plain.includes(config) ? config : undefined;
  } catch {
    return undefined;
  }
}

/** Only the host of a foreign layer's URL is printed: the rest may carry a signed token. */
function urlHost(u: string): string {
  try {
    return new URL(u).host || 'its URL';
  } catch {
    return 'its URL';
  }
}
