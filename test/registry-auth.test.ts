import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, readFile, stat, symlink, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { Http } from '../src/locations/registry/http.js';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lookupCredential } from '../src/locations/registry/credentials.js';
import { parseChallenges } from '../src/locations/registry/challenge.js';
import { closeRegistryClients } from '../src/locations/registry/pool.js';
import { failure } from './helpers/assert.js';
import { ferry } from './helpers/cli.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { dockerConfigWith, PASSWORD, selfSignedCert, REFRESH_TOKEN, startDistribution, USER, type RunningRegistry, type TokenServer } from './helpers/registry.js';
import { startServe, type Served } from './helpers/serve.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry') && hasTool('htpasswd') && hasTool('openssl');

describe('WWW-Authenticate parsing', () => {
  it('keeps quoted commas inside scope and reads several challenges', () => {
    const c = parseChallenges('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:org/app:pull,push", Basic realm="x"');
    expect(c).toEqual([
      { scheme: 'bearer', params: { realm: 'https://auth.example/token', service: 'registry.example', scope: 'repository:org/app:pull,push' } },
      { scheme: 'basic', params: { realm: 'x' } },
    ]);
  });

  it('handles escapes, unquoted values and odd spacing', () => {
    expect(parseChallenges('bearer  realm = "a\\"b" , service=svc')).toEqual([{ scheme: 'bearer', params: { realm: 'a"b', service: 'svc' } }]);
  });
});

describe.skipIf(!hasTool('openssl'))('redirects over TLS (D2)', () => {
  it('D2: a redirect from https to http is refused and the credentials never travel', async () => {
    const dir = await tempDir();
    selfSignedCert(join(dir, 'k.pem'), join(dir, 'c.pem'));
    const seen: Array<string | undefined> = [];
    const plain = createHttpServer((req, res) => {
      seen.push(req.headers.authorization);
      res.end('x');
    });
    const plainPort = await new Promise<number>((r) => plain.listen(0, '127.0.0.1', () => r((plain.address() as { port: number }).port)));
    const tls = createHttpsServer({ key: await readFile(join(dir, 'k.pem')), cert: await readFile(join(dir, 'c.pem')) }, (_req, res) => {
      res.writeHead(307, { location: `http://127.0.0.1:${plainPort}/blob` }).end();
    });
    const tlsPort = await new Promise<number>((r) => tls.listen(0, '127.0.0.1', () => r((tls.address() as { port: number }).port)));
    const http = new Http({ insecureTls: true });
    try {
      const url = new URL(`https://127.0.0.1:${tlsPort}/v2/x/blobs/sha256:abc`);
      const err = await failure(http.send({ method: 'GET', url, authorization: { origin: url.origin, value: 'Bearer secret' } }));
      expect(err.code).toBe('NETWORK');
      expect(err.message).toMatch(/refused redirect .* to insecure http/);
      expect(seen).toEqual([]);
    } finally {
      await http.close();
      tls.close();
      plain.close();
    }
  });
});

