import { ANNOTATION_SOURCE_INDEX, copy, type CopiedImage, type CopyEvent, type CopyReport, type Root } from './copy.js';
import { FerryError, isFerryError } from './errors.js';
import { PlanBuilder, type Plan } from './plan.js';
import { OciLayout } from './locations/layout.js';
import type { RegistrySettings } from './locations/location.js';
import { openRepository, registryClient } from './locations/registry/pool.js';
import { RegistryClient } from './locations/registry/client.js';
import { saveCredential, eraseCredential, type Credential } from './locations/registry/credentials.js';
import { Http } from './locations/registry/http.js';
import { paginate, type RegistryRepository } from './locations/registry/repository.js';
import { formatReference, parseReference, parseRepository, repositoryName, withoutDockerPrefix, type Reference } from './oci/reference.js';
import { hostPlatform, type PlatformSelection } from './oci/platform.js';
import type { Digest } from './oci/digest.js';
import { defaultStoreDir } from './store.js';
import { forEachLimited } from './util/limit.js';

export interface TransferOptions {
  /** Carry signatures, SBOMs and attestations that refer to the images. */
  referrers?: boolean;
  storeDir?: string;
  registry?: RegistrySettings;
  signal?: AbortSignal;
  onEvent?: (e: CopyEvent) => void;
  jobs?: number;
}

export interface PullOptions extends TransferOptions {
  /** Default: the host platform, like docker. */
  platforms?: PlatformSelection;
  allTags?: boolean;
}

/** The name a pulled tag gets in the store. */
function tagged(r: Reference, tag: string) {
  return { tag, name: formatReference({ domain: r.domain, path: r.path, tag }) };
}

/** `ferry pull`: registry -> store, by tag, by digest (verified against the bytes), or every tag. */
export async function pullImage(image: string, o: PullOptions = {}): Promise<CopyReport & { reference: string }> {
  // Every tag: a tag or digest given too would be ignored, so it is refused (as docker does).
  const ref = o.allTags ? parseRepository(withoutDockerPrefix(image), 'pull --all-tags:') : parseReference(withoutDockerPrefix(image));
  const repo = openRepository(ref, o.registry);
  const store = await OciLayout.open(o.storeDir ?? defaultStoreDir(), { create: true });
  try {
    let roots: Root[];
    if (o.allTags) {
      const tags = await repo.listTags({ signal: o.signal });
      if (tags.length === 0) throw new FerryError('NOT_FOUND', `${repositoryName(ref)} has no tags`);
      roots = tags.map((t) => ({ ref: t, names: [tagged(ref, t)], label: `${repositoryName(ref)}:${t}` }));
    } else if (ref.digest) {
      roots = [{ ref: ref.digest, names: ref.tag ? [tagged(ref, ref.tag)] : [], label: image }];
    } else {
      roots = [{ ref: ref.tag!, names: [tagged(ref, ref.tag!)], label: image }];
    }
    const report = await copy(repo, store, roots, {
      platforms: o.platforms ?? [hostPlatform()],
      anyPlatformOfSingle: o.platforms === undefined,
      signal: o.signal,
      onEvent: o.onEvent,
      concurrency: o.jobs,
      referrers: o.referrers,
      nameReferrerTag: (tag) => tagged(ref, tag),
    });
    return { ...report, reference: repositoryName(ref) };
  } finally {
    await store.close();
  }
}

export interface PushOptions extends TransferOptions {
  allTags?: boolean;
  /** Push under this name instead of the store name. */
  destination?: string;
  /** Plan only: ask the registry what it has, upload nothing (see planPush). */
  dryRun?: boolean;
}

