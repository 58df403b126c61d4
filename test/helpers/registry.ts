import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createServer as createTcpServer } from 'node:net';
import { createServer, get as httpGet, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { get as httpsGet } from 'node:https';
import { randomUUID, sign, createPrivateKey } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createTcpServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RunningRegistry {
  /** host:port, as used in image references. */
  host: string;
  /** With `tls`: the self-signed certificate (for 127.0.0.1) clients must trust. */
  caPath?: string;
  stop(): Promise<void>;
}

export interface DistributionOptions {
  auth?: 'htpasswd' | 'token';
  user?: string;
  password?: string;
  /** Token lifetime in seconds (token auth). */
  tokenTtl?: number;
  /** Extra top-level lines of the registry's config.yml. */
  config?: string[];
  /** Serve https with a fresh self-signed certificate (Go then offers HTTP/2 as well). */
  tls?: boolean;
  /** Names besides 127.0.0.1 the certificate is valid for (a name a test proxy resolves). */
  tlsNames?: string[];
}

export const USER = 'ferry';
export const PASSWORD = 's3cret-pass';
/** The identity token the test token server accepts on its OAuth2 POST endpoint. */
export const REFRESH_TOKEN = 'refresh-token-for-ferry';

/** Writes a fresh self-signed EC key and certificate (PEM) for 127.0.0.1 and any other `names`. */
export function selfSignedCert(keyPath: string, certPath: string, names: string[] = []): void {
  const san = ['IP:127.0.0.1', ...names.map((n) => `DNS:${n}`)].join(',');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', `subjectAltName=${san}`, '-days', '2', '-keyout', keyPath, '-out', certPath], { stdio: 'ignore' });
}

/** Status of a GET, over https without checking the certificate (only readiness is asked). */
function probe(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsGet : httpGet)(url, { rejectUnauthorized: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
  });
}

async function waitReady(url: string, child: ChildProcess, log: () => string): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (child.exitCode !== null) throw new Error(`registry exited: ${log()}`);
    try {
      const status = await probe(url);
      if (status === 200 || status === 401) return;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  throw new Error(`registry did not start: ${log()}`);
}

