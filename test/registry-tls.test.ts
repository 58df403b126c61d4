import { readFile, writeFile } from 'node:fs/promises';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createNetServer } from 'node:net';
import { createSecureServer } from 'node:http2';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { testdataImages } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { selfSignedCert, startDistribution, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const openssl = hasTool('openssl');
const distribution = hasTool('docker-registry');

describe.skipIf(!distribution || !openssl)('distribution over https', () => {
  let reg: RunningRegistry;
  beforeAll(async () => {
    reg = await startDistribution({ tls: true });
  }, 60_000);
  afterAll(async () => {
    await reg?.stop();
  });

  it('push and pull keep every digest once the certificate is trusted; an untrusted one is refused with a hint', async () => {
    const images = await testdataImages();
    const refused = await ferry(['copy', `oci:${TESTDATA}:layers`, `docker://${reg.host}/tls/app:1`]);
    expect(refused.code, refused.stderr).toBe(6);
    expect(refused.stderr).toMatch(/TLS error talking to 127\.0\.0\.1:\d+/);
    expect(refused.stderr).toContain('--insecure');
    expect(refused.stderr).toContain('NODE_EXTRA_CA_CERTS=/path/to/ca.pem');
    expect(refused.stderr).not.toContain('--use-system-ca');

    const env = { NODE_EXTRA_CA_CERTS: reg.caPath };
    for (const tag of ['layers', 'multi'] as const) {
      const pushed = await ferry(['copy', `oci:${TESTDATA}:${tag}`, `docker://${reg.host}/tls/${tag}:1`], { env });
      expect(pushed.code, pushed.stderr).toBe(0);
      const back = await tempDir();
      const pulled = await ferry(['copy', `docker://${reg.host}/tls/${tag}:1`, `oci:${back}:${tag}`], { env });
      expect(pulled.code, pulled.stderr).toBe(0);
      const index = JSON.parse(await readFile(join(back, 'index.json'), 'utf8'));
      expect(index.manifests[0].digest).toBe(images[tag].digest);
      expect((await ferry(['verify', `oci:${back}`])).code).toBe(0);
    }

    // --insecure skips verification instead.
    const skipped = await ferry(['--insecure', 'tags', `${reg.host}/tls/layers`]);
    expect(skipped.code, skipped.stderr).toBe(0);
    expect(skipped.stdout.trim()).toBe('1');
  });
});

describe.skipIf(!openssl)('HTTP version over TLS', () => {
  it('speaks HTTP/1.1 to a registry that offers h2 (undici would pick h2 and its small flow-control windows)', async () => {
    const dir = await tempDir();
    const [key, cert] = [join(dir, 'k.pem'), join(dir, 'c.pem')];
    selfSignedCert(key, cert);
    const versions: string[] = [];
    const server = createSecureServer({ key: await readFile(key), cert: await readFile(cert), allowHTTP1: true }, (req, res) => {
      versions.push(req.httpVersion);
      if (req.url?.startsWith('/v2/h2/app/tags/list')) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ name: 'h2/app', tags: ['a', 'b'] }));
      } else res.writeHead(req.url === '/v2/' ? 200 : 404).end();
    });
    const port = await new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
    try {
      const r = await ferry(['tags', `127.0.0.1:${port}/h2/app`], { env: { NODE_EXTRA_CA_CERTS: cert } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.split('\n').filter(Boolean)).toEqual(['a', 'b']);
      expect(versions.length).toBeGreaterThan(0);
      expect(new Set(versions)).toEqual(new Set(['1.1']));
    } finally {
      server.close();
    }
  });
});

