import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createSecureContext } from 'node:tls';
import { isIP, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { OciLayout } from '../locations/layout.js';
import { Auth } from './auth.js';
import type { ServeContext } from './context.js';
import { Htpasswd } from './htpasswd.js';
import { bytesIn } from './http.js';
import { handle, sanitize } from './router.js';
import { StoreView } from './store-view.js';
import { DEFAULT_UPLOAD_LIMITS, duration, Uploads, UPLOADS_DIR, type UploadLimits } from './uploads.js';

export interface ServeOptions {
  storeDir: string;
  /** HOST:PORT, [IPV6]:PORT or :PORT; port 0 picks a free one. Default 127.0.0.1:5000. */
  addr?: string;
  readOnly?: boolean;
  htpasswd?: string;
  tokenAuth?: boolean;
  tlsCert?: string;
  tlsKey?: string;
  /** Receives one line per request (the access log); none when absent. */
  accessLog?: (line: string) => void;
  /** Unfinished uploads idle for longer are deleted (default 24 h), checked every hour or half this time if less. */
  uploadMaxAgeMs?: number;
  uploadLimits?: Partial<UploadLimits>;
}

export interface RunningServer {
  url: string;
  host: string;
  port: number;
  /**
   * Stops accepting connections and waits up to `graceMs` for requests in progress. Past the
   * grace period their connections are cut (upload state stays on disk); `forced` tells.
   */
  close(graceMs: number): Promise<{ forced: boolean }>;
}

const DAY_MS = 24 * 3600_000;

export function parseAddr(text: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d+)$/.exec(text);
  const host = m ? (m[1] ?? (m[2] || '0.0.0.0')) : undefined;
  const port = m ? Number(m[3]) : NaN;
  if (host === undefined || !Number.isInteger(port) || port > 65535 || (m?.[1] && isIP(m[1]) !== 6)) {
    throw new FerryError('USAGE', `invalid --addr ${JSON.stringify(text)}: expected HOST:PORT, [IPV6]:PORT or :PORT`);
  }
  return { host, port };
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

const TLS_READ_ERRORS: Record<string, string> = { ENOENT: 'no such file or directory', EACCES: 'permission denied', EISDIR: 'is a directory' };

async function readTls(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = TLS_READ_ERRORS[code ?? ''];
    throw new FerryError(code === 'ENOENT' ? 'NOT_FOUND' : 'IO', `cannot read TLS ${what} ${path}: ${why ? `${why} (${code})` : (code ?? (e as Error).message)}`, {
      hint: code === 'ENOENT' ? `give the path of the PEM ${what} file (--tls-cert and --tls-key)` : code === 'EACCES' ? `the ${what} file must be readable by the user running ferry serve` : undefined,
    });
  }
}

/** Checked before anything is opened: a usage error naming the files when they are not a certificate and its key. */
function checkTlsPair(tls: { cert: Buffer; key: Buffer }, opts: ServeOptions): void {
  try {
    createSecureContext({ ...tls });
  } catch (e) {
    const why = (e as Error).message.replace(/^error:[0-9A-F]+:/, '');
    throw new FerryError('USAGE', `--tls-cert ${opts.tlsCert} and --tls-key ${opts.tlsKey} are not a PEM certificate and its private key (${why})`, {
      hint: 'the certificate starts with -----BEGIN CERTIFICATE-----, the key with -----BEGIN ... PRIVATE KEY-----; check they are not swapped',
    });
  }
}

/** The first byte of every TLS connection: a handshake record. */
const TLS_HANDSHAKE = 0x16;
/** How long a new connection may stay silent before it is dropped (like headersTimeout). */
const FIRST_BYTE_MS = 60_000;
/** How long a plain-http client gets to read the 400 and close its side. */
const PLAIN_LINGER_MS = 5_000;

/**
 * A plain-http client of the https server gets a 400 in plain http saying why (as distribution
 * does) instead of a dropped connection. So the TLS server's own connection handling (its
 * 'connection' listeners) runs only once the connection's first byte, put back for it to read,
 * says a TLS handshake begins; anything else is answered here and closed.
 */
function answerPlainHttpBeforeTls(server: Server): void {
  const tlsHandling = server.listeners('connection') as Array<(socket: Socket) => void>;
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const silent = () => socket.destroy();
    socket.on('error', () => socket.destroy());
    socket.setTimeout(FIRST_BYTE_MS, silent);
    socket.once('readable', () => {
      const first = socket.read() as Buffer | null;
      if (first === null) return socket.destroy();
      socket.setTimeout(0).off('timeout', silent);
      socket.unshift(first);
      if (first[0] === TLS_HANDSHAKE) for (const handle of tlsHandling) handle.call(server, socket);
      else answerPlainHttp(socket);
    });
  });
}

function answerPlainHttp(socket: Socket): void {
  const body = 'Client sent an HTTP request to an HTTPS server: this ferry serve speaks TLS; use https://\n';
  // Read what the client sends and let it close first: closing with unread bytes would reset the connection before the answer is read.
  socket.resume();
  socket.setTimeout(PLAIN_LINGER_MS, () => socket.destroy());
  socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
}

