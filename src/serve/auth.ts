import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { RegistryError } from './errors.js';
import { sendJson } from './http.js';
import type { Htpasswd } from './htpasswd.js';
import { repoKeyFor } from './names.js';

/** One permission a request needs, as token scopes name it (`repository:team/app:pull`). */
export interface Access {
  type: 'repository' | 'registry';
  name: string;
  actions: string[];
}

export const SERVICE = 'ferry';
const TOKEN_SECONDS = 300;
const FAILURES_PER_MINUTE = 10;
const REPOSITORY_ACTIONS = ['pull', 'push', 'delete'];

export interface AuthOptions {
  users: Htpasswd;
  /** Bearer tokens from this server's /token endpoint instead of Basic on every request. */
  token: boolean;
  readOnly: boolean;
  /** The token endpoint's URL for a request (scheme and the Host it was sent to). */
  realm: (req: IncomingMessage) => string;
}

interface Claims {
  sub: string;
  exp: number;
  access: Access[];
}

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');
export const scopeText = (a: Access) => `${a.type}:${a.name}:${a.actions.join(',')}`;

/**
 * Basic mode: every request carries htpasswd credentials; every user may pull, push and delete.
 * Token mode: requests carry an HMAC-signed bearer token from GET /token, holding exactly the
 * scopes granted there (authenticated users get what they ask for; anonymous requests get a 401;
 * --read-only grants pull only). The signing key is random per server start.
 */
export class Auth {
  private readonly key = randomBytes(32);
  private readonly failures = new Map<string, number[]>();

  constructor(private readonly opts: AuthOptions) {}

  /** Whether this server hands out tokens at /token. */
  get tokens(): boolean {
    return this.opts.token;
  }

  /** Returns the user a request acts as, or throws 401 (with a challenge) or 429. */
  authorize(req: IncomingMessage, needed: Access[]): string {
    return this.opts.token ? this.bearer(req, needed) : this.basic(req);
  }

  private basicChallenge(): Record<string, string> {
    return { 'WWW-Authenticate': `Basic realm="${SERVICE}"` };
  }

  private bearerChallenge(req: IncomingMessage, needed: Access[], error?: string): Record<string, string> {
    let c = `Bearer realm="${this.opts.realm(req)}",service="${SERVICE}"`;
    if (needed.length) c += `,scope="${needed.map(scopeText).join(' ')}"`;
    if (error) c += `,error="${error}"`;
    return { 'WWW-Authenticate': c };
  }

  private basic(req: IncomingMessage): string {
    const creds = basicCredentials(req);
    if (!creds) throw new RegistryError(401, 'UNAUTHORIZED', 'authentication required', undefined, this.basicChallenge());
    this.checkPassword(req, creds);
    return creds.user;
  }

  private checkPassword(req: IncomingMessage, creds: { user: string; password: string }): void {
    const who = req.socket.remoteAddress ?? '?';
    const now = Date.now();
    const recent = (this.failures.get(who) ?? []).filter((t) => now - t < 60_000);
    if (recent.length >= FAILURES_PER_MINUTE) {
      throw new RegistryError(429, 'TOOMANYREQUESTS', 'too many failed logins; try again in a minute', undefined, { 'Retry-After': '60' });
    }
    if (!this.opts.users.verify(creds.user, creds.password)) {
      recent.push(now);
      if (this.failures.size > 10_000) this.failures.clear();
      this.failures.set(who, recent);
      throw new RegistryError(401, 'UNAUTHORIZED', 'wrong user name or password', undefined, this.basicChallenge());
    }
  }

  private bearer(req: IncomingMessage, needed: Access[]): string {
    const header = req.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)$/i.exec(header);
    if (!m) throw new RegistryError(401, 'UNAUTHORIZED', 'authentication required', undefined, this.bearerChallenge(req, needed));
    const claims = this.verifyToken(m[1]!);
    if (!claims) throw new RegistryError(401, 'UNAUTHORIZED', 'invalid or expired token', undefined, this.bearerChallenge(req, needed, 'invalid_token'));
    const lacking = needed.filter((n) => !grants(claims.access, n));
    if (lacking.length) {
      throw new RegistryError(401, 'UNAUTHORIZED', `token does not grant ${lacking.map(scopeText).join(' ')}`, { access: lacking }, this.bearerChallenge(req, needed, 'insufficient_scope'));
    }
    return claims.sub;
  }

  private sign(claims: object): string {
    const body = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
    return `${body}.${b64url(createHmac('sha256', this.key).update(body).digest())}`;
  }

  private verifyToken(token: string): Claims | undefined {
    const parts = token.split('.');
    if (parts.length !== 3) return undefined;
    const expected = createHmac('sha256', this.key).update(`${parts[0]}.${parts[1]}`).digest();
    const actual = Buffer.from(parts[2]!, 'base64url');
    if (actual.length !== expected.length || !timingSafeEqual(actual, expected)) return undefined;
    try {
      const claims = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Claims;
      return claims.exp * 1000 > Date.now() && Array.isArray(claims.access) ? claims : undefined;
    } catch {
      return undefined;
    }
  }

  /** GET /token?service=&scope=…: Basic credentials in, a bearer token with the granted scopes out. */
  tokenEndpoint(req: IncomingMessage, res: ServerResponse, url: URL): void {
    const creds = basicCredentials(req);
    if (!creds) throw new RegistryError(401, 'UNAUTHORIZED', 'the token service needs a user name and password (anonymous access is not offered)', undefined, this.basicChallenge());
    this.checkPassword(req, creds);
    const access = url.searchParams
      .getAll('scope')
      .flatMap((s) => s.split(' '))
      .map((s) => this.grant(s))
      .filter((a): a is Access => a !== undefined);
    const now = Math.floor(Date.now() / 1000);
    const token = this.sign({ iss: SERVICE, sub: creds.user, aud: SERVICE, iat: now, nbf: now - 5, exp: now + TOKEN_SECONDS, access });
    sendJson(req, res, 200, { token, access_token: token, expires_in: TOKEN_SECONDS, issued_at: new Date(now * 1000).toISOString() });
  }

  /** What a scope request is granted: repository actions on a valid name, the catalog; else nothing. */
  private grant(scope: string): Access | undefined {
    const first = scope.indexOf(':');
    const last = scope.lastIndexOf(':');
    if (first <= 0 || last === first) return undefined;
    const type = scope.slice(0, first).replace(/\(.*\)$/, '');
    const name = scope.slice(first + 1, last);
    const asked = scope.slice(last + 1).split(',');
    if (type === 'registry' && name === 'catalog' && asked.includes('*')) return { type, name, actions: ['*'] };
    if (type !== 'repository') return undefined;
    try {
      repoKeyFor(name);
    } catch {
      return undefined;
    }
    const allowed = this.opts.readOnly ? ['pull'] : REPOSITORY_ACTIONS;
    const actions = allowed.filter((a) => asked.includes(a) || asked.includes('*'));
    return actions.length ? { type, name, actions } : undefined;
  }
}

function grants(held: Access[], want: Access): boolean {
  return want.actions.every((action) =>
    held.some((h) => h.type === want.type && h.name === want.name && (h.actions.includes(action) || h.actions.includes('*'))),
  );
}

function basicCredentials(req: IncomingMessage): { user: string; password: string } | undefined {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)$/i.exec(req.headers.authorization ?? '');
  if (!m) return undefined;
  const text = Buffer.from(m[1]!, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) return undefined;
  return { user: text.slice(0, colon), password: text.slice(colon + 1) };
}