describe.skipIf(!openssl)('a certificate out of its dates', () => {
  it('is refused (exit 6) with a hint about this machine\'s clock, not about private CAs (air-gapped hosts drift)', async () => {
    const { execFileSync } = await import('node:child_process');
    const dir = await tempDir();
    const [key, csr, cert] = [join(dir, 'k.pem'), join(dir, 'r.csr'), join(dir, 'c.pem')];
    execFileSync('openssl', ['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', csr], { stdio: 'ignore' });
    // Valid until yesterday.
    execFileSync('openssl', ['x509', '-req', '-in', csr, '-signkey', key, '-days', '-1', '-copy_extensions', 'copy', '-out', cert], { stdio: 'ignore' });
    const server = createHttpsServer({ key: await readFile(key), cert: await readFile(cert) }, tagsHandler('old/app'));
    const port = await listen(server);
    try {
      const r = await ferry(['tags', `127.0.0.1:${port}/old/app`], { env: { NODE_EXTRA_CA_CERTS: cert } });
      expect(r.code, r.stderr).toBe(6);
      expect(r.stderr).toContain('certificate has expired');
      expect(r.stderr).toMatch(/hint: this machine's clock says \d{4}-\d\d-\d\dT/);
      expect(r.stderr).not.toContain('NODE_EXTRA_CA_CERTS');
    } finally {
      server.close();
    }
  });
});

/** A registry answering only the tag list of `repo`, `a` and `b`, over whatever `listen` serves. */
function tagsHandler(repo: string) {
  return (req: { url?: string }, res: { writeHead(status: number, headers?: Record<string, string>): unknown; end(body: string): unknown }) => {
    if (req.url?.startsWith(`/v2/${repo}/tags/list`)) {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ name: repo, tags: ['a', 'b'] }));
    } else {
      res.writeHead(req.url === '/v2/' ? 200 : 404);
      res.end('');
    }
  };
}

async function listen(server: { listen(port: number, host: string, cb: () => void): unknown; address(): unknown }): Promise<number> {
  return new Promise<number>((r) => server.listen(0, '127.0.0.1', () => r((server.address() as { port: number }).port)));
}

describe.skipIf(!openssl)('which scheme a loopback registry speaks', () => {
  it('asks plain http first: a plain-http registry costs no TLS (node:tls and node:http2 are never loaded), and nothing loads node:zlib or node:child_process before it is needed', async () => {
    const dir = await tempDir();
    const hook = join(dir, 'modules.cjs');
    const list = join(dir, 'modules.txt');
    await writeFile(hook, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(list)}, process.moduleLoadList.join('\\n')));`);
    const requests: string[] = [];
    const server = createHttpServer((req, res) => {
      requests.push(`${req.method} ${req.url}`);
      tagsHandler('plain/app')(req, res);
    });
    const port = await listen(server);
    try {
      const r = await ferry(['tags', `127.0.0.1:${port}/plain/app`], { env: { NODE_OPTIONS: `--require ${hook}` } });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout.split('\n').filter(Boolean)).toEqual(['a', 'b']);
      expect(requests).toEqual(['GET /v2/', 'GET /v2/plain/app/tags/list']);
      const loaded = (await readFile(list, 'utf8')).split('\n');
      expect(loaded).toContain('NativeModule net');
      expect(loaded.filter((m) => /^NativeModule (tls|http2|https|zlib|child_process)$/.test(m))).toEqual([]);
    } finally {
      server.close();
    }
  });

  it('falls back to https when the port hangs up on plain http, or never answers it', async () => {
    const dir = await tempDir();
    const [key, cert] = [join(dir, 'k.pem'), join(dir, 'c.pem')];
    selfSignedCert(key, cert);
    const tls = { key: await readFile(key), cert: await readFile(cert) };
    // Node's TLS server drops a connection that does not start with a TLS record.
    const hangsUp = createSecureServer({ ...tls, allowHTTP1: true }, tagsHandler('tls/app'));
    // This one reads what a client sends and answers nothing unless it starts a TLS handshake.
    const https = createHttpsServer(tls, tagsHandler('tls/app'));
    const silent = createNetServer((socket) => {
      socket.on('error', () => {});
      socket.once('data', (first) => {
        if (first[0] !== 0x16) return;
        socket.pause();
        socket.unshift(first);
        https.emit('connection', socket);
      });
    });
    const ports = [await listen(hangsUp), await listen(silent)];
    try {
      for (const port of ports) {
        const started = Date.now();
        const r = await ferry(['tags', `127.0.0.1:${port}/tls/app`], { env: { NODE_EXTRA_CA_CERTS: cert } });
        expect(r.code, r.stderr).toBe(0);
        expect(r.stdout.split('\n').filter(Boolean)).toEqual(['a', 'b']);
        expect(Date.now() - started).toBeLessThan(20_000);
      }
    } finally {
      hangsUp.close();
      silent.close();
      https.close();
    }
  }, 30_000);
});