/** Starts `ferry serve`: an OCI distribution registry over the store at `storeDir`. */
export async function startServer(opts: ServeOptions): Promise<RunningServer> {
  const { host, port } = parseAddr(opts.addr ?? '127.0.0.1:5000');
  if (opts.tokenAuth && !opts.htpasswd) throw new FerryError('USAGE', '--token-auth needs --htpasswd FILE (the users the token service authenticates)');
  if (Boolean(opts.tlsCert) !== Boolean(opts.tlsKey)) throw new FerryError('USAGE', '--tls-cert and --tls-key go together');
  const tls = opts.tlsCert && opts.tlsKey ? { cert: await readTls(opts.tlsCert, 'certificate'), key: await readTls(opts.tlsKey, 'key') } : undefined;
  if (tls) checkTlsPair(tls, opts);
  const users = opts.htpasswd ? await Htpasswd.load(opts.htpasswd) : undefined;

  const layout = await OciLayout.open(opts.storeDir, { create: !opts.readOnly });
  const uploads = new Uploads(join(opts.storeDir, UPLOADS_DIR), join(opts.storeDir, 'blobs'), { ...DEFAULT_UPLOAD_LIMITS, ...opts.uploadLimits });
  const maxAge = opts.uploadMaxAgeMs ?? DAY_MS;
  const purge = () => uploads.purge(maxAge).then((n) => n && warn(`deleted ${n} upload(s) idle for more than ${duration(maxAge)}`), () => {});
  if (!opts.readOnly) await purge();
  const purgeTimer = opts.readOnly ? undefined : setInterval(purge, Math.min(3600_000, Math.max(100, maxAge / 2))).unref();

  const ctx: ServeContext = { layout, view: new StoreView(layout), uploads, readOnly: Boolean(opts.readOnly), refreshed: new Map() };
  const scheme = tls ? 'https' : 'http';
  let listening = '';
  const realm = (req: IncomingMessage) => {
    const h = req.headers.host;
    return `${scheme}://${h && /^[A-Za-z0-9.\-[\]:]+$/.test(h) ? h : listening}/token`;
  };
  const auth = users ? new Auth({ users, token: Boolean(opts.tokenAuth), readOnly: ctx.readOnly, realm }) : undefined;

  let closing = false;
  const inflight = new Set<Promise<void>>();
  const sockets = new Set<Socket>();
  const onDone = (req: IncomingMessage, res: ServerResponse, user: string | undefined, started: number, from: string) => {
    if (!opts.accessLog) return;
    const finished = () => {
      const out = req.method === 'HEAD' ? 0 : Number(res.getHeader('content-length') ?? 0);
      const received = bytesIn(req);
      // A status is only logged if it went out; a cut answer says so.
      const status = res.writableFinished ? String(res.statusCode) : `${res.headersSent ? res.statusCode : '-'}(cut)`;
      opts.accessLog!(`${from} ${user ?? '-'} "${req.method} ${sanitize(req.url ?? '')}" ${status} ${out} in=${received} ${Date.now() - started}ms`);
    };
    if (res.writableFinished || res.destroyed) finished();
    else res.once('close', finished);
  };
  const listener = (req: IncomingMessage, res: ServerResponse) => {
    const started = Date.now();
    // Read now: once a client has closed the connection (after a blob GET, often), the socket no longer knows.
    const from = req.socket.remoteAddress ?? '-';
    if (closing) res.setHeader('Connection', 'close');
    const p = handle(ctx, { auth, onDone: (q, s, u) => onDone(q, s, u, started, from) }, req, res);
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  };
  const server: Server = tls ? createHttpsServer({ ...tls }, listener) : createHttpServer(listener);
  if (tls) answerPlainHttpBeforeTls(server);
  // Uploads may take long: no overall request deadline, but headers must come quickly and an
  // idle connection is dropped (an interrupted upload keeps its state and can be resumed).
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  server.timeout = 120_000;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  server.on('clientError', (_e, socket) => socket.destroy());

  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const unknownHost = e.code === 'ENOTFOUND' || e.code === 'EAI_AGAIN';
      const known = unknownHost || e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'EADDRNOTAVAIL';
      reject(new FerryError(unknownHost ? 'USAGE' : known ? 'IO' : 'INTERNAL', `cannot listen on ${host}:${port}: ${unknownHost ? `no such host name (${e.code})` : (e.code ?? e.message)}`, {
        hint: e.code === 'EADDRINUSE'
          ? 'another program uses that port; choose another with --addr HOST:PORT (port 0 picks a free one)'
          : unknownHost || e.code === 'EADDRNOTAVAIL'
            ? 'give an address of this machine: --addr 127.0.0.1:5000, or 0.0.0.0:5000 for every interface'
            : undefined,
      }));
    });
    server.listen(port, host, () => resolve());
  }).catch(async (e) => {
    clearInterval(purgeTimer);
    await layout.close();
    throw e;
  });
  const address = server.address();
  const realPort = typeof address === 'object' && address ? address.port : port;
  const shownHost = isIP(host) === 6 ? `[${host}]` : host;
  listening = `${shownHost}:${realPort}`;
  if (!isLoopback(host)) {
    if (!tls) warn(`serving plain http on ${listening}: use it only on a trusted network${auth ? ' (passwords cross it in clear text)' : ''}, or give --tls-cert and --tls-key`);
    if (!auth && !ctx.readOnly) warn(`anyone who can reach ${listening} can push to and delete from the store; consider --htpasswd or --read-only`);
  }

  return {
    url: `${scheme}://${listening}`,
    host,
    port: realPort,
    async close(graceMs: number) {
      closing = true;
      clearInterval(purgeTimer);
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeIdleConnections();
      const deadline = Date.now() + graceMs;
      while (inflight.size > 0 && Date.now() < deadline) {
        await sleep(50);
        server.closeIdleConnections();
      }
      const forced = inflight.size > 0;
      // Cut what is left; handlers of cut uploads still record what arrived, so wait for them a little.
      for (const s of sockets) s.destroy();
      const settle = Promise.allSettled([...inflight]);
      await Promise.race([settle, sleep(5000, undefined, { ref: false })]);
      await Promise.race([closed, sleep(1000, undefined, { ref: false })]);
      await layout.close();
      return { forced };
    },
  };
}