/** `ferry push`: store -> registry; blobs the registry has are skipped, others mounted when possible. */
export async function pushImage(image: string, o: PushOptions = {}): Promise<CopyReport & { reference: string }> {
  const ref = o.allTags ? parseRepository(withoutDockerPrefix(image), 'push --all-tags:') : parseReference(withoutDockerPrefix(image));
  const dest = o.destination && withoutDockerPrefix(o.destination);
  const target = dest ? (o.allTags ? parseRepository(dest, 'push --all-tags: destination') : parseReference(dest)) : ref;
  const store = await OciLayout.open(o.storeDir ?? defaultStoreDir());
  const entries = await store.entries();
  let roots: NarrowableRoot[];
  if (o.allTags) {
    const repo = repositoryName(ref);
    const mine = entries.filter((e) => e.name && parseReference(e.name) && repositoryName(parseReference(e.name)) === repo && e.tag);
    if (mine.length === 0) throw new FerryError('NOT_FOUND', `no tags of ${repo} in the store ${store.dir}`);
    roots = mine.map((e) => ({ ref: e.descriptor.digest, names: [tagged(target, e.tag!)], narrowedFrom: e.descriptor.annotations?.[ANNOTATION_SOURCE_INDEX], storeName: e.name }));
  } else {
    const d = await store.resolve(withoutDockerPrefix(image), { store: true });
    // A destination without a tag keeps the image's own (as copy does), rather than "latest".
    const tag = dest && namesTag(dest) ? target.tag : ref.tag;
    roots = [{ ref: d.digest, names: tag ? [tagged(target, tag)] : [], narrowedFrom: d.annotations?.[ANNOTATION_SOURCE_INDEX] }];
  }
  const repo = openRepository(target, o.registry);
  await refuseNarrowing(repo, roots, image, o.signal);
  // Blobs of other repositories of the same registry can be mounted instead of uploaded.
  for (const e of entries) {
    const r = e.name ? safeParse(e.name) : undefined;
    if (r && r.domain === target.domain && r.path !== target.path) repo.addMountSource(r.path);
  }
  try {
    const report = await copy(store, repo, roots, {
      platforms: 'all', signal: o.signal, onEvent: o.onEvent, concurrency: o.jobs,
      referrers: o.referrers, nameReferrerTag: (tag) => tagged(target, tag), dryRun: o.dryRun,
    });
    return { ...report, reference: repositoryName(target) };
  } finally {
    await store.close();
  }
}

/** A root to push; storeName (push -a) names the store image in messages, where the argument is only its repository. */
type NarrowableRoot = Root & { narrowedFrom?: string; storeName?: string };

/**
 * A store image narrowed to some platforms of an index (pull's default) pushed back over the tag
 * that still holds that index would take the other platforms away from everyone who pulls it.
 */
async function refuseNarrowing(repo: RegistryRepository, roots: NarrowableRoot[], image: string, signal?: AbortSignal): Promise<void> {
  for (const r of roots) {
    if (!r.narrowedFrom) continue;
    for (const n of r.names ?? []) {
      if ((await repo.headDigest(n.tag, { signal, expected: r.narrowedFrom as Digest })) !== r.narrowedFrom) continue;
      throw new FerryError('USAGE', `${n.name ?? n.tag} holds the full index ${r.narrowedFrom}; the store has only some of its platforms (${r.storeName ?? image}, ${r.ref}), and pushing them would replace it`, {
        hint: `pull it with --platform all first, or push under another tag`,
      });
    }
  }
}

/** `ferry push --dry-run`: what would be uploaded; blobs a mount could bring count as uploads. */
export async function planPush(image: string, o: PushOptions = {}): Promise<Plan> {
  const r = await pushImage(image, { ...o, dryRun: true });
  const plan = new PlanBuilder();
  // Every tag: each image is listed as NAME:TAG, as a push of that one tag lists it.
  const source = o.allTags ? (i: CopiedImage) => (!i.subject && i.names[0] ? `${image}:${i.names[0].tag}` : image) : image;
  plan.add(r.reference, source, r);
  return plan.build('push');
}

/** Whether a reference's text names a tag itself (parseReference fills in "latest"). */
function namesTag(text: string): boolean {
  const name = text.split('@')[0]!;
  return name.lastIndexOf(':') > name.lastIndexOf('/');
}

function safeParse(name: string): Reference | undefined {
  try {
    return parseReference(name);
  } catch {
    return undefined;
  }
}

