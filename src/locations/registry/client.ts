import { FerryError } from '../../errors.js';
import { parseChallenges, type Challenge } from './challenge.js';
import { lookupCredential, type Credential } from './credentials.js';
import { header, Http, isCertificateError, isLoopback, redact, retryAfterMs, wrapNetwork, type HttpRequest, type HttpResponse } from './http.js';

/** How long a loopback registry may take to answer plain http before https is tried instead. */
const PLAIN_PROBE_MS = 5_000;
/** A token this close to its expiry is renewed rather than sent. */
const TOKEN_MARGIN_MS = 5_000;

export interface ClientOptions {
  /** The registry as written in references: docker.io, ghcr.io, 127.0.0.1:5000. */
  domain: string;
  http: Http;
  /** Allow plain http (loopback registries may use it without asking). */
  plainHttp?: boolean;
  /** Credentials to use instead of looking them up (login checks them this way). */
  credential?: Credential | null;
  /** A login check: a 429 fails at once, naming the rate limit, instead of being waited out. */
  login?: boolean;
}

export interface ClientRequest {
  method: HttpRequest['method'];
  /** Path under the registry (`/v2/…`) or an absolute URL from a Location header. */
  path: string | URL;
  /** Token scopes this request needs, e.g. `repository:team/app:pull`. */
  scopes: string[];
  headers?: Record<string, string>;
  body?: HttpRequest['body'];
  signal?: AbortSignal;
}

interface Renewal {
  done: Promise<void>;
  /** Cancels it and lets the next caller start a new one. */
  cancel: (reason: unknown) => void;
  /** Callers still waiting: the renewal is cancelled only once every one of them has given up. */
  waiting: number;
}

