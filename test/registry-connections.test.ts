import { createServer } from 'node:http';
import { describe, expect, it } from 'vitest';
import { Http, wrapNetwork } from '../src/locations/registry/http.js';

/** A loopback HTTP server that answers everything with `{}` and counts connections. */
async function countingServer(): Promise<{ url: (path: string) => URL; connections: () => number; close: () => void }> {
  let n = 0;
  const server = createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': '2' });
    res.end(req.method === 'HEAD' ? undefined : '{}');
  });
  server.on('connection', () => n++);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return { url: (path) => new URL(`http://127.0.0.1:${port}${path}`), connections: () => n, close: () => server.close() };
}

describe('registry HTTP connections', () => {
  it('requests sent one after another share one connection, HEADs included (undici closes after a HEAD and frees a connection a tick late)', async () => {
    const server = await countingServer();
    const http = new Http();
    try {
      for (const method of ['GET', 'HEAD', 'GET', 'HEAD', 'HEAD', 'GET'] as const) {
        const res = await http.send({ method, url: server.url('/v2/') });
        expect(res.status).toBe(200);
        await res.body.dump();
      }
      expect(server.connections()).toBe(1);
    } finally {
      await http.close();
      server.close();
    }
  });
});

describe('network failures as users read them', () => {
  it('a registry name that does not resolve says so, with what to check (no DNS query is made)', () => {
    const url = new URL('https://registry.example.invalid/v2/');
    for (const code of ['ENOTFOUND', 'EAI_AGAIN']) {
      const e = wrapNetwork(Object.assign(new Error(`getaddrinfo ${code}`), { code }), url) as Error & { hint?: string };
      expect(e.message).toBe(`cannot reach https://registry.example.invalid/v2/: ${code}`);
      expect(e.hint).toContain('registry.example.invalid does not resolve (DNS): check the registry name, or set HTTPS_PROXY');
    }
    // A proxy's own hint comes first: the name the proxy cannot reach is the proxy's.
    const viaProxy = wrapNetwork(Object.assign(new Error('x'), { code: 'ENOTFOUND' }), url, 5, 'the proxy http://proxy:3128 did not answer') as Error & { hint?: string };
    expect(viaProxy.hint).toBe('the proxy http://proxy:3128 did not answer');
  });

  it('a certificate error keeps no half of the --use-system-ca advice of Node; the hint gives it for ferry', () => {
    const url = new URL('https://127.0.0.1:5907/v2/');
    for (const msg of [
      'self-signed certificate; if the root CA is installed locally, try running Node.js with --use-system-ca',
      'unable to get local issuer certificate. Try running Node.js with --use-system-ca.',
    ]) {
      const e = wrapNetwork(Object.assign(new Error(msg), { code: 'SELF_SIGNED_CERT_IN_CHAIN' }), url) as Error & { hint?: string };
      expect(e.message).toBe(`TLS error talking to 127.0.0.1:5907: ${msg.split(/[;.] /)[0]}`);
      expect(e.hint).toContain('NODE_USE_SYSTEM_CA=1 ferry … if that CA is installed on this machine');
    }
  });
});