describe('credential lookup (D8, D9)', () => {
  it('D8: matches the exact host only, never a longer look-alike', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { 'reg.example.com.evil.com': { auth: Buffer.from('a:b').toString('base64') } } }));
    expect(await lookupCredential('reg.example.com', { DOCKER_CONFIG: dir, HOME: dir })).toBeUndefined();
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { 'https://reg.example.com/v1/': { auth: Buffer.from('u:p:with:colons').toString('base64') } } }));
    expect(await lookupCredential('reg.example.com', { DOCKER_CONFIG: dir, HOME: dir })).toEqual({ username: 'u', secret: 'p:with:colons', source: join(dir, 'config.json') });
  });

  it('D8: Docker Hub credentials live under https://index.docker.io/v1/', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: Buffer.from('hub:pw').toString('base64') } } }));
    expect(await lookupCredential('docker.io', { DOCKER_CONFIG: dir, HOME: dir })).toEqual({ username: 'hub', secret: 'pw', source: join(dir, 'config.json') });
  });

  it('reads containers auth.json from REGISTRY_AUTH_FILE', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'auth.json'), JSON.stringify({ auths: { 'quay.io': { auth: Buffer.from('q:w').toString('base64') } } }));
    expect(await lookupCredential('quay.io', { DOCKER_CONFIG: join(dir, 'none'), REGISTRY_AUTH_FILE: join(dir, 'auth.json'), HOME: dir })).toEqual({ username: 'q', secret: 'w', source: join(dir, 'auth.json') });
  });

  it('D9: a malformed config.json is an AUTH error that never echoes its content', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'config.json'), '{"auths": {"x": {"auth": "c2VjcmV0LXB3"}');
    const err = await failure(lookupCredential('x', { DOCKER_CONFIG: dir, HOME: dir }));
    expect(err.code).toBe('AUTH');
    expect(err.message).not.toContain('c2VjcmV0LXB3');
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { x: { auth: '!!!not base64!!!' } } }));
    const bad = await failure(lookupCredential('x', { DOCKER_CONFIG: dir, HOME: dir }));
    expect(bad.code).toBe('AUTH');
    expect(bad.message).not.toContain('!!!not base64!!!');
  });

  it('D7: a configured credential helper that is missing is an error naming it, with no fallback', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'nonexistent-helper', auths: { x: { auth: Buffer.from('a:b').toString('base64') } } }));
    const err = await failure(lookupCredential('x', { DOCKER_CONFIG: dir, HOME: dir }));
    expect(err.code).toBe('AUTH');
    expect(err.message).toContain('docker-credential-nonexistent-helper');
  });
});

