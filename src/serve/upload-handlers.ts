import { stat } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import type { Digest } from '../oci/digest.js';
import { digestParam, refresh } from './blobs.js';
import { RegistryError, uploadUnknown } from './errors.js';
import { countIn, send, uploadRange } from './http.js';
import { repoKeyFor } from './names.js';
import { parseContentRange, rangeNotSatisfiable, type Session } from './uploads.js';
import type { RepoRequest, ServeContext } from './context.js';

const uploadLocation = (r: RepoRequest, s: Session) => `/v2/${r.name}/blobs/uploads/${s.uuid}`;
const blobLocation = (r: RepoRequest, d: Digest) => `/v2/${r.name}/blobs/${d}`;

function sessionHeaders(r: RepoRequest, s: Session, offset = s.offset): Record<string, string> {
  return { Location: uploadLocation(r, s), Range: uploadRange(offset), 'Docker-Upload-UUID': s.uuid };
}

function created(r: RepoRequest, digest: Digest): void {
  send(r.req, r.res, 201, { Location: blobLocation(r, digest), 'Docker-Content-Digest': digest });
}

/** A blob the store holds (its mtime refreshed: gc spares blobs touched while a writer runs). */
async function present(ctx: ServeContext, digest: Digest): Promise<boolean> {
  const path = ctx.layout.blobPath(digest);
  const st = await stat(path).catch(() => undefined);
  if (!st?.isFile()) return false;
  refresh(ctx, digest, path);
  return true;
}

function hasBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return length !== undefined ? length !== '0' : req.headers['transfer-encoding'] !== undefined;
}

/**
 * The chunk a PATCH or final PUT announces with Content-Range must start where the upload stands
 * (416 otherwise, with the current Range), and agree with Content-Length.
 */
function checkRange(req: IncomingMessage, s: Session): number | undefined {
  const header = req.headers['content-range'];
  if (header === undefined) return undefined;
  const range = parseContentRange(header);
  if (!range) throw rangeNotSatisfiable(`invalid Content-Range ${JSON.stringify(header)}: expected <start>-<end>`, s.offset);
  if (range.start !== s.offset) {
    throw rangeNotSatisfiable(`Content-Range starts at ${range.start} but the upload has ${s.offset} bytes; continue from ${s.offset}`, s.offset);
  }
  const length = range.end - range.start + 1;
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) !== length) {
    throw new RegistryError(400, 'SIZE_INVALID', `Content-Range ${header} is ${length} bytes but Content-Length is ${declared}`, { offset: s.offset });
  }
  return length;
}

/** Appends the request body; a body cut short by the client is kept and reported as an error. */
async function receive(ctx: ServeContext, r: RepoRequest, s: Session, expected: number | undefined, signal?: AbortSignal): Promise<void> {
  const result = await ctx.uploads.append(s, r.req, expected, signal);
  countIn(r.req, result.received);
  if (result.error !== undefined) throw result.error;
  if (expected !== undefined && result.received !== expected) {
    const message = `chunk announced ${expected} bytes but ${result.received} arrived; it was not applied, the upload stays at ${s.offset} bytes`;
    throw new RegistryError(400, 'SIZE_INVALID', message, { offset: s.offset }, sessionHeaders(r, s));
  }
}

/** POST /v2/<name>/blobs/uploads/[?digest=|?mount=&from=] */
export async function startUpload(ctx: ServeContext, r: RepoRequest): Promise<void> {
  const q = r.url.searchParams;
  const mount = q.get('mount');
  if (mount !== null) {
    const digest = digestParam(mount, 'mount');
    const from = q.get('from');
    if (from !== null) repoKeyFor(from);
    // Blobs are global in the store, so a mount succeeds for any blob it has.
    if (await present(ctx, digest)) return created(r, digest);
  }
  const digestText = q.get('digest');
  const digest = digestText === null ? undefined : digestParam(digestText);
  const s = await ctx.uploads.create(r.key, r.client);
  if (digest === undefined) {
    r.req.resume();
    return send(r.req, r.res, 202, { ...sessionHeaders(r, s), 'Content-Length': 0 });
  }
  await s.exclusive(async () => {
    try {
      await receive(ctx, r, s, undefined);
    } catch (e) {
      await ctx.uploads.cancel(s);
      throw e;
    }
    await ctx.uploads.complete(s, digest);
    created(r, digest);
  });
}

