import { createHash, randomUUID, type Hash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { publishBytes, syncDir } from '../blob/publish.js';
import { algorithmOf, encodedOf, type Algorithm, type Digest } from '../oci/digest.js';
import { digestInvalid, RegistryError, uploadUnknown } from './errors.js';
import type { RepoKey } from './names.js';
import { mkdirs } from '../util/mkdirs.js';

/*
 * Upload sessions live on disk, in <store>/.ferry-uploads/<uuid>/: `data` (the bytes received so
 * far) and `state.json` ({key, offset}). `offset` is written only after the data up to it is
 * fsynced, so after a crash or restart the session resumes from it (extra bytes are cut off). The
 * SHA-256 of the data is kept running in memory while the server lives; after a restart it is
 * recomputed once from the file. A finished upload is verified, then its data file is renamed
 * into blobs/ (same filesystem: fsync, rename, fsync of the directory) - never published unverified.
 */

export const UPLOADS_DIR = '.ferry-uploads';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const WRITE_BATCH = 1 << 20;

interface State {
  key: RepoKey;
  offset: number;
  started: string;
}

export class Session {
  hash?: Hash;
  hashedTo = -1;
  /** Serialises requests that change a session (PATCH, PUT, DELETE); a status GET does not wait. */
  private chain: Promise<unknown> = Promise.resolve();
  /** Requests running or queued on the session: never purged or evicted while above 0. */
  busy = 0;
  /** When a request on the session last started or ended (ms since the epoch). */
  lastActive = Date.now();
  /** The offset last recorded in state.json: the data up to it is fsynced and applied. */
  durable: number;

  /** `owner`: the client that opened it (user or address); unknown for sessions of an earlier run. */
  constructor(readonly uuid: string, readonly dir: string, public state: State, readonly owner?: string) {
    this.durable = state.offset;
  }

  get data(): string {
    return join(this.dir, 'data');
  }

  get offset(): number {
    return this.state.offset;
  }

  /**
   * The offset a status request reports without waiting for the request in progress: only what
   * is durable. Bytes of a chunk still arriving are not counted (a chunk may yet be taken back).
   */
  get settled(): number {
    return this.busy > 0 ? this.durable : this.offset;
  }

  /** A request that does not queue (a status GET) still counts as activity. */
  touch(): void {
    this.lastActive = Date.now();
  }

  /** Set once finished or cancelled; requests queued behind that see an unknown upload. */
  closed = false;

  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    this.busy++;
    this.lastActive = Date.now();
    const guarded = (): Promise<T> => (this.closed ? Promise.reject(uploadUnknown(this.uuid)) : fn());
    const run = this.chain.then(guarded, guarded).finally(() => {
      this.busy--;
      this.lastActive = Date.now();
    });
    this.chain = run.catch(() => {});
    return run;
  }

  /** Writing requests (PATCH, final PUT) that entered and have not ended yet, oldest first. */
  private readonly writers = new Set<Writer>();

  /**
   * Registers a request that writes the session. Earlier ones whose body is still arriving are
   * aborted: a client only sends a new chunk or the final PUT after deciding the old one failed
   * (a connection that died without the server noticing), so the old request would only hold the
   * session until the idle timeout. `sending` tells whether the request still owes body bytes.
   */
  enter(sending: () => boolean): Writer {
    for (const w of this.writers) if (w.sending()) w.controller.abort(superseded());
    const w: Writer = { controller: new AbortController(), sending };
    this.writers.add(w);
    return w;
  }

  leave(w: Writer): void {
    this.writers.delete(w);
  }

  /** Resolves once the requests running or queued now have ended, or after `ms`, whichever comes first. */
  async settle(ms: number): Promise<void> {
    if (this.busy === 0) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.chain, new Promise<void>((ok) => (timer = setTimeout(ok, ms)))]);
    clearTimeout(timer);
  }

  idleFor(now: number): number {
    return this.busy > 0 ? 0 : now - this.lastActive;
  }
}