describe.skipIf(!distribution)('registry authentication against the CNCF distribution registry', () => {
  let basic: RunningRegistry;
  let token: RunningRegistry & { tokenServer?: TokenServer };
  let seeded: string;

  beforeAll(async () => {
    [basic, token] = await Promise.all([startDistribution({ auth: 'htpasswd' }), startDistribution({ auth: 'token' })]);
    seeded = join(await tempDir(), 'store');
    expect((await ferry(['--store', seeded, 'copy', '-q', `oci:${TESTDATA}:layers`, 'example.com/auth/layers:1'])).code).toBe(0);
  });
  afterAll(async () => {
    await Promise.all([basic?.stop(), token?.stop()]);
    await closeRegistryClients();
  });

  it('without credentials a pull exits 5 and says how to log in', async () => {
    const cfg = await tempDir();
    for (const reg of [basic, token]) {
      const r = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${reg.host}/auth/x:1`], { env: { DOCKER_CONFIG: cfg } });
      expect(r.code, r.stderr).toBe(5);
      expect(r.stderr).toContain(`ferry login ${reg.host}`);
    }
  });

  it('D5: a wrong password exits 5 after at most one retry, and login saves nothing', async () => {
    const cfg = await tempDir();
    for (const reg of [basic, token]) {
      const r = await ferry(['login', reg.host, '-u', USER, '--password-stdin'], { env: { DOCKER_CONFIG: cfg }, input: 'wrong-password\n' });
      expect(r.code, r.stderr).toBe(5);
      expect(r.stderr).not.toContain('wrong-password');
      // This is the login: its hint is not "run ferry login".
      expect(r.stderr).toContain('hint: check the user name and password; nothing was saved');
      expect(r.stderr).not.toContain('run `ferry login');
    }
    await expect(stat(join(cfg, 'config.json'))).rejects.toThrow();
    expect(token.tokenServer!.requests.filter((q) => q.authorization?.startsWith('Basic')).length).toBeLessThanOrEqual(2);
  });

  it('D10: login checks, then writes config.json 0600 atomically keeping unknown keys; logout removes the entry', async () => {
    const cfg = await tempDir();
    await writeFile(join(cfg, 'config.json'), JSON.stringify({ currentContext: 'keep-me', auths: { 'other.example': { auth: 'eDp5' } } }));
    await chmod(join(cfg, 'config.json'), 0o644);
    for (const reg of [basic, token]) {
      const r = await ferry(['login', reg.host, '-u', USER, '--password-stdin'], { env: { DOCKER_CONFIG: cfg }, input: `${PASSWORD}\n` });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain('Login Succeeded');
    }
    const doc = JSON.parse(await readFile(join(cfg, 'config.json'), 'utf8'));
    expect(doc.currentContext).toBe('keep-me');
    expect(doc.auths['other.example']).toEqual({ auth: 'eDp5' });
    expect(Buffer.from(doc.auths[basic.host].auth, 'base64').toString()).toBe(`${USER}:${PASSWORD}`);
    expect((await stat(join(cfg, 'config.json'))).mode & 0o777).toBe(0o600);
    const out = await ferry(['logout', basic.host], { env: { DOCKER_CONFIG: cfg } });
    expect(out.code).toBe(0);
    expect(JSON.parse(await readFile(join(cfg, 'config.json'), 'utf8')).auths[basic.host]).toBeUndefined();
  });

  it('push and pull work with basic auth and with bearer tokens; digests survive', async () => {
    for (const reg of [basic, token]) {
      const cfg = await dockerConfigWith(reg.host);
      const env = { DOCKER_CONFIG: cfg };
      expect((await ferry(['--store', seeded, 'tag', 'example.com/auth/layers:1', `${reg.host}/auth/layers:1`])).code).toBe(0);
      const push = await ferry(['--store', seeded, 'push', `${reg.host}/auth/layers:1`], { env });
      expect(push.code, push.stderr).toBe(0);
      const pull = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${reg.host}/auth/layers:1`], { env });
      expect(pull.code, pull.stderr).toBe(0);
      expect(push.stdout).toContain(pull.stdout.match(/sha256:[0-9a-f]{64}/)![0]);
    }
  });

  it('identity tokens from config.json use the OAuth2 POST form', async () => {
    const cfg = await tempDir();
    await writeFile(join(cfg, 'config.json'), JSON.stringify({ auths: { [token.host]: { auth: Buffer.from(`${USER}:`).toString('base64'), identitytoken: REFRESH_TOKEN } } }));
    const before = token.tokenServer!.requests.length;
    const r = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${token.host}/auth/layers:1`], { env: { DOCKER_CONFIG: cfg } });
    expect(r.code, r.stderr).toBe(0);
    expect(token.tokenServer!.requests.slice(before).some((q) => q.method === 'POST')).toBe(true);
  });

  it('credHelpers: credentials come from docker-credential-<name>, and login stores through it', async () => {
    const bin = await tempDir();
    const store = join(bin, 'stored.json');
    const script = [
      '#!/bin/sh',
      'case "$1" in',
      `  get) read server; printf '{"ServerURL":"%s","Username":"${USER}","Secret":"${PASSWORD}"}' "$server";;`,
      `  store) cat > ${store};;`,
      '  erase) cat > /dev/null;;',
      'esac',
    ].join('\n');
    await writeFile(join(bin, 'docker-credential-fake'), script + '\n', { mode: 0o755 });
    const cfg = await tempDir();
    await writeFile(join(cfg, 'config.json'), JSON.stringify({ credHelpers: { [basic.host]: 'fake' } }));
    const env = { DOCKER_CONFIG: cfg, PATH: `${bin}:${process.env.PATH}` };
    const pull = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${basic.host}/auth/layers:1`], { env });
    expect(pull.code, pull.stderr).toBe(0);
    const login = await ferry(['login', basic.host, '-u', USER, '--password-stdin'], { env, input: PASSWORD });
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toContain('docker-credential-fake');
    expect(JSON.parse(await readFile(store, 'utf8'))).toEqual({ ServerURL: basic.host, Username: USER, Secret: PASSWORD });
    expect(JSON.parse(await readFile(join(cfg, 'config.json'), 'utf8')).auths).toBeUndefined();
  });

  it('D11: --debug output shows requests but never a password, a token or an Authorization header', async () => {
    for (const reg of [basic, token]) {
      const cfg = await dockerConfigWith(reg.host);
      const r = await ferry(['--debug', '--store', join(await tempDir(), 's'), 'pull', `${reg.host}/auth/layers:1`], { env: { DOCKER_CONFIG: cfg } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/debug: GET http:\/\/127\.0\.0\.1:\d+\/v2\//);
      expect(r.stderr).not.toContain(PASSWORD);
      expect(r.stderr).not.toContain(Buffer.from(`${USER}:${PASSWORD}`).toString('base64'));
      expect(r.stderr).not.toMatch(/Bearer|Basic |eyJ[A-Za-z0-9_-]{10,}/);
    }
  });

  it('D11: --debug on login, push, a refused login (with its stack trace) and an identity-token pull never prints a secret', async () => {
    const WRONG = 'wrong-Secret-4711';
    const secrets = [PASSWORD, WRONG, REFRESH_TOKEN, Buffer.from(`${USER}:${PASSWORD}`).toString('base64'), Buffer.from(`${USER}:${WRONG}`).toString('base64')];
    const clean = (what: string, stderr: string) => {
      for (const s of secrets) expect(stderr, `${what} printed a secret`).not.toContain(s);
      expect(stderr, what).not.toMatch(/Bearer|Basic |eyJ[A-Za-z0-9_-]{10,}/);
    };
    for (const reg of [basic, token]) {
      const env = { DOCKER_CONFIG: await tempDir() };
      const refused = await ferry(['--debug', 'login', reg.host, '-u', USER, '--password-stdin'], { env, input: WRONG });
      expect(refused.code, refused.stderr).toBe(5);
      expect(refused.stderr).toMatch(/debug: GET http:\/\/127\.0\.0\.1:\d+\//);
      expect(refused.stderr).toMatch(/\n\s+at /); // the stack trace
      clean('refused login', refused.stderr);
      const login = await ferry(['--debug', 'login', reg.host, '-u', USER, '--password-stdin'], { env, input: PASSWORD });
      expect(login.code, login.stderr).toBe(0);
      clean('login', login.stderr);
      expect((await ferry(['--store', seeded, 'tag', 'example.com/auth/layers:1', `${reg.host}/auth/debug:1`])).code).toBe(0);
      const push = await ferry(['--debug', '--store', seeded, 'push', `${reg.host}/auth/debug:1`], { env });
      expect(push.code, push.stderr).toBe(0);
      expect(push.stderr).toMatch(/debug: (PUT|POST|PATCH) http:/);
      clean('push', push.stderr);
    }
    const cfg = await tempDir();
    await writeFile(join(cfg, 'config.json'), JSON.stringify({ auths: { [token.host]: { auth: Buffer.from(`${USER}:`).toString('base64'), identitytoken: REFRESH_TOKEN } } }));
    const pull = await ferry(['--debug', '--store', join(await tempDir(), 's'), 'pull', `${token.host}/auth/debug:1`], { env: { DOCKER_CONFIG: cfg } });
    expect(pull.code, pull.stderr).toBe(0);
    clean('identity-token pull', pull.stderr);
  });
});

/** An htpasswd file with a {SHA} line: `ferry serve --htpasswd` reads it and no htpasswd binary is needed. */
async function shaHtpasswd(user = USER, password = PASSWORD): Promise<string> {
  const file = join(await tempDir(), 'htpasswd');
  await writeFile(file, `${user}:{SHA}${createHash('sha1').update(password).digest('base64')}\n`);
  return file;
}

describe('login and logout against ferry serve --htpasswd', () => {
  let serve: Served;
  beforeAll(async () => {
    serve = await startServe(join(await tempDir(), 'store'), ['--htpasswd', await shaHtpasswd()]);
  });
  afterAll(async () => serve?.stop());

  it('a symlinked config.json stays a link: login and logout write its target, 0600', async () => {
    const cfg = await tempDir();
    const dotfiles = join(await tempDir(), 'dotfiles');
    await mkdir(dotfiles);
    await writeFile(join(dotfiles, 'config.json'), JSON.stringify({ currentContext: 'keep-me' }));
    await symlink(join(dotfiles, 'config.json'), join(cfg, 'config.json'));
    const env = { DOCKER_CONFIG: cfg };
    const login = await ferry(['login', serve.host, '-u', USER, '--password-stdin'], { env, input: PASSWORD });
    expect(login.code, login.stderr).toBe(0);
    expect((await lstat(join(cfg, 'config.json'))).isSymbolicLink()).toBe(true);
    const doc = JSON.parse(await readFile(join(dotfiles, 'config.json'), 'utf8'));
    expect(doc.currentContext).toBe('keep-me');
    expect(Buffer.from(doc.auths[serve.host].auth, 'base64').toString()).toBe(`${USER}:${PASSWORD}`);
    expect((await stat(join(dotfiles, 'config.json'))).mode & 0o777).toBe(0o600);
    const logout = await ferry(['logout', serve.host], { env });
    expect(logout.code, logout.stderr).toBe(0);
    expect((await lstat(join(cfg, 'config.json'))).isSymbolicLink()).toBe(true);
    const after = JSON.parse(await readFile(join(dotfiles, 'config.json'), 'utf8'));
    expect(after.auths[serve.host]).toBeUndefined();
    expect(after.currentContext).toBe('keep-me');
    expect((await stat(join(dotfiles, 'config.json'))).mode & 0o777).toBe(0o600);
  });

  it('a dangling relative symlink as config.json: login creates its target and keeps the link', async () => {
    const base = await tempDir();
    const cfg = join(base, 'docker');
    await mkdir(cfg);
    await symlink('../dotfiles/docker/config.json', join(cfg, 'config.json'));
    const login = await ferry(['login', serve.host, '-u', USER, '--password-stdin'], { env: { DOCKER_CONFIG: cfg }, input: PASSWORD });
    expect(login.code, login.stderr).toBe(0);
    expect((await lstat(join(cfg, 'config.json'))).isSymbolicLink()).toBe(true);
    const target = join(base, 'dotfiles', 'docker', 'config.json');
    expect(Object.keys(JSON.parse(await readFile(target, 'utf8')).auths)).toEqual([serve.host]);
    expect((await stat(target)).mode & 0o777).toBe(0o600);
  });

  it('logout also removes the entry from $REGISTRY_AUTH_FILE, which lookups read, keeping its other keys, and says where from', async () => {
    const dir = await tempDir();
    const authFile = join(dir, 'auth.json');
    const auth = (u: string, p: string) => ({ auth: Buffer.from(`${u}:${p}`).toString('base64') });
    await writeFile(authFile, JSON.stringify({ auths: { [`https://${serve.host}/v2/`]: auth(USER, PASSWORD), [serve.host]: auth(USER, PASSWORD), 'other.example': auth('o', 'p') }, keep: 1 }));
    await chmod(authFile, 0o644);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [serve.host]: auth(USER, PASSWORD) } }));
    const env = { DOCKER_CONFIG: dir, REGISTRY_AUTH_FILE: authFile, XDG_RUNTIME_DIR: join(dir, 'run'), XDG_CONFIG_HOME: join(dir, 'xdg') };
    expect((await ferry(['catalog', serve.host], { env })).code).toBe(0);
    const out = await ferry(['logout', serve.host], { env });
    expect(out.code, out.stderr).toBe(0);
    expect(out.stdout).toBe(`Removing login credentials for ${serve.host} (from ${join(dir, 'config.json')}, ${authFile})\n`);
    const doc = JSON.parse(await readFile(authFile, 'utf8'));
    expect(doc).toEqual({ auths: { 'other.example': auth('o', 'p') }, keep: 1 });
    expect((await stat(authFile)).mode & 0o777).toBe(0o600);
    const catalog = await ferry(['catalog', serve.host], { env });
    expect(catalog.code).toBe(5);

    const again = await ferry(['--json', 'logout', serve.host], { env });
    expect(JSON.parse(again.stdout)).toEqual({ server: serve.host, removed: false, removedFrom: [] });
    await writeFile(authFile, JSON.stringify({ auths: { [serve.host]: auth(USER, PASSWORD) } }));
    const json = await ferry(['--json', 'logout', serve.host], { env });
    expect(JSON.parse(json.stdout)).toEqual({ server: serve.host, removed: true, removedFrom: [authFile] });
  });

  it('refused saved credentials are named as such, with the file they came from', async () => {
    const dir = await tempDir();
    const wrong = { auths: { [serve.host]: { auth: Buffer.from(`${USER}:not-the-password`).toString('base64') } } };
    await writeFile(join(dir, 'config.json'), JSON.stringify(wrong));
    await writeFile(join(dir, 'auth.json'), JSON.stringify(wrong));
    const fromDocker = await ferry(['tags', `${serve.host}/team/app`], { env: { DOCKER_CONFIG: dir } });
    expect(fromDocker.code).toBe(5);
    expect(fromDocker.stderr).toContain(`refused the saved credentials for ${serve.host} (from ${join(dir, 'config.json')})`);
    expect(fromDocker.stderr).toContain(`hint: check the user name and password, then run \`ferry login ${serve.host}\` again`);
    expect(fromDocker.stderr).not.toContain('not-the-password');
    const fromAuthFile = await ferry(['tags', `${serve.host}/team/app`], { env: { DOCKER_CONFIG: join(dir, 'none'), REGISTRY_AUTH_FILE: join(dir, 'auth.json') } });
    expect(fromAuthFile.code).toBe(5);
    expect(fromAuthFile.stderr).toContain(`refused the saved credentials for ${serve.host} (from ${join(dir, 'auth.json')})`);
    const tokens = await startServe(join(await tempDir(), 'store'), ['--htpasswd', await shaHtpasswd(), '--token-auth']);
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [tokens.host]: wrong.auths[serve.host] } }));
    const fromTokenServer = await ferry(['tags', `${tokens.host}/team/app`], { env: { DOCKER_CONFIG: dir } });
    await tokens.stop();
    expect(fromTokenServer.code).toBe(5);
    expect(fromTokenServer.stderr).toContain(`refused the saved credentials for ${tokens.host} (from ${join(dir, 'config.json')}) (HTTP 401)`);
    // Without saved credentials the message stays "authentication required".
    const none = await ferry(['tags', `${serve.host}/team/app`], { env: { DOCKER_CONFIG: join(dir, 'none'), XDG_RUNTIME_DIR: join(dir, 'run'), XDG_CONFIG_HOME: join(dir, 'xdg') } });
    expect(none.code).toBe(5);
    expect(none.stderr).toContain('needs a user name and password');
  });

  it('a symlink loop as config.json is an error naming the file', async () => {
    const cfg = await tempDir();
    await symlink(join(cfg, 'config.json'), join(cfg, 'config.json'));
    const login = await ferry(['login', serve.host, '-u', USER, '--password-stdin'], { env: { DOCKER_CONFIG: cfg }, input: PASSWORD });
    expect(login.code).not.toBe(0);
    expect(login.stderr).toContain(join(cfg, 'config.json'));
    expect(login.stderr).not.toMatch(/\n\s+at /);
  });
});

