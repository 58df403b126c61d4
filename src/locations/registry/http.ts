import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { setFlagsFromString } from 'node:v8';
import Agent from 'undici/lib/dispatcher/agent.js';
import Dispatcher from 'undici/lib/dispatcher/dispatcher.js';
import EnvHttpProxyAgent from 'undici/lib/dispatcher/env-http-proxy-agent.js';
import api from 'undici/lib/api/index.js';
import { FerryError, isFerryError, NETWORK_CODES } from '../../errors.js';
import { envNumber } from '../../util/env.js';

export interface HttpRequest {
  method: 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';
  url: URL;
  headers?: Record<string, string>;
  /** A Buffer may be re-sent on retry; a stream only once. */
  body?: Buffer | string | Readable;
  /** Sent only to this origin (scheme://host:port): never across a redirect to another one. */
  authorization?: { origin: string; value: string };
  signal?: AbortSignal;
  /** sendRetrying() returns a 429 at once instead of waiting it out (login: the limit is on failed logins). */
  noRetryOn429?: boolean;
}

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Dispatcher.ResponseData['body'];
  /** The URL that answered, after redirects (relative Locations resolve against it). */
  url: URL;
}

export interface HttpOptions {
  /** Skip TLS certificate verification (--insecure). */
  insecureTls?: boolean;
  /** Attempts for retryable failures (5xx, 408, 429, connection errors). */
  attempts?: number;
  /** First backoff delay; doubles each attempt, with jitter. */
  backoffMs?: number;
  /** Longest Retry-After ferry will honour; more is a failure. */
  maxRetryAfterMs?: number;
  connectTimeoutMs?: number;
  headersTimeoutMs?: number;
  /** Longest silence while a body streams. */
  idleTimeoutMs?: number;
  /** Request/response lines for --debug; never headers or bodies. */
  debug?: (line: string) => void;
  /** Notified before each retry. */
  onRetry?: (info: { url: string; attempt: number; delayMs: number; reason: string }) => void;
}

const MAX_REDIRECTS = 5;

/** For a 429: what the limit is depends on the registry, whose message says more (a login helps on Docker Hub, not everywhere). */
export const RATE_LIMIT_HINT = 'the registry is limiting requests; try again later, and see its message for what it limits (on Docker Hub, logging in raises the limit)';

export function header(res: { headers: HttpResponse['headers'] }, name: string): string | undefined {
  const v = res.headers[name.toLowerCase()];
  return Array.isArray(v) ? v[0] : v;
}

// A request body cut by the server (EPIPE) is worth another try too; a name that does not resolve is not.
const RETRYABLE_CODES = new Set([...NETWORK_CODES, 'EPIPE'].filter((c) => c !== 'ENOTFOUND'));

export function isRetryableError(e: unknown): boolean {
  const code = (e as { code?: string } | undefined)?.code;
  return typeof code === 'string' && RETRYABLE_CODES.has(code);
}