/** The registry part of a `ferry login` argument: a host, or a URL docker-style. */
export function serverDomain(server: string | undefined): string {
  if (!server) return 'docker.io';
  const host = server.replace(/^[a-z]+:\/\//i, '').replace(/\/.*$/, '').toLowerCase();
  return ['index.docker.io', 'registry-1.docker.io'].includes(host) ? 'docker.io' : host;
}

/** Checks credentials against the registry, then saves them; returns where they went. */
export async function login(server: string | undefined, cred: Credential, o: { registry?: RegistrySettings } = {}): Promise<string> {
  const domain = serverDomain(server);
  const http = new Http({ insecureTls: o.registry?.insecure, debug: o.registry?.debug, onRetry: o.registry?.onRetry });
  try {
    const client = new RegistryClient({ domain, http, plainHttp: o.registry?.insecure || o.registry?.plainHttp, credential: cred, login: true });
    const res = await client.request({ method: 'GET', path: '/v2/', scopes: [] }).catch((e: unknown) => {
      // The client's own hint would be "run ferry login": this is that run.
      if (isFerryError(e, 'AUTH')) throw new FerryError('AUTH', e.message, { cause: e, hint: 'check the user name and password; nothing was saved' });
      throw e;
    });
    await res.body.dump();
    if (res.status !== 200) throw new FerryError('AUTH', `${domain} answered HTTP ${res.status} to the login check`, { hint: 'nothing was saved' });
  } finally {
    await http.close();
  }
  return saveCredential(domain, cred);
}

/** Removes saved credentials; returns where from (config.json, a helper, auth.json files), empty if none. */
export async function logout(server: string | undefined): Promise<string[]> {
  return eraseCredential(serverDomain(server));
}

export async function listTags(repository: string, o: { registry?: RegistrySettings; signal?: AbortSignal; pageSize?: number } = {}): Promise<string[]> {
  const ref = parseRepository(withoutDockerPrefix(repository), 'ferry tags:');
  return openRepository(ref, o.registry).listTags({ signal: o.signal, pageSize: o.pageSize });
}

export async function listCatalog(server: string, o: { registry?: RegistrySettings; signal?: AbortSignal; pageSize?: number } = {}): Promise<string[]> {
  // serverDomain drops any path (login takes https://index.docker.io/v1/); a repository here is a mistake.
  if (!/^([a-z]+:\/\/)?[^/]+(\/(v[12]\/?)?)?$/i.test(server)) {
    throw new FerryError('USAGE', `ferry catalog takes a registry, not a repository: "${server}"`, { hint: `ferry tags ${server.replace(/^[a-z]+:\/\//i, '')} lists that repository's tags` });
  }
  const client = registryClient(serverDomain(server), o.registry);
  return paginate(client, `/v2/_catalog${o.pageSize ? `?n=${o.pageSize}` : ''}`, ['registry:catalog:*'], 'repositories', {
    signal: o.signal,
    notFound: `${client.domain} offers no catalog (GET /v2/_catalog: 404); list a repository's tags with ferry tags instead`,
  });
}

export interface RemoveResult {
  /** The manifest the reference named (a tag: the one it pointed at). */
  digest: Digest;
  /** `tag`: the registry deleted just the tag; `manifest`: the manifest went, with every tag on it. */
  removed: 'tag' | 'manifest';
  /** With `manifest`, the tags that went with it when ferry listed them (not for a digest given). */
  tags?: string[];
}

/** HEADs of the other tags of a repository, at most this many at once (as sync's tag checks). */
const TAG_CHECKS = 16;

/**
 * `ferry rm`. A digest: deletes that manifest, and with it every tag on it. A tag: deletes the
 * tag alone where the registry can (OCI distribution 1.1); where it cannot, deletes its manifest
 * by digest, but only when no other tag points at it, unless `force`.
 */
export async function removeRemote(image: string, o: { registry?: RegistrySettings; force?: boolean; signal?: AbortSignal } = {}): Promise<RemoveResult> {
  const ref = parseReference(withoutDockerPrefix(image));
  const repo = openRepository(ref, o.registry);
  if (ref.digest) {
    await repo.deleteManifest(ref.digest);
    return { digest: ref.digest, removed: 'manifest' };
  }
  const tag = ref.tag!;
  const named = `${repositoryName(ref)}:${tag}`;
  const digest = await repo.headDigest(tag, { signal: o.signal });
  if (!digest) throw new FerryError('NOT_FOUND', `${named} not found`, { hint: `ferry tags ${repositoryName(ref)} lists its tags` });
  const refusal = await repo.deleteTag(tag);
  if (refusal === undefined) return { digest, removed: 'tag' };
  const others = await tagsOn(repo, digest, tag, o.signal);
  if (others.length && !o.force) {
    // Deleting the manifest is what the registry would do, but not what was asked for. A 405 is
    // also what a registry with deletes turned off answers (distribution, ferry serve --read-only):
    // --force may then be refused too, and the message says so.
    const maybeNone = refusal.startsWith('HTTP 405');
    const why = maybeNone ? `the registry refused to delete the tag alone (${refusal}): it deletes only whole manifests, or nothing at all` : `the registry deletes only whole manifests (DELETE of the tag alone: ${refusal})`;
    throw new FerryError('USAGE', `${named}: its manifest ${digest} is also tagged ${others.join(', ')}, and ${why}; nothing was deleted`, {
      hint: `${maybeNone ? 'if it deletes manifests, ' : ''}ferry rm --force ${image} deletes the manifest and every tag on it, as ferry rm docker://${repositoryName(ref)}@${digest} does`,
    });
  }
  await repo.deleteManifest(digest);
  return { digest, removed: 'manifest', tags: [tag, ...others] };
}

/** The tags of a repository besides `except` that point at `digest` now. */
async function tagsOn(repo: RegistryRepository, digest: Digest, except: string, signal?: AbortSignal): Promise<string[]> {
  const tags = (await repo.listTags({ signal })).filter((t) => t !== except);
  const found = new Set<string>();
  await forEachLimited(tags, TAG_CHECKS, async (t) => {
    if ((await repo.headDigest(t, { signal, expected: digest })) === digest) found.add(t);
  });
  return tags.filter((t) => found.has(t));
}