export interface Writer {
  /** Aborted when a newer request takes the session over. */
  controller: AbortController;
  sending: () => boolean;
}

/** The reason a superseded request is aborted; its connection is closed, no answer goes out. */
function superseded(): Error {
  return Object.assign(new Error('superseded by a newer request on the upload'), { code: 'ECONNRESET' });
}

/** How many unfinished uploads may exist, and when idle ones give way to new ones. */
export interface UploadLimits {
  /** Sessions one client (user, else address) may have open in this server's run. */
  perClient: number;
  /** Sessions on disk for the whole server: the last resort. */
  total: number;
  /** At a limit, sessions idle this long are deleted to make room before a 429. */
  evictIdleMs: number;
}

export const DEFAULT_UPLOAD_LIMITS: UploadLimits = { perClient: 100, total: 1000, evictIdleMs: 15 * 60_000 };

export interface AppendResult {
  received: number;
  /** Set when the body ended abnormally (client gone); what arrived is kept. */
  error?: unknown;
}

export class Uploads {
  private readonly sessions = new Map<string, Session>();

  constructor(readonly root: string, private readonly blobsDir: string, readonly limits: UploadLimits = DEFAULT_UPLOAD_LIMITS) {}

  /** Opens a session for `client` (a user name or an address), within the limits (429 beyond). */
  async create(key: RepoKey, client: string): Promise<Session> {
    await this.makeRoom(client);
    const uuid = randomUUID();
    const dir = join(this.root, uuid);
    const s = new Session(uuid, dir, { key, offset: 0, started: new Date().toISOString() }, client);
    // In the map before the first await: concurrent requests of the client count it.
    this.sessions.set(uuid, s);
    try {
      await mkdirs(dir);
      const fh = await open(join(dir, 'data'), 'wx', 0o644);
      await fh.close();
      await this.save(s);
    } catch (e) {
      await this.cancel(s);
      throw e;
    }
    return s;
  }

  /** Open sessions of `client` in this run. */
  openBy(client: string): Session[] {
    return [...this.sessions.values()].filter((s) => s.owner === client && !s.closed);
  }

  /**
   * Enforces the per-client and global limits. At a limit, sessions idle for `evictIdleMs` (the
   * client's own first) are deleted; a 429 only when that does not make room.
   */
  private async makeRoom(client: string): Promise<void> {
    const { perClient, total, evictIdleMs } = this.limits;
    if (this.openBy(client).length >= perClient) {
      const now = Date.now();
      for (const s of this.openBy(client)) if (s.idleFor(now) > evictIdleMs) await this.drop(s);
      if (this.openBy(client).length >= perClient) {
        throw tooMany(`you have ${perClient} unfinished uploads on this registry, the most one client may have; finish them, or cancel the ones you gave up (DELETE on the upload's URL), before starting more; uploads idle for ${duration(evictIdleMs)} make room for new ones`);
      }
    }
    if ((await this.count()) >= total) {
      await this.purge(evictIdleMs);
      if ((await this.count()) >= total) {
        throw tooMany(`the registry has ${total} unfinished uploads, the most it keeps; try again later (uploads idle for ${duration(evictIdleMs)} make room for new ones)`);
      }
    }
  }

  /** Deletes an idle session: closed at once, so a request arriving later finds it unknown. */
  private async drop(s: Session): Promise<void> {
    if (s.busy > 0 || s.closed) return;
    await this.cancel(s);
  }

  /** The session `id` of repository `key`, from memory or from disk (after a restart). */
  async get(id: string, key: RepoKey): Promise<Session> {
    if (!UUID.test(id)) throw uploadUnknown(id);
    let s = this.sessions.get(id);
    if (!s) {
      const dir = join(this.root, id);
      const text = await readFile(join(dir, 'state.json'), 'utf8').catch(() => undefined);
      const state = text === undefined ? undefined : parseState(text);
      if (!state) throw uploadUnknown(id);
      s = this.sessions.get(id) ?? new Session(id, dir, state);
      this.sessions.set(id, s);
    }
    if (s.state.key !== key) throw uploadUnknown(id);
    return s;
  }

