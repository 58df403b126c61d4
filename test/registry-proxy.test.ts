import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { startConnectProxy, type ConnectProxy } from './helpers/connect-proxy.js';
import { testdataImages } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { freePort, startDistribution, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const openssl = hasTool('openssl');
const distribution = hasTool('docker-registry');
// A name only the proxy resolves: the registry is "elsewhere", reachable through the proxy alone.
const NAME = 'registry.test';
const PROXY_USER = 'proxy-user';
const PROXY_PASSWORD = 'pr0xy:p@ss';
const NO_PROXY_ENV = { http_proxy: undefined, https_proxy: undefined, HTTP_PROXY: undefined, HTTPS_PROXY: undefined, no_proxy: undefined, NO_PROXY: undefined };

describe.skipIf(!distribution || !openssl)('registries behind an HTTP proxy (HTTPS_PROXY, NO_PROXY)', () => {
  let reg: RunningRegistry;
  let plain: RunningRegistry;
  let plainRemote: string;
  let proxy: ConnectProxy;
  let remote: string;
  let env: Record<string, string | undefined>;

  beforeAll(async () => {
    reg = await startDistribution({ tls: true, tlsNames: [NAME] });
    remote = `${NAME}:${reg.host.split(':')[1]}`;
    plain = await startDistribution();
    plainRemote = `plain.${NAME}:${plain.host.split(':')[1]}`;
    proxy = await startConnectProxy({ hosts: { [remote]: reg.host, [plainRemote]: plain.host }, credentials: { user: PROXY_USER, password: PROXY_PASSWORD } });
    env = { ...NO_PROXY_ENV, NODE_EXTRA_CA_CERTS: reg.caPath, HTTPS_PROXY: proxy.url };
  }, 60_000);
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
    await plain?.stop();
  });

  it('push and pull through the proxy keep every digest: https in CONNECT tunnels, plain http forwarded; the proxy gets its credentials and ferry never prints them', async () => {
    const images = await testdataImages();
    const pushed = await ferry(['--debug', 'copy', `oci:${TESTDATA}:layers`, `docker://${remote}/px/app:1`], { env });
    expect(pushed.code, pushed.stderr).toBe(0);
    const back = await tempDir();
    const pulled = await ferry(['--debug', 'copy', `docker://${remote}/px/app:1`, `oci:${back}:app`], { env });
    expect(pulled.code, pulled.stderr).toBe(0);
    const index = JSON.parse(await readFile(join(back, 'index.json'), 'utf8'));
    expect(index.manifests[0].digest).toBe(images.layers.digest);

    expect(proxy.tunnels.length).toBeGreaterThan(0);
    expect(new Set(proxy.tunnels.map((t) => t.target))).toEqual(new Set([remote]));
    const basic = `Basic ${Buffer.from(`${PROXY_USER}:${PROXY_PASSWORD}`).toString('base64')}`;
    expect(proxy.tunnels.every((t) => t.authorization === basic)).toBe(true);
    expect(proxy.forwarded).toEqual([]);
    expect(pulled.stderr).toMatch(/debug: proxy: https http:\/\/127\.0\.0\.1:\d+, http direct; direct: localhost,127\.0\.0\.1,::1/);

    // A plain-http registry elsewhere (--plain-http) goes through HTTP_PROXY as forwarded requests.
    const plainEnv = { ...env, HTTPS_PROXY: undefined, HTTP_PROXY: proxy.url };
    const viaHttp = await ferry(['--plain-http', 'copy', `oci:${TESTDATA}:layers`, `docker://${plainRemote}/px/app:1`], { env: plainEnv });
    expect(viaHttp.code, viaHttp.stderr).toBe(0);
    expect((await ferry(['--plain-http', 'tags', `${plainRemote}/px/app`], { env: plainEnv })).stdout.trim()).toBe('1');
    expect(proxy.forwarded.some((u) => u.startsWith(`http://${plainRemote}/v2/px/app/blobs/uploads/`))).toBe(true);
    for (const out of [pushed.stdout, pushed.stderr, pulled.stdout, pulled.stderr]) {
      expect(out).not.toContain(PROXY_PASSWORD);
      expect(out).not.toContain(encodeURIComponent(PROXY_PASSWORD));
    }

    // Inside the tunnel the registry's certificate is still checked, and --insecure still skips that.
    const untrusted = { ...env, NODE_EXTRA_CA_CERTS: undefined };
    const refused = await ferry(['tags', `${remote}/px/app`], { env: untrusted });
    expect(refused.code, refused.stderr).toBe(6);
    expect(refused.stderr).toMatch(/TLS error talking to registry\.test/);
    const insecure = await ferry(['--insecure', 'tags', `${remote}/px/app`], { env: untrusted });
    expect(insecure.code, insecure.stderr).toBe(0);
    expect(insecure.stdout.trim()).toBe('1');
  });

  it('without the proxy the name does not resolve; NO_PROXY sends a host around it; loopback never goes through it', async () => {
    const direct = await ferry(['tags', `${remote}/px/app`], { env: { ...env, HTTPS_PROXY: undefined } });
    expect(direct.code, direct.stderr).toBe(6);
    expect(direct.stderr).toMatch(/cannot reach https:\/\/registry\.test/);

    const before = proxy.tunnels.length;
    const bypassed = await ferry(['tags', `${remote}/px/app`], { env: { ...env, NO_PROXY: `example.org,.${NAME}` } });
    expect(bypassed.code, bypassed.stderr).toBe(6);
    expect(proxy.tunnels.length).toBe(before);

    const loopback = await ferry(['tags', `${reg.host}/px/app`], { env });
    expect(loopback.code, loopback.stderr).toBe(0);
    expect(loopback.stdout.trim()).toBe('1');
    expect(proxy.tunnels.length).toBe(before);
  });

  it('a proxy that refuses the credentials: exit 6 naming the proxy (never its password) and its 407; a malformed proxy URL is a usage error', async () => {
    const wrong = proxy.url.replace(encodeURIComponent(PROXY_PASSWORD), 'not-the-password');
    const r = await ferry(['tags', `${remote}/px/app`], { env: { ...env, HTTPS_PROXY: wrong } });
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toMatch(/the proxy http:\/\/127\.0\.0\.1:\d+ refused to open a tunnel to registry\.test:\d+: HTTP 407/);
    expect(r.stderr).toContain('USER:PASSWORD');
    expect(r.stderr).not.toContain('not-the-password');

    // A proxy that is not there: the failure names it, since the registry was never reached.
    const gone = `http://${PROXY_USER}:${encodeURIComponent(PROXY_PASSWORD)}@127.0.0.1:${await freePort()}`;
    const down = await ferry(['tags', `${remote}/px/app`], { env: { ...env, HTTPS_PROXY: gone, FERRY_RETRY_BACKOFF_MS: '1' } });
    expect(down.code, down.stderr).toBe(6);
    expect(down.stderr).toMatch(/hint: requests go through the proxy http:\/\/127\.0\.0\.1:\d+ \(HTTPS_PROXY\) unless NO_PROXY lists registry\.test/);
    expect(down.stderr).not.toContain(encodeURIComponent(PROXY_PASSWORD));

    const bad = await ferry(['tags', `${remote}/px/app`], { env: { ...env, HTTPS_PROXY: 'http://[not-a-host' } });
    expect(bad.code, bad.stderr).toBe(2);
    expect(bad.stderr).toMatch(/HTTP\(S\)_PROXY is not a URL/);
  });
});