describe('login against a registry that rate-limits failed logins (ferry serve --htpasswd)', () => {
  it('a 429 fails the login at once (exit 6), naming the rate limit and the Retry-After; nothing is saved', async () => {
    for (const extra of [[], ['--token-auth']]) {
      const s = await startServe(join(await tempDir(), 'store'), ['--htpasswd', await shaHtpasswd(), ...extra]);
      try {
        // Ten wrong passwords from this address make ferry serve answer 429 (Retry-After: 60) for a minute.
        const probe = extra.length ? `${s.url}/token?service=ferry` : `${s.url}/v2/`;
        const wrong = { authorization: `Basic ${Buffer.from(`${USER}:wrong`).toString('base64')}` };
        for (let i = 0; i < 10; i++) expect((await fetch(probe, { headers: wrong })).status).toBe(401);
        const cfg = await tempDir();
        const started = Date.now();
        const r = await ferry(['login', s.host, '-u', USER, '--password-stdin'], { env: { DOCKER_CONFIG: cfg }, input: PASSWORD });
        expect(Date.now() - started).toBeLessThan(15_000);
        expect(r.code, r.stderr).toBe(6);
        expect(r.stderr).toContain(`ferry: error: ${s.host} is rate-limiting logins (HTTP 429: TOOMANYREQUESTS`);
        expect(r.stderr).toContain('try again in 60 s');
        expect(r.stderr).not.toContain('retrying');
        await expect(stat(join(cfg, 'config.json'))).rejects.toThrow();
      } finally {
        await s.stop();
      }
    }
  });
});