  private async save(s: Session): Promise<void> {
    const offset = s.state.offset;
    await publishBytes(join(s.dir, 'state.json'), JSON.stringify(s.state));
    s.durable = offset;
  }

  /** Makes the running hash cover exactly the first `offset` bytes, re-reading the file if needed. */
  private async syncHash(s: Session): Promise<Hash> {
    if (s.hash && s.hashedTo === s.offset) return s.hash;
    const h = createHash('sha256');
    if (s.offset > 0) {
      for await (const chunk of createReadStream(s.data, { start: 0, end: s.offset - 1, highWaterMark: WRITE_BATCH })) h.update(chunk as Buffer);
    }
    s.hash = h;
    s.hashedTo = s.offset;
    return h;
  }

  /**
   * Appends a request body at the session's offset, hashing as it writes. If the body breaks off
   * (client gone, server shutting down), the bytes that arrived are kept and the offset recorded,
   * so the client can ask for the status and continue from there. A body that ends normally but
   * is not the `expected` size (its Content-Range) is taken back whole: the upload stays where it was.
   *
   * So is the body of a request aborted through `signal` (a newer request took the session over).
   * A status request meanwhile reports `start`, the durable offset (state.json moves only at the
   * end of an append), so the newer request continues from there. The 1 MiB batches this request
   * already wrote advanced the offset in memory only; a write still running when the abort comes
   * completes before this returns, and the file is then cut back to `start`, below which nothing
   * was written. The newer request runs only after that (requests on a session are serialised),
   * so none of the aborted chunk's bytes, whole or torn, can end up in the blob.
   */
  async append(s: Session, body: AsyncIterable<Buffer>, expected?: number, signal?: AbortSignal): Promise<AppendResult> {
    const hash = await this.syncHash(s);
    const start = s.offset;
    const before = expected === undefined && !signal ? undefined : hash.copy();
    const fh = await open(s.data, 'r+');
    let received = 0;
    let error: unknown;
    try {
      await fh.truncate(s.offset);
      let batch: Buffer[] = [];
      let batchBytes = 0;
      const flush = async (): Promise<void> => {
        if (batchBytes === 0) return;
        const buf = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batchBytes);
        batch = [];
        batchBytes = 0;
        let done = 0;
        while (done < buf.length) done += (await fh.write(buf, done, buf.length - done, s.offset + done)).bytesWritten;
        hash.update(buf);
        s.state.offset += buf.length;
        s.hashedTo = s.offset;
        received += buf.length;
      };
      try {
        for await (const chunk of body) {
          if (signal?.aborted) break;
          batch.push(chunk);
          batchBytes += chunk.byteLength;
          if (batchBytes >= WRITE_BATCH) await flush();
        }
      } catch (e) {
        error = e;
      }
      const aborted = signal?.aborted === true;
      if (aborted) error = signal!.reason;
      else await flush();
      if (before && (aborted || (expected !== undefined && error === undefined && received !== expected))) {
        await fh.truncate(start);
        s.state.offset = start;
        s.hash = before;
        s.hashedTo = start;
      }
      await fh.sync();
    } catch (e) {
      // A failed write leaves the offset where the data is known good; the running hash is dropped.
      s.hash = undefined;
      throw e;
    } finally {
      await fh.close();
      await this.save(s);
    }
    return error === undefined ? { received } : { received, error };
  }

  /**
   * Verifies the whole upload against `digest`; on a match the data file becomes the blob, on a
   * mismatch the session is deleted and nothing is published (DIGEST_INVALID).
   */
  async complete(s: Session, digest: Digest): Promise<void> {
    // Bytes past the recorded offset (a crash between write and state update) are not part of it.
    const fh = await open(s.data, 'r+');
    try {
      if ((await fh.stat()).size !== s.offset) {
        await fh.truncate(s.offset);
        await fh.sync();
      }
    } finally {
      await fh.close();
    }
    const alg = algorithmOf(digest);
    const actual = alg === 'sha256' ? `sha256:${(await this.syncHash(s)).copy().digest('hex')}` : await hashFile(s.data, alg);
    if (actual !== digest) {
      await this.cancel(s);
      throw digestInvalid(`upload content has digest ${actual} (${s.offset} bytes), not ${digest}; nothing was stored`, { expected: digest, actual, size: s.offset });
    }
    const dir = join(this.blobsDir, alg);
    await mkdirs(dir);
    await rename(s.data, join(dir, encodedOf(digest)));
    await syncDir(dir);
    await this.cancel(s);
  }

  async cancel(s: Session): Promise<void> {
    s.closed = true;
    this.sessions.delete(s.uuid);
    await rm(s.dir, { recursive: true, force: true });
  }

  async count(): Promise<number> {
    return (await readdir(this.root).catch(() => [] as string[])).filter((n) => UUID.test(n)).length;
  }

  /**
   * Deletes sessions untouched for `maxAgeMs` (abandoned uploads), those of this run by their last
   * request, others by the time of their state file; a session with a request in progress is kept.
   * Returns how many were deleted.
   */
  async purge(maxAgeMs: number): Promise<number> {
    let removed = 0;
    for (const name of await readdir(this.root).catch(() => [] as string[])) {
      if (!UUID.test(name)) continue;
      const known = this.sessions.get(name);
      if (known) {
        if (known.idleFor(Date.now()) <= maxAgeMs || known.closed) continue;
        await this.drop(known);
        removed++;
        continue;
      }
      const dir = join(this.root, name);
      const st = (await stat(join(dir, 'state.json')).catch(() => undefined)) ?? (await stat(dir).catch(() => undefined));
      if (!st || Date.now() - st.mtimeMs <= maxAgeMs || this.sessions.has(name)) continue;
      // A closed stand-in while the files go: a request for it meanwhile finds it unknown.
      const gone = new Session(name, dir, { key: '', offset: 0, started: '' });
      gone.closed = true;
      this.sessions.set(name, gone);
      await rm(dir, { recursive: true, force: true });
      this.sessions.delete(name);
      removed++;
    }
    return removed;
  }
}

