import { createReadStream } from 'node:fs';
import { stat, utimes } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { parseDigest, type Digest } from '../oci/digest.js';
import { blobUnknown, digestInvalid, RegistryError, unsupported } from './errors.js';
import { send } from './http.js';
import type { RepoRequest, ServeContext } from './context.js';

/** A digest from a URL or query, validated before any use (DIGEST_INVALID otherwise). */
export function digestParam(value: string | null | undefined, what = 'digest'): Digest {
  try {
    return parseDigest(value ?? undefined, what === 'digest' ? undefined : `the ${what} parameter`);
  } catch (e) {
    throw digestInvalid((e as Error).message, { [what]: value ?? null });
  }
}

/**
 * GET/HEAD /v2/<name>/blobs/<digest>. Blobs are global in the store (one layout): any blob the
 * store holds is served under any repository name, like a single-tenant cache.
 */
export async function getBlob(ctx: ServeContext, r: RepoRequest, ref: string): Promise<void> {
  const digest = digestParam(ref);
  const path = ctx.layout.blobPath(digest);
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) throw blobUnknown(digest);
  if (!ctx.readOnly) refresh(ctx, digest, path);
  const size = st.size;
  const headers: Record<string, string | number> = {
    'Content-Type': 'application/octet-stream',
    'Docker-Content-Digest': digest,
    'Accept-Ranges': 'bytes',
    ETag: `"${digest}"`,
    'Cache-Control': 'max-age=31536000',
  };
  const range = parseRange(r.req.headers.range, size);
  if (range === 'unsatisfiable') {
    throw new RegistryError(416, 'RANGE_INVALID', `range ${r.req.headers.range} is outside blob ${digest} of ${size} bytes`, { size }, { 'Content-Range': `bytes */${size}` });
  }
  const { start, end } = range ?? { start: 0, end: size - 1 };
  const status = range ? 206 : 200;
  if (range) headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
  headers['Content-Length'] = end - start + 1;
  if (r.req.method === 'HEAD' || size === 0) {
    send(r.req, r.res, status, headers);
    return;
  }
  r.res.writeHead(status, headers);
  await pipeline(createReadStream(path, { start, end, highWaterMark: 1 << 20 }), r.res);
}

/** Refreshes a blob's mtime at most this often. */
const REFRESH_MS = 60_000;

/**
 * A pushing client that finds a blob here (HEAD 200) skips its upload and relies on it until its
 * manifest arrives: the blob's mtime is set to now, so `ferry gc` spares it as it spares blobs
 * written while a writer runs. In the background, best effort, once a minute per blob at most.
 */
export function refresh(ctx: ServeContext, digest: Digest, path: string): void {
  const now = Date.now();
  const last = ctx.refreshed.get(digest);
  if (last !== undefined && now - last < REFRESH_MS) return;
  if (ctx.refreshed.size >= 10_000) {
    for (const [d, t] of ctx.refreshed) if (now - t >= REFRESH_MS) ctx.refreshed.delete(d);
  }
  ctx.refreshed.set(digest, now);
  const at = new Date(now);
  utimes(path, at, at).catch(() => {});
}

/** DELETE /v2/<name>/blobs/<digest>: not offered; blobs nothing references are removed by `ferry gc`. */
export async function deleteBlob(_ctx: ServeContext, _r: RepoRequest, ref: string): Promise<void> {
  digestParam(ref);
  throw unsupported('ferry serve does not delete blobs over the API: delete the manifests or tags, then run `ferry gc` on the store');
}

/**
 * One `Range: bytes=a-b` / `bytes=a-` / `bytes=-n`. Several ranges or a malformed header are
 * ignored (the whole blob is sent, as HTTP allows); a start beyond the end is unsatisfiable.
 */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | undefined {
  if (!header || size === 0) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const n = Number(m[2]);
    if (n === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (!Number.isSafeInteger(start) || start >= size) return 'unsatisfiable';
  if (end < start) return undefined;
  return { start, end };
}
