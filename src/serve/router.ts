import type { IncomingMessage, ServerResponse } from 'node:http';
import { isFerryError, toFerryError } from '../errors.js';
import type { Access, Auth } from './auth.js';
import { deleteBlob, getBlob } from './blobs.js';
import { RegistryError } from './errors.js';
import { sendError, sendJson } from './http.js';
import { listCatalog, listReferrers, listTags } from './listing.js';
import { deleteManifest, getManifest, putManifest } from './manifests.js';
import { repoKeyFor } from './names.js';
import { cancelUpload, finishUpload, patchUpload, startUpload, uploadStatus } from './upload-handlers.js';
import type { RepoRequest, ServeContext } from './context.js';

type Action = 'pull' | 'push' | 'delete';
type Handler = (ctx: ServeContext, r: RepoRequest, param: string) => Promise<void>;

interface Route {
  path: RegExp;
  methods: Partial<Record<string, [Handler, Action]>>;
}

// Repository names contain '/', so each route is matched from the end of the path, as distribution does.
const ROUTES: Route[] = [
  { path: /^\/v2\/(.+)\/manifests\/([^/]+)$/, methods: { GET: [getManifest, 'pull'], HEAD: [getManifest, 'pull'], PUT: [putManifest, 'push'], DELETE: [deleteManifest, 'delete'] } },
  { path: /^\/v2\/(.+)\/blobs\/uploads\/?()$/, methods: { POST: [startUpload, 'push'] } },
  {
    path: /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/,
    methods: { GET: [uploadStatus, 'push'], PATCH: [patchUpload, 'push'], PUT: [finishUpload, 'push'], DELETE: [cancelUpload, 'push'] },
  },
  { path: /^\/v2\/(.+)\/blobs\/([^/]+)$/, methods: { GET: [getBlob, 'pull'], HEAD: [getBlob, 'pull'], DELETE: [deleteBlob, 'delete'] } },
  { path: /^\/v2\/(.+)\/tags\/list()$/, methods: { GET: [listTags, 'pull'] } },
  { path: /^\/v2\/(.+)\/referrers\/([^/]+)$/, methods: { GET: [listReferrers, 'pull'] } },
];

export interface RouterOptions {
  auth?: Auth;
  /** Called once per request when it ends, with the user it ran as. */
  onDone?: (req: IncomingMessage, res: ServerResponse, user: string | undefined) => void;
}

/** Answers one request; never throws. */
export async function handle(ctx: ServeContext, opts: RouterOptions, req: IncomingMessage, res: ServerResponse): Promise<void> {
  let user: string | undefined;
  res.setHeader('Docker-Distribution-API-Version', 'registry/2.0');
  try {
    const url = new URL(req.url ?? '/', 'http://registry.invalid');
    const method = req.method ?? 'GET';
    const authorize = (needed: Access[]) => {
      if (opts.auth) user = opts.auth.authorize(req, needed);
    };
    const path = url.pathname;

    if (path === '/v2/' || path === '/v2') {
      if (method !== 'GET' && method !== 'HEAD') throw notAllowed(method);
      authorize([]);
      return sendJson(req, res, 200, {});
    }
    if (path === '/v2/_catalog') {
      if (method !== 'GET') throw notAllowed(method);
      authorize([{ type: 'registry', name: 'catalog', actions: ['*'] }]);
      return await listCatalog(ctx, req, res, url);
    }
    if (path === '/token') {
      if (!opts.auth?.tokens || method !== 'GET') throw new RegistryError(404, 'UNSUPPORTED', 'no token service here (ferry serve --token-auth offers one)');
      return opts.auth.tokenEndpoint(req, res, url);
    }
    for (const route of ROUTES) {
      const m = route.path.exec(path);
      if (!m) continue;
      const entry = route.methods[method];
      if (!entry) throw notAllowed(method);
      const [handler, action] = entry;
      const name = m[1]!;
      const key = repoKeyFor(name);
      const param = decodeParam(m[2]!);
      const needed: Access[] = [{ type: 'repository', name, actions: action === 'push' ? ['pull', 'push'] : [action] }];
      const from = method === 'POST' ? url.searchParams.get('from') : null;
      if (from !== null && url.searchParams.has('mount')) {
        repoKeyFor(from);
        needed.push({ type: 'repository', name: from, actions: ['pull'] });
      }
      authorize(needed);
      if (ctx.readOnly && action !== 'pull') throw new RegistryError(405, 'UNSUPPORTED', 'this registry is read-only (ferry serve --read-only)');
      return await handler(ctx, { req, res, url, name, key, client: user ?? req.socket.remoteAddress ?? '-' }, param);
    }
    throw new RegistryError(404, 'UNSUPPORTED', `no such endpoint: ${method} ${path.slice(0, 200)}`);
  } catch (e) {
    answerError(req, res, e);
  } finally {
    opts.onDone?.(req, res, user);
  }
}

function notAllowed(method: string): RegistryError {
  return new RegistryError(405, 'UNSUPPORTED', `method ${method} is not supported on this endpoint`);
}

function decodeParam(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Client-gone errors need no answer; unexpected ones are logged here and answered without details. */
function answerError(req: IncomingMessage, res: ServerResponse, e: unknown): void {
  if (e instanceof RegistryError) return sendError(req, res, e);
  const code = (e as NodeJS.ErrnoException)?.code;
  // Not req.destroyed: a request whose body was read whole is destroyed too (autoDestroy), and an
  // error after that (a PUT refused at the store) was answered by cutting the connection.
  if (req.socket?.destroyed || res.destroyed || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || (e as Error)?.message === 'aborted') {
    res.destroy();
    return;
  }
  if (isFerryError(e, 'LOCKED')) {
    return sendError(req, res, new RegistryError(503, 'UNAVAILABLE', 'the store is locked by another ferry process; try again', undefined, { 'Retry-After': '5' }));
  }
  const err = toFerryError(e);
  process.stderr.write(`ferry serve: error: ${req.method} ${sanitize(req.url ?? '')}: ${err.message}\n`);
  sendError(req, res, new RegistryError(500, 'UNKNOWN', 'internal error in the registry; see its log'));
}

/** Request lines in the log: printable ASCII only (no forged log lines). */
export function sanitize(text: string): string {
  return text.slice(0, 500).replace(/[^\x21-\x7e]/g, (c) => encodeURIComponent(c));
}