function tooMany(message: string): RegistryError {
  return new RegistryError(429, 'TOOMANYREQUESTS', message, undefined, { 'Retry-After': '60' });
}

/** A limit in words: "15 min", "24 h", "2 s". */
export function duration(ms: number): string {
  if (ms >= 3600_000 && ms % 3600_000 === 0) return `${ms / 3600_000} h`;
  if (ms >= 60_000) return `${Math.round(ms / 60_000)} min`;
  return `${Math.round(ms / 1000)} s`;
}

function parseState(text: string): State | undefined {
  try {
    const v = JSON.parse(text) as Partial<State>;
    if (typeof v.key === 'string' && Number.isSafeInteger(v.offset) && (v.offset as number) >= 0) {
      return { key: v.key, offset: v.offset as number, started: String(v.started ?? '') };
    }
  } catch {
    // an unreadable state file: the session is unknown
  }
  return undefined;
}

async function hashFile(path: string, alg: Algorithm): Promise<string> {
  const h = createHash(alg);
  for await (const chunk of createReadStream(path, { highWaterMark: WRITE_BATCH })) h.update(chunk as Buffer);
  return `${alg}:${h.digest('hex')}`;
}

/** `Content-Range: <start>-<end>` (inclusive, no unit; "bytes " tolerated). */
export function parseContentRange(value: string): { start: number; end: number } | undefined {
  const m = /^(?:bytes[ =])?(\d+)-(\d+)$/.exec(value.trim());
  if (!m) return undefined;
  const start = Number(m[1]);
  const end = Number(m[2]);
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return undefined;
  return { start, end };
}

export function rangeNotSatisfiable(message: string, offset: number): RegistryError {
  return new RegistryError(416, 'RANGE_INVALID', message, { offset }, { Range: `0-${offset > 0 ? offset - 1 : 0}` });
}