/**
 * Runs a PATCH or final PUT on its session, after cutting off earlier ones whose body is still
 * arriving (see Session.enter; what they wrote is taken back in Uploads.append). A request cut
 * off in its turn has its connection closed: its client is presumed gone.
 */
async function writing(s: Session, r: RepoRequest, fn: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const writer = s.enter(() => !r.req.complete);
  const { signal } = writer.controller;
  signal.addEventListener('abort', () => r.req.destroy(signal.reason as Error), { once: true });
  try {
    await s.exclusive(async () => {
      signal.throwIfAborted();
      await fn(signal);
    });
  } finally {
    s.leave(writer);
  }
}

/** PATCH /v2/<name>/blobs/uploads/<uuid>: a chunk (Content-Range) or a streamed body. */
export async function patchUpload(ctx: ServeContext, r: RepoRequest, id: string): Promise<void> {
  const s = await ctx.uploads.get(id, r.key);
  await writing(s, r, async (signal) => {
    const expected = checkRange(r.req, s);
    await receive(ctx, r, s, expected, signal);
    send(r.req, r.res, 202, sessionHeaders(r, s));
  });
}

/** PUT /v2/<name>/blobs/uploads/<uuid>?digest=: optional last chunk, then verify and publish. */
export async function finishUpload(ctx: ServeContext, r: RepoRequest, id: string): Promise<void> {
  const text = r.url.searchParams.get('digest');
  if (text === null) throw new RegistryError(400, 'DIGEST_INVALID', 'closing an upload needs ?digest=<digest of the whole blob>');
  const digest = digestParam(text);
  const s = await ctx.uploads.get(id, r.key);
  await writing(s, r, async (signal) => {
    const expected = checkRange(r.req, s);
    if (hasBody(r.req)) await receive(ctx, r, s, expected, signal);
    await ctx.uploads.complete(s, digest);
    created(r, digest);
  });
}

/** How long a status GET waits for a request in progress on its session before answering without it. */
const STATUS_GRACE_MS = 200;

/**
 * GET /v2/<name>/blobs/uploads/<uuid>: how many bytes arrived (204 + Range), answered promptly.
 *
 * It does not queue behind a request still running on the session: a client back after a network
 * outage asks here while its old PATCH, on a connection the server has not yet seen die, may hold
 * the session until the idle timeout. A short grace lets a request whose client just hung up (the
 * common case, noticed at once) finish and be counted. Past it the answer is the durable offset,
 * without the bytes of the chunk still arriving. The status itself aborts nothing (a client may
 * ask while its own PATCH runs); the client's next PATCH or PUT from that offset cuts the old
 * request off and takes its bytes back (see `writing`), so it proceeds at once. Should the old
 * PATCH complete first, the new one is refused with 416 and the new Range, and the client asks again.
 */
export async function uploadStatus(ctx: ServeContext, r: RepoRequest, id: string): Promise<void> {
  const s = await ctx.uploads.get(id, r.key);
  await s.settle(STATUS_GRACE_MS);
  if (s.closed) throw uploadUnknown(id);
  s.touch();
  send(r.req, r.res, 204, sessionHeaders(r, s, s.settled));
}

/** DELETE /v2/<name>/blobs/uploads/<uuid> */
export async function cancelUpload(ctx: ServeContext, r: RepoRequest, id: string): Promise<void> {
  const s = await ctx.uploads.get(id, r.key);
  // A client giving up on an upload does not wait behind its own stale PATCH either.
  await writing(s, r, async () => {
    await ctx.uploads.cancel(s);
    send(r.req, r.res, 204);
  });
}
