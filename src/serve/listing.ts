import type { IncomingMessage, ServerResponse } from 'node:http';
import { MediaType } from '../oci/mediatypes.js';
import { digestParam } from './blobs.js';
import { nameUnknown } from './errors.js';
import { sendJson } from './http.js';
import { repositoryFor } from './names.js';
import type { RepoRequest, ServeContext } from './context.js';

/** Largest page served, whatever `n` asks for. */
export const MAX_PAGE = 1000;

interface Page {
  items: string[];
  /** The query of the next page, when there is one. */
  next?: URLSearchParams;
}

/**
 * `n`/`last` pagination over a sorted list: items after `last`, at most `n` (all when `n` is
 * absent, capped at MAX_PAGE); `next` is set only when more items follow.
 */
export function paginate(sorted: string[], url: URL): Page {
  const last = url.searchParams.get('last');
  const nText = url.searchParams.get('n');
  const requested = nText !== null && /^\d+$/.test(nText) ? Number(nText) : undefined;
  const start = last === null ? 0 : sorted.findIndex((t) => t > last);
  const rest = start === -1 ? [] : sorted.slice(start);
  const n = Math.min(requested ?? MAX_PAGE, MAX_PAGE);
  const items = rest.slice(0, n);
  if (items.length === 0 || rest.length <= items.length) return { items };
  const next = new URLSearchParams();
  next.set('n', String(n));
  next.set('last', items.at(-1)!);
  return { items, next };
}

function link(path: string, page: Page): Record<string, string> {
  return page.next ? { Link: `<${path}?${page.next.toString()}>; rel="next"` } : {};
}

/** GET /v2/<name>/tags/list[?n=&last=] */
export async function listTags(ctx: ServeContext, r: RepoRequest): Promise<void> {
  const entries = await ctx.view.entriesOf(r.key);
  if (entries.length === 0) throw nameUnknown(r.name);
  const tags = [...new Set(entries.map((e) => e.tag).filter((t): t is string => t !== undefined))].sort();
  const page = paginate(tags, r.url);
  sendJson(r.req, r.res, 200, { name: r.name, tags: page.items }, link(`/v2/${r.name}/tags/list`, page));
}

/** GET /v2/_catalog[?n=&last=]: every servable repository of the store. */
export async function listCatalog(ctx: ServeContext, req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
  const names = new Set<string>();
  for (const e of await ctx.view.entries()) {
    const name = repositoryFor(e.key);
    if (name !== undefined) names.add(name);
  }
  const page = paginate([...names].sort(), url);
  sendJson(req, res, 200, { repositories: page.items }, link('/v2/_catalog', page));
}

/** GET /v2/<name>/referrers/<digest>[?artifactType=]: manifests of the repository whose subject is <digest>. */
export async function listReferrers(ctx: ServeContext, r: RepoRequest, ref: string): Promise<void> {
  const subject = digestParam(ref);
  let manifests = await ctx.view.referrers(r.key, subject);
  const headers: Record<string, string> = {};
  const artifactType = r.url.searchParams.get('artifactType');
  if (artifactType !== null) {
    manifests = manifests.filter((m) => m.artifactType === artifactType);
    headers['OCI-Filters-Applied'] = 'artifactType';
  }
  sendJson(r.req, r.res, 200, { schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }, { ...headers, 'Content-Type': MediaType.OciIndex });
}