/** Waits for a shared renewal, giving up alone when `signal` aborts. */
function awaitShared(r: Renewal, signal?: AbortSignal): Promise<void> {
  r.waiting++;
  return new Promise<void>((resolve, reject) => {
    const onAbort = () => {
      if (--r.waiting === 0) r.cancel(signal!.reason);
      reject(signal!.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    r.done.then(resolve, reject).finally(() => {
      if (signal?.aborted) return;
      signal?.removeEventListener('abort', onAbort);
      r.waiting--;
    });
  });
}

interface Token {
  value: string;
  /** When it runs out, by ferry's clock. */
  expires: number;
  /** The challenge it answered, to renew it before it runs out without a 401 first. */
  challenge: string;
}

/**
 * One registry: decides http(s) once, authenticates on demand (bearer tokens per scope set, or
 * basic), re-authenticates once when a token is refused, and maps failures to coded errors.
 */
export class RegistryClient {
  readonly domain: string;
  readonly http: Http;
  private base?: Promise<URL>;
  private readonly tokens = new Map<string, Token>();
  /** Renewals under way, by scope set: requests at once after an expiry share one. */
  private readonly renewals = new Map<string, Renewal>();
  private basic?: string;
  private credential?: Promise<Credential | undefined>;
  /** The saved credential authenticate() used, so a refusal can say which and from where. */
  private saved?: Credential;
  private readonly plainHttp: boolean;
  private readonly login: boolean;

  constructor(opts: ClientOptions) {
    this.domain = opts.domain;
    this.http = opts.http;
    this.plainHttp = opts.plainHttp ?? false;
    this.login = opts.login ?? false;
    if (opts.credential !== undefined) this.credential = Promise.resolve(opts.credential ?? undefined);
  }

  get apiHost(): string {
    return this.domain === 'docker.io' ? 'registry-1.docker.io' : this.domain;
  }

  /** https, unless the registry is on loopback or marked insecure and does not speak TLS. */
  baseUrl(signal?: AbortSignal): Promise<URL> {
    this.base ??= (async () => {
      const https = new URL(`https://${this.apiHost}/`);
      const loopback = isLoopback(this.apiHost);
      if (!this.plainHttp && !loopback) return https;
      // On loopback plain http is asked first: local registries mostly speak it, and then node:tls
      // is never loaded (~10 ms of every command). A TLS port answers 400 or hangs up.
      if (loopback && (await this.speaksPlainHttp(signal))) return new URL(`http://${this.apiHost}/`);
      try {
        const res = await this.http.send({ method: 'GET', url: new URL('/v2/', https), signal });
        await res.body.dump();
        return https;
      } catch (e) {
        if ((e as { name?: string }).name === 'AbortError') throw e;
        // A certificate it does not trust means the registry does speak TLS: falling back to
        // http would only earn a puzzling 400 ("HTTP request to an HTTPS server").
        if (isCertificateError(e)) throw wrapNetwork(e, https);
        return new URL(`http://${this.apiHost}/`);
      }
    })();
    return this.base;
  }

  private async speaksPlainHttp(signal?: AbortSignal): Promise<boolean> {
    // Bounded: a TLS server could sit waiting for the rest of what it takes for a record.
    const bound = AbortSignal.timeout(PLAIN_PROBE_MS);
    try {
      const res = await this.http.send({ method: 'GET', url: new URL(`http://${this.apiHost}/v2/`), signal: signal ? AbortSignal.any([signal, bound]) : bound });
      await res.body.dump();
      return res.status !== 400 && res.url.protocol === 'http:';
    } catch (e) {
      if (signal?.aborted) throw e;
      return false;
    }
  }

  private cred(): Promise<Credential | undefined> {
    this.credential ??= lookupCredential(this.domain);
    return this.credential;
  }

  /** `anyToken`: the token just fetched goes out even if ferry's clock gives it little time left. */
  private authorization(scopes: string[], origin: string, anyToken = false): HttpRequest['authorization'] {
    const t = this.tokens.get(scopeKey(scopes));
    if (t && (anyToken || fresh(t))) return { origin, value: `Bearer ${t.value}` };
    if (this.basic) return { origin, value: this.basic };
    return undefined;
  }

  /** A token that has run out by ferry's clock is renewed before the request, not after the registry's 401. */
  private async renewExpired(scopes: string[], url: URL, signal?: AbortSignal): Promise<void> {
    const key = scopeKey(scopes);
    const t = this.tokens.get(key);
    if (!t || fresh(t)) return;
    signal?.throwIfAborted();
    let renewal = this.renewals.get(key);
    if (!renewal) {
      // Its own signal, not the first caller's: that one may be cancelled while others still wait.
      const controller = new AbortController();
      const forget = () => this.renewals.get(key) === renewal && this.renewals.delete(key);
      const done = this.authenticate(t.challenge, scopes, url, controller.signal).finally(forget);
      renewal = { done, cancel: (reason) => (forget(), controller.abort(reason)), waiting: 0 };
      this.renewals.set(key, renewal);
    }
    await awaitShared(renewal, signal);
  }

  /**
   * Sends a request with the right credentials. Requests without a body, or with a Buffer body,
   * are retried on transient failures; a 401 triggers one authentication and one resend.
   */
  async request(req: ClientRequest): Promise<HttpResponse> {
    const base = await this.baseUrl(req.signal);
    const url = req.path instanceof URL ? req.path : new URL(req.path, base);
    const resendable = req.body === undefined || Buffer.isBuffer(req.body) || typeof req.body === 'string';
    const send = (authorization: HttpRequest['authorization']) => {
      const r: HttpRequest = { method: req.method, url, headers: req.headers, body: req.body, authorization, signal: req.signal, noRetryOn429: this.login };
      return resendable ? this.http.sendRetrying(r) : this.http.send(r);
    };
    await this.renewExpired(req.scopes, url, req.signal);
    let res = await send(this.authorization(req.scopes, base.origin));
    if (res.status === 401 && !resendable && this.tokens.has(scopeKey(req.scopes))) {
      // A token refused (or expired) while a body streamed up: renew it once; the caller, which
      // can read its body again, sends it again.
      const challenge = header(res, 'www-authenticate');
      await res.body.dump();
      await this.authenticate(challenge, req.scopes, url, req.signal);
      throw new TokenRenewed(`the registry refused the token for ${redact(url)} while a body was sent`, { hint: `run \`ferry login ${this.domain}\`` });
    }
    if (res.status === 401 && resendable) {
      const challenge = header(res, 'www-authenticate');
      await res.body.dump();
      await this.authenticate(challenge, req.scopes, url, req.signal);
      res = await send(this.authorization(req.scopes, base.origin, true));
    }
    if (res.status === 429 && this.login) throw await this.rateLimited(res);
    if (res.status === 401 || res.status === 403) {
      const detail = await errorDetail(res);
      if (res.status === 401 && this.saved && this.basic) {
        throw new FerryError('AUTH', `${redact(url)} refused ${this.savedCredentials()} (HTTP 401${detail})`, {
          hint: `check the user name and password, then run \`ferry login ${this.domain}\` again`,
        });
      }
      if (res.status === 401 && this.saved) {
        // A token server that accepted the password but granted less than asked for.
        throw new FerryError('AUTH', `${redact(url)} gave no access with ${this.savedCredentials()} (HTTP 401${detail})`, {
          hint: `check that this account may access the repository, or run \`ferry login ${this.domain}\` as another user`,
        });
      }
      throw new FerryError('AUTH', `${res.status === 401 ? 'authentication required' : 'access denied'} for ${redact(url)}${detail}`, {
        hint: res.status === 401 ? `run \`ferry login ${this.domain}\`` : 'check that your account may access this repository',
      });
    }
    return res;
  }

  /** A login answered 429: retrying would only prolong the lock-out, so say so at once. */
  private async rateLimited(res: HttpResponse): Promise<FerryError> {
    const after = retryAfterMs(header(res, 'retry-after'));
    const detail = await errorDetail(res);
    const when = after === undefined ? 'try again later' : `try again in ${Math.max(1, Math.ceil(after / 1000))} s`;
    return new FerryError('NETWORK', `${this.domain} is rate-limiting logins (HTTP 429${detail}); ${when}`, {
      hint: 'too many failed logins from this address lock logins out for a while; check the user name and password before trying again',
    });
  }

  /** "the saved credentials for HOST (from FILE)": only for credentials looked up, not given (login). */
  private savedCredentials(): string {
    return `the saved credentials for ${this.domain}${this.saved?.source ? ` (from ${this.saved.source})` : ''}`;
  }

  /** Answers a challenge: fetches a bearer token for the scopes, or prepares basic auth. */
  async authenticate(headerValue: string | undefined, scopes: string[], url: URL, signal?: AbortSignal): Promise<void> {
    const challenges = headerValue ? parseChallenges(headerValue) : [];
    const bearer = challenges.find((c) => c.scheme === 'bearer');
    const basic = challenges.find((c) => c.scheme === 'basic');
    const cred = await this.cred();
    if (cred?.source) this.saved = cred;
    if (bearer) return this.fetchToken(bearer, headerValue!, scopes, url, cred, signal);
    if (basic) {
      if (!cred || cred.identityToken) {
        throw new FerryError('AUTH', `${this.domain} needs a user name and password`, { hint: `run \`ferry login ${this.domain}\`` });
      }
      this.basic = `Basic ${Buffer.from(`${cred.username}:${cred.secret}`).toString('base64')}`;
      return;
    }
    throw new FerryError('AUTH', `${redact(url)} answered 401 without a usable WWW-Authenticate challenge`);
  }

  private async fetchToken(ch: Challenge, challenge: string, scopes: string[], url: URL, cred: Credential | undefined, signal?: AbortSignal): Promise<void> {
    if (cred?.registryToken) {
      this.tokens.set(scopeKey(scopes), { value: cred.registryToken, expires: Number.MAX_SAFE_INTEGER, challenge });
      return;
    }
    const asked = Date.now();
    const realm = checkRealm(ch.params.realm, url);
    const all = [...new Set([...scopes, ...(ch.params.scope ? ch.params.scope.split(' ') : [])])];
    // Credentials go to the realm only over https, to the registry's own origin, or on its loopback host.
    const mayCarry = realm.protocol === 'https:' || realm.origin === url.origin || (isLoopback(realm.host) && realm.hostname === url.hostname);
    let res: HttpResponse;
    if (cred?.identityToken && mayCarry) {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: cred.secret, service: ch.params.service ?? '', client_id: 'ferry', scope: all.join(' ') });
      res = await this.http.sendRetrying({ method: 'POST', url: realm, headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString(), signal, noRetryOn429: this.login });
    } else {
      const q = new URL(realm);
      if (ch.params.service) q.searchParams.set('service', ch.params.service);
      for (const s of all) q.searchParams.append('scope', s);
      const authorization = cred && mayCarry && !cred.identityToken
        ? { origin: realm.origin, value: `Basic ${Buffer.from(`${cred.username}:${cred.secret}`).toString('base64')}` }
        : undefined;
      res = await this.http.sendRetrying({ method: 'GET', url: q, authorization, signal, noRetryOn429: this.login });
    }
    if (res.status === 429 && this.login) throw await this.rateLimited(res);
    if (res.status === 401 || res.status === 403) {
      await res.body.dump();
      const whose = cred?.source ? this.savedCredentials() : cred ? `the credentials for ${this.domain}` : 'anonymous access';
      throw new FerryError('AUTH', `the token server ${realm.origin} refused ${whose} (HTTP ${res.status})`, {
        hint: cred?.source ? `check the user name and password, then run \`ferry login ${this.domain}\` again` : `run \`ferry login ${this.domain}\``,
      });
    }
    if (res.status !== 200) {
      await res.body.dump();
      throw new FerryError('AUTH', `the token server ${realm.origin} answered HTTP ${res.status}`);
    }
    const doc = (await res.body.json().catch(() => ({}))) as { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    const value = doc.token ?? doc.access_token;
    if (!value) throw new FerryError('AUTH', `the token server ${realm.origin} returned no token`);
    const start = asked - tokenAge(doc.issued_at, header(res, 'date'));
    this.tokens.set(scopeKey(scopes), { value, expires: start + Math.max(60, doc.expires_in ?? 60) * 1000, challenge });
  }

  /** Forgets tokens, so the next request re-authenticates (after a mid-transfer 401). */
  dropTokens(): void {
    this.tokens.clear();
  }
}

/**
 * An AUTH failure of a request whose body was a stream, after a new token was fetched: sending
 * the body again (re-read from its source) may succeed. Unhandled, it is an AUTH error as before.
 */
export class TokenRenewed extends FerryError {
  constructor(message: string, opts: { hint?: string } = {}) {
    super('AUTH', message, opts);
  }
}

function fresh(t: Token): boolean {
  return t.expires > Date.now() + TOKEN_MARGIN_MS;
}

/**
 * How old a token was when the token server answered: its issued_at against the server's own
 * Date header, so a clock that differs between ferry and the server neither ends the token early
 * (ferry ahead: every token already expired) nor keeps it too long. 0 if either is missing.
 */
function tokenAge(issuedAt: string | undefined, serverDate: string | undefined): number {
  const age = Date.parse(serverDate ?? '') - Date.parse(issuedAt ?? '');
  return Number.isNaN(age) ? 0 : Math.max(0, age);
}

function scopeKey(scopes: string[]): string {
  return [...scopes].sort().join(' ');
}

/** The realm must be http(s); never link-local (cloud metadata); http or loopback only for a registry that is itself there. */
function checkRealm(realm: string | undefined, registry: URL): URL {
  let u: URL;
  try {
    u = new URL(realm ?? '');
  } catch {
    throw new FerryError('AUTH', `${registry.host} sent a bearer challenge with an invalid realm ${JSON.stringify(realm)}`);
  }
  const host = u.hostname.replace(/^\[|\]$/g, '');
  const bad =
    !['https:', 'http:'].includes(u.protocol) ||
    /^169\.254\./.test(host) || /^fe80:/i.test(host) || host === 'metadata.google.internal' ||
    (u.protocol === 'http:' && u.hostname !== registry.hostname) ||
    (isLoopback(u.host) && !isLoopback(registry.host));
  if (bad) throw new FerryError('AUTH', `refusing the token realm ${u.origin} offered by ${registry.host}`, { hint: 'the registry points its token server somewhere ferry will not send credentials' });
  return u;
}

/** The registry's error message, when its body is the spec's JSON. */
export async function errorDetail(res: HttpResponse): Promise<string> {
  try {
    const text = await res.body.text();
    const doc = JSON.parse(text) as { errors?: Array<{ code?: string; message?: string }> };
    const e = doc.errors?.[0];
    return e ? `: ${e.code ?? ''}${e.message ? ` ${e.message}` : ''}` : '';
  } catch {
    return '';
  }
}