/** Starts Debian's CNCF distribution registry on a free loopback port, optionally with auth. */
export async function startDistribution(opts: DistributionOptions = {}): Promise<RunningRegistry & { tokenServer?: TokenServer; dataDir: string }> {
  // No test-only imports here: bench/run.mjs loads this file too.
  const dir = await mkdtemp(join(tmpdir(), 'ferry-registry-'));
  const port = await freePort();
  const user = opts.user ?? USER;
  const password = opts.password ?? PASSWORD;
  let auth = '';
  let tokenServer: TokenServer | undefined;
  if (opts.auth === 'htpasswd') {
    const line = execFileSync('htpasswd', ['-Bbn', user, password]).toString().trim();
    await writeFile(join(dir, 'htpasswd'), line + '\n');
    auth = `auth: {htpasswd: {realm: test, path: ${join(dir, 'htpasswd')}}}`;
  } else if (opts.auth === 'token') {
    tokenServer = await startTokenServer(dir, { user, password, ttl: opts.tokenTtl ?? 300 });
    auth = `auth: {token: {realm: "${tokenServer.realm}", service: ${tokenServer.service}, issuer: ${tokenServer.issuer}, rootcertbundle: ${tokenServer.certPath}}}`;
  }
  await mkdir(join(dir, 'data'));
  let tls = '';
  const caPath = opts.tls ? join(dir, 'tls.crt') : undefined;
  if (caPath) {
    const keyPath = join(dir, 'tls.key');
    selfSignedCert(keyPath, caPath, opts.tlsNames);
    tls = `, tls: {certificate: ${caPath}, key: ${keyPath}}`;
  }
  const config = [
    'version: 0.1',
    'log: {level: error, accesslog: {disabled: true}}',
    `storage: {filesystem: {rootdirectory: ${join(dir, 'data')}}, delete: {enabled: true}}`,
    `http: {addr: 127.0.0.1:${port}, secret: test-secret${tls}}`,
    auth,
    ...(opts.config ?? []),
  ].join('\n');
  await writeFile(join(dir, 'config.yml'), config + '\n');
  const child = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  child.stdout!.on('data', (c: Buffer) => (log += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (log += c.toString()));
  await waitReady(`${caPath ? 'https' : 'http'}://127.0.0.1:${port}/v2/`, child, () => log);
  return {
    host: `127.0.0.1:${port}`,
    caPath,
    tokenServer,
    dataDir: join(dir, 'data'),
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
      await tokenServer?.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export interface TokenServer {
  realm: string;
  service: string;
  issuer: string;
  certPath: string;
  /** Every request the token server saw (for asserting what credentials were sent). */
  requests: Array<{ url: string; authorization?: string; method?: string }>;
  /** Rewrites the JSON the token server answers (e.g. drops expires_in); undefined: as issued. */
  setReply(rewrite: ((reply: TokenReply) => Record<string, unknown>) | undefined): void;
  /** Holds every token reply this long (0: answers at once). */
  setDelay(ms: number): void;
  stop(): Promise<void>;
}

export interface TokenReply {
  token: string;
  expires_in: number;
  issued_at: string;
}

/**
 * The wall clock, even while a test fakes Date: the token server stands for another machine, and
 * the registry checks its tokens' times against the real clock.
 */
const realNow = () => performance.timeOrigin + performance.now();

const b64url = (b: Buffer | string) => Buffer.from(b).toString('base64url');

/**
 * A token issuer for distribution's `token` auth: checks Basic credentials and signs ES256 JWTs
 * whose x5c header carries the self-signed certificate the registry trusts.
 */
async function startTokenServer(dir: string, o: { user: string; password: string; ttl: number }): Promise<TokenServer> {
  const keyPath = join(dir, 'token.key');
  const certPath = join(dir, 'token.crt');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=ferry-test-token', '-days', '2', '-keyout', keyPath, '-out', certPath], { stdio: 'ignore' });
  const key = createPrivateKey(await readFile(keyPath));
  const pem = await readFile(certPath, 'utf8');
  const der = pem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, '');
  const service = 'ferry-test-registry';
  const issuer = 'ferry-test-issuer';
  const requests: TokenServer['requests'] = [];
  let rewrite: ((reply: TokenReply) => Record<string, unknown>) | undefined;
  let delayMs = 0;
  const expected = `Basic ${Buffer.from(`${o.user}:${o.password}`).toString('base64')}`;
  const server: Server = createServer(async (req: IncomingMessage, res: ServerResponse) => {
    requests.push({ url: req.url ?? '', authorization: req.headers.authorization, method: req.method });
    if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
    const url = new URL(req.url ?? '/', 'http://x');
    if (req.method === 'POST') {
      // OAuth2 form: an identity (refresh) token stands in for the password.
      let body = '';
      for await (const c of req) body += (c as Buffer).toString();
      const form = new URLSearchParams(body);
      if (form.get('grant_type') !== 'refresh_token' || form.get('refresh_token') !== REFRESH_TOKEN) {
        res.writeHead(401).end();
        return;
      }
      for (const sc of (form.get('scope') ?? '').split(' ').filter(Boolean)) url.searchParams.append('scope', sc);
    } else if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'content-type': 'application/json' }).end('{"details":"bad credentials"}');
      return;
    }
    const now = Math.floor(realNow() / 1000);
    const access = url.searchParams.getAll('scope').flatMap((s) => {
      const m = /^([a-z]+):(.+):([a-z*,]+)$/.exec(s);
      return m ? [{ type: m[1], name: m[2], actions: m[3]!.split(',') }] : [];
    });
    const header = { alg: 'ES256', typ: 'JWT', x5c: [der] };
    const claims = { iss: issuer, sub: o.user, aud: service, exp: now + o.ttl, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const sig = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
    const token = `${input}.${b64url(sig)}`;
    const reply: TokenReply = { token, expires_in: o.ttl, issued_at: new Date(now * 1000).toISOString() };
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(rewrite ? rewrite(reply) : reply));
  });
  const port = await new Promise<number>((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port)));
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certPath,
    requests,
    setReply: (r) => (rewrite = r),
    setDelay: (ms) => (delayMs = ms),
    stop: () => new Promise((r) => server.close(() => r())),
  };
}

const configDirs: string[] = [];
// After each test file under vitest, whose workers are stopped without an 'exit' event; bench/
// imports this file too, outside vitest, and cleans up at exit.
if (process.env.VITEST) {
  const { afterAll } = await import('vitest');
  afterAll(async () => {
    for (const d of configDirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
} else process.once('exit', () => configDirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A DOCKER_CONFIG directory holding credentials for `host`, removed after the test file. */
export async function dockerConfigWith(host: string, user = USER, password = PASSWORD): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-docker-config-'));
  configDirs.push(dir);
  await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [host]: { auth: Buffer.from(`${user}:${password}`).toString('base64') } } }));
  return dir;
}