/** Retry-After in ms: delta-seconds or an HTTP date. */
export function retryAfterMs(value: string | undefined, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

export function isLoopback(host: string): boolean {
  const h = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return h === 'localhost' || h === '::1' || /^127\./.test(h);
}

/** The proxy settings in the environment, as docker, skopeo and curl read them (lower case first). */
function proxyEnvironment(env: NodeJS.ProcessEnv = process.env): { http?: string; https?: string; noProxy: string } | undefined {
  const http = env.http_proxy || env.HTTP_PROXY || undefined;
  const https = env.https_proxy || env.HTTPS_PROXY || undefined;
  if (!http && !https) return undefined;
  // Loopback never goes through a proxy (as in Go's ProxyFromEnvironment): a proxy cannot reach it.
  const noProxy = [env.no_proxy ?? env.NO_PROXY ?? '', 'localhost', '127.0.0.1', '::1'].filter(Boolean).join(',');
  return { http, https, noProxy };
}

/** A proxy URL for messages: scheme, host and port only (it may carry credentials). */
function redactProxy(uri: string): string {
  try {
    const u = new URL(uri);
    return `${u.protocol}//${u.host}`;
  } catch {
    return '(unparsable proxy URL)';
  }
}

let baseline = false;

/**
 * undici's HTTP parser (llhttp, WebAssembly) is compiled at the first connection. When V8 tiered
 * it up to its optimising compiler, that took ~20 MiB that stayed resident (a no-op sync peaked at
 * 94 MiB instead of 72, a 1 GiB pull at 113 instead of 94); the baseline code parses as fast here.
 * - Both flags are needed when set at run time (their implications are not re-applied), and a
 *   large tiering budget instead was used up within a 1 GiB pull. Not --liftoff-only: a function
 *   the baseline compiler cannot take (SIMD on a CPU without SSE4.1) must still compile.
 * - Set here, not on the command line: a code generation flag there makes V8 refuse Node's cached
 *   code for its own modules, ~30 ms more on every command (a no-op sync 0.80 -> 0.68 s, median of
 *   15 interleaved runs on a busy host).
 */
function keepWasmOnBaseline(): void {
  if (baseline) return;
  baseline = true;
  setFlagsFromString('--no-wasm-tier-up');
  setFlagsFromString('--no-wasm-dynamic-tiering');
}

/**
 * undici's package entry mixes its API (`connect`, `request` …) into every dispatcher; ferry loads
 * the files without that entry, and the proxy agent opens its CONNECT tunnels with `connect`.
 */
function proxyAgent(opts: ConstructorParameters<typeof EnvHttpProxyAgent>[0]): EnvHttpProxyAgent {
  const proto = Dispatcher.prototype as unknown as Record<string, unknown>;
  if (typeof proto.connect !== 'function') Object.assign(proto, api);
  return new EnvHttpProxyAgent(opts);
}

/**
 * The HTTP layer every registry request goes through: pooled connections, timeouts so nothing
 * hangs, manual redirects that never carry credentials to another origin or downgrade to http,
 * and retries with exponential backoff and jitter. Bodies are never decoded (identity only).
 */
export class Http {
  private readonly agent: Agent | EnvHttpProxyAgent;
  private readonly proxy: ReturnType<typeof proxyEnvironment>;
  readonly opts: Required<Omit<HttpOptions, 'debug' | 'onRetry'>> & Pick<HttpOptions, 'debug' | 'onRetry'>;

  constructor(opts: HttpOptions = {}) {
    this.opts = {
      insecureTls: opts.insecureTls ?? false,
      attempts: opts.attempts ?? 5,
      backoffMs: opts.backoffMs ?? envNumber('FERRY_RETRY_BACKOFF_MS', { min: 0, unit: 'milliseconds' }, 500),
      maxRetryAfterMs: opts.maxRetryAfterMs ?? 60_000,
      connectTimeoutMs: opts.connectTimeoutMs ?? 30_000,
      headersTimeoutMs: opts.headersTimeoutMs ?? 60_000,
      idleTimeoutMs: opts.idleTimeoutMs ?? 60_000,
      debug: opts.debug,
      onRetry: opts.onRetry,
    };
    const common = {
      connectTimeout: this.opts.connectTimeoutMs,
      headersTimeout: this.opts.headersTimeoutMs,
      bodyTimeout: this.opts.idleTimeoutMs,
      connections: 16,
      // HTTP/1.1 even where TLS offers h2 (undici's default). Over h2 every blob shares one TCP
      // connection and undici's 64 KiB stream / 512 KiB connection windows: with 40 ms of round
      // trip a 64 MiB pull took 10.5 s against 1.1 s, and on loopback a 1 GiB pull ~40 % longer.
      allowH2: false,
      connect: { rejectUnauthorized: !this.opts.insecureTls },
    };
    this.proxy = proxyEnvironment();
    for (const uri of [this.proxy?.http, this.proxy?.https]) {
      if (uri && !URL.canParse(uri)) {
        throw new FerryError('USAGE', `the proxy ${JSON.stringify(redactProxy(uri))} in HTTP(S)_PROXY is not a URL`, { hint: 'write it as http://HOST:PORT (or http://USER:PASSWORD@HOST:PORT)' });
      }
    }
    if (this.proxy) {
      const via = (protocol: string) => {
        const uri = this.proxyFor(protocol);
        return uri ? redactProxy(uri) : 'direct';
      };
      this.opts.debug?.(`proxy: https ${via('https:')}, http ${via('http:')}; direct: ${this.proxy.noProxy}`);
    }
    // Through a proxy, TLS to the registry runs inside the CONNECT tunnel: `requestTls` carries
    // the verification setting there (`connect` then only concerns the proxy's own socket).
    keepWasmOnBaseline();
    this.agent = this.proxy
      ? proxyAgent({ ...common, httpProxy: this.proxy.http, httpsProxy: this.proxy.https, noProxy: this.proxy.noProxy, requestTls: { rejectUnauthorized: !this.opts.insecureTls } })
      : new Agent(common);
  }

  /** One exchange, following redirects (GET/HEAD only). */
  async send(req: HttpRequest): Promise<HttpResponse> {
    // undici's pool counts a connection as free again only a tick after its last response ended,
    // so a request sent straight after one (the manifest after the ping) opened a new connection:
    // over a WAN, one more TLS handshake, two round trips.
    await new Promise<void>((resolve) => setImmediate(resolve));
    let url = req.url;
    for (let hop = 0; ; hop++) {
      const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'ferry', ...req.headers };
      if (req.authorization && url.origin === req.authorization.origin) headers.authorization = req.authorization.value;
      const t0 = Date.now();
      let res: Dispatcher.ResponseData;
      try {
        res = await api.request.call(this.agent, {
          origin: url.origin, path: url.pathname + url.search, method: req.method, headers, body: req.body, signal: req.signal,
          // undici closes the connection after every HEAD (a guard against servers that send a body
          // anyway) unless told not to. Registries answer HEAD properly; a fresh connection per
          // HEAD took a no-op sync of 200 tags from 0.60 to 0.76 s.
          reset: req.method === 'HEAD' ? false : undefined,
        });
      } catch (e) {
        this.opts.debug?.(`${req.method} ${redact(url)} -> ${(e as { code?: string }).code ?? (e as Error).message}`);
        throw this.proxyFailure(e, url) ?? e;
      }
      this.opts.debug?.(`${req.method} ${redact(url)} -> ${res.statusCode} (${Date.now() - t0} ms)`);
      const location = header({ headers: res.headers }, 'location');
      const redirect = [301, 302, 303, 307, 308].includes(res.statusCode) && location && (req.method === 'GET' || req.method === 'HEAD');
      if (!redirect) return { status: res.statusCode, headers: res.headers, body: res.body, url };
      await res.body.dump();
      if (hop >= MAX_REDIRECTS) throw new FerryError('NETWORK', `too many redirects from ${redact(req.url)}`);
      const next = new URL(location!, url);
      if (url.protocol === 'https:' && next.protocol !== 'https:') {
        throw new FerryError('NETWORK', `refused redirect from ${redact(url)} to insecure ${redact(next)}`);
      }
      url = next;
    }
  }

  /**
   * Sends with retries on 5xx, 408, 429 and connection errors. Only for requests whose body can be
   * sent again (none, or a Buffer). Returns the last response, whatever its status.
   */
  async sendRetrying(req: HttpRequest): Promise<HttpResponse> {
    for (let attempt = 1; ; attempt++) {
      let res: HttpResponse | undefined;
      let error: unknown;
      try {
        res = await this.send(req);
      } catch (e) {
        if (isFerryError(e) || !isRetryableError(e)) throw wrapNetwork(e, req.url, undefined, this.proxyHint(req.url));
        error = e;
      }
      const retryable = res === undefined || res.status === 408 || (res.status === 429 && !req.noRetryOn429) || res.status >= 500;
      if (!retryable) return res!;
      if (attempt >= this.opts.attempts) {
        if (res) return res;
        throw wrapNetwork(error, req.url, attempt, this.proxyHint(req.url));
      }
      let delay = this.backoff(attempt);
      if (res) {
        const after = retryAfterMs(header(res, 'retry-after'));
        await res.body.dump().catch(() => {});
        if (after !== undefined) {
          if (after > this.opts.maxRetryAfterMs) {
            throw new FerryError('NETWORK', `${redact(req.url)} answered ${res.status} and asks to retry after ${Math.round(after / 1000)} s, more than the ${Math.round(this.opts.maxRetryAfterMs / 1000)} s ferry waits`, {
              hint: res.status === 429 ? RATE_LIMIT_HINT : undefined,
            });
          }
          delay = Math.max(delay, after);
        }
      }
      const reason = res ? `HTTP ${res.status}` : String((error as { code?: string }).code ?? error);
      this.opts.onRetry?.({ url: redact(req.url), attempt, delayMs: delay, reason });
      await sleep(delay, undefined, { signal: req.signal });
    }
  }

  /**
   * Runs a whole exchange again when the network breaks it after the headers arrived (a manifest
   * or a tag list cut mid-body, a slow loris): the retries of sendRetrying() end with the headers.
   */
  async retryingRead<T>(url: URL, exchange: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await exchange();
      } catch (e) {
        if (isFerryError(e) || !isRetryableError(e) || signal?.aborted) throw e;
        if (attempt >= this.opts.attempts) throw wrapNetwork(e, url, attempt, this.proxyHint(url));
        const delay = this.backoff(attempt);
        this.opts.onRetry?.({ url: redact(url), attempt, delayMs: delay, reason: String((e as { code?: string }).code ?? e) });
        await sleep(delay, undefined, { signal });
      }
    }
  }

  /** The proxy a URL of this scheme goes through, as EnvHttpProxyAgent picks it (NO_PROXY aside). */
  private proxyFor(protocol: string): string | undefined {
    return protocol === 'https:' ? this.proxy?.https ?? this.proxy?.http : this.proxy?.http;
  }

  /** A tunnel the proxy refused (undici reports only "Proxy response (407) !== 200"), said plainly. */
  private proxyFailure(e: unknown, url: URL): FerryError | undefined {
    const status = /Proxy response \((\d+)\)/.exec((e as Error)?.message ?? '')?.[1];
    if (!status || !this.proxy) return undefined;
    const proxy = redactProxy(this.proxyFor(url.protocol) ?? '');
    return new FerryError('NETWORK', `the proxy ${proxy} refused to open a tunnel to ${url.host}: HTTP ${status}`, {
      cause: e,
      hint: status === '407'
        ? 'the proxy wants credentials: put them in the proxy URL (http://USER:PASSWORD@HOST:PORT)'
        : `if ${url.hostname} is reachable without the proxy, add it to NO_PROXY`,
    });
  }

  /** With a proxy set, a connection failure may be the proxy's: say which proxy was in the way. */
  private proxyHint(url: URL): string | undefined {
    const uri = this.proxyFor(url.protocol);
    if (!uri || isLoopback(url.host)) return undefined;
    return `requests go through the proxy ${redactProxy(uri)} (${url.protocol === 'https:' ? 'HTTPS_PROXY' : 'HTTP_PROXY'}) unless NO_PROXY lists ${url.hostname}`;
  }

  /** Exponential backoff with jitter: half the step fixed, half random. */
  private backoff(attempt: number): number {
    const step = Math.min(this.opts.backoffMs * 2 ** (attempt - 1), 30_000);
    return step / 2 + Math.random() * (step / 2);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** The peer spoke TLS, but its certificate did not verify (untrusted, expired, wrong name). */
export function isCertificateError(e: unknown): boolean {
  const code = (e as { code?: unknown } | undefined)?.code;
  return typeof code === 'string' && /CERT|SELF_SIGNED|UNABLE_TO_(GET|VERIFY)/.test(code);
}

export function wrapNetwork(e: unknown, url: URL, attempts?: number, hint?: string): unknown {
  if (isFerryError(e) || (e as { name?: string }).name === 'AbortError') return e;
  const code = (e as { code?: string }).code ?? '';
  const msg = (e as Error).message ?? String(e);
  if (/certificate|SSL|TLS|self.signed/i.test(`${code} ${msg}`)) {
    // Node's own advice (--use-system-ca) is about its command line, which ferry's users do not
    // write: the whole clause goes, and the hint says the same in ferry's terms.
    const why = msg.replace(/[.;]? *(?:if the root CA is installed locally, *)?try running Node\.js with --use-system-ca\.?/i, '');
    // Out of its dates: on an air-gapped host the clock (no NTP) is as likely to blame as the certificate.
    const dated = code === 'CERT_HAS_EXPIRED' || code === 'CERT_NOT_YET_VALID';
    return new FerryError('NETWORK', `TLS error talking to ${url.host}: ${why}`, {
      cause: e,
      hint: dated
        ? `this machine's clock says ${new Date().toISOString()}: if that is wrong (a host with no time server drifts), set the clock; else the registry's certificate needs renewing. --insecure skips verification`
        : 'a registry behind a private CA: NODE_EXTRA_CA_CERTS=/path/to/ca.pem ferry …, or NODE_USE_SYSTEM_CA=1 ferry … if that CA is installed on this machine; to skip verification altogether, --insecure',
    });
  }
  const tries = attempts ? ` after ${attempts} attempts` : '';
  // A name that does not resolve is the usual first failure on a host with no route out.
  const unresolved = code === 'ENOTFOUND' || code === 'EAI_AGAIN' ? `${url.hostname} does not resolve (DNS): check the registry name, or set HTTPS_PROXY if this host reaches the registry through a proxy` : undefined;
  const slow = /TIMEOUT/.test(code) ? 'a slow registry or link: raise --timeout (seconds)' : undefined;
  const said = NETWORK_WORDS[code];
  // No HTTP answer at all: sync counts these per host to stop trying one that is down.
  const unreachable = RETRYABLE_CODES.has(code) || code === 'ENOTFOUND' ? url.host : undefined;
  return new FerryError('NETWORK', `cannot reach ${redact(url)}${tries}: ${said ? `${said} (${code})` : code || msg}`, { cause: e, hint: hint ?? unresolved ?? slow, unreachable });
}

/** undici's and node's codes, in words. */
const NETWORK_WORDS: Record<string, string> = {
  UND_ERR_HEADERS_TIMEOUT: 'no answer within the timeout',
  UND_ERR_BODY_TIMEOUT: 'the transfer stalled for longer than the timeout',
  UND_ERR_CONNECT_TIMEOUT: 'the connection could not be opened in time',
  UND_ERR_SOCKET: 'the connection failed',
  UND_ERR_CLOSED: 'the connection was closed',
  ECONNREFUSED: 'connection refused (nothing listens there)',
  ECONNRESET: 'the connection was reset',
  ETIMEDOUT: 'the connection timed out',
  ENETUNREACH: 'the network is unreachable',
  EHOSTUNREACH: 'the host is unreachable',
};

/** A URL for logs and messages: no user info, no query values (upload state, tokens). */
export function redact(url: URL): string {
  const u = new URL(url);
  u.username = '';
  u.password = '';
  for (const k of [...u.searchParams.keys()]) {
    if (!['n', 'last', 'digest', 'mount', 'from', 'scope', 'service'].includes(k)) u.searchParams.set(k, '…');
  }
  return u.toString();
}
