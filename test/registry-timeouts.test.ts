import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { makeLayout } from './helpers/images.js';
import { startDistribution } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

// C11: servers that accept a connection and then say nothing, or almost nothing. ferry must give
// up on each attempt after --timeout, retry, and end with a network error: never hang.
const FAST = { FERRY_RETRY_BACKOFF_MS: '10' };
const servers: Server[] = [];
const sockets: Socket[] = [];

afterEach(async () => {
  for (const s of sockets.splice(0)) s.destroy();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A TCP server on loopback that hands each connection to `onConnection` and counts them. */
async function silentServer(onConnection: (s: Socket) => void): Promise<{ host: string; connections: () => number }> {
  let n = 0;
  const server = createServer((s) => {
    n++;
    sockets.push(s);
    s.on('error', () => {});
    onConnection(s);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { host: `127.0.0.1:${(server.address() as { port: number }).port}`, connections: () => n };
}

describe('C11: slow and silent servers', () => {
  it('C11: a server that never sends headers: each attempt times out, ferry retries, then exits 6', async () => {
    const srv = await silentServer(() => {});
    const store = join(await tempDir(), 'store');
    const r = await ferry(['--store', store, '--timeout', '1', 'pull', `${srv.host}/quiet/app:1`], { env: FAST });
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain(srv.host);
    expect(r.stderr).toContain('no answer within the timeout (UND_ERR_HEADERS_TIMEOUT)');
    expect(r.stderr).toContain('hint: a slow registry or link: raise --timeout');
    expect(srv.connections()).toBeGreaterThan(1);
  });

  it('C11: slow loris, headers then one byte at a time: the idle timeout fires, ferry retries, then exits 6', async () => {
    const srv = await silentServer((s) => {
      s.once('data', () => {
        s.write('HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{');
        const drip = setInterval(() => (s.destroyed ? clearInterval(drip) : s.write(' ')), 3000);
        s.on('close', () => clearInterval(drip));
      });
    });
    const store = join(await tempDir(), 'store');
    const r = await ferry(['--store', store, '--timeout', '1', 'pull', `${srv.host}/drip/app:1`], { env: FAST });
    expect(r.code, r.stderr).toBe(6);
    expect(r.stderr).toContain('the transfer stalled for longer than the timeout (UND_ERR_BODY_TIMEOUT)');
    // The https probe, then the manifest asked for again after each cut body: 5 attempts.
    expect(srv.connections()).toBeGreaterThanOrEqual(5);
  });

  it('--timeout refuses zero and words', async () => {
    for (const bad of ['0', 'soon']) {
      const r = await ferry(['--timeout', bad, 'tags', '127.0.0.1:9/none/app']);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain('--timeout');
    }
  });
});

describe.skipIf(!hasTool('docker-registry'))('documents cut mid-body are asked for again', () => {
  it('C11: a manifest and a tag list whose bodies break off are fetched again and the pull succeeds', async () => {
    const reg = await startDistribution();
    const proxy = await startFaultProxy(reg.host);
    try {
      const store = join(await tempDir(), 'store');
      expect((await ferry(['copy', '-q', `oci:${TESTDATA}:multi`, `docker://${reg.host}/cut/app:1`])).code).toBe(0);
      // Every manifest and list response is cut after 20 bytes, once each.
      const cut = new Set<string>();
      proxy.setRule((req) => {
        if (req.method !== 'GET' || !/\/(manifests|tags)\//.test(req.url) || cut.has(req.url)) return undefined;
        cut.add(req.url);
        return { resetAfter: 20 };
      });
      const tags = await ferry(['tags', `${proxy.host}/cut/app`], { env: FAST });
      expect(tags.code, tags.stderr).toBe(0);
      expect(tags.stdout.trim()).toBe('1');
      const pulled = await ferry(['--store', store, 'pull', '--platform', 'all', `${proxy.host}/cut/app:1`], { env: FAST });
      expect(pulled.code, pulled.stderr).toBe(0);
      expect(pulled.stderr).toContain('retrying');
      expect(cut.size).toBeGreaterThanOrEqual(3);
      expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
    } finally {
      await proxy.stop();
      await reg.stop();
    }
  });
});

describe.skipIf(!hasTool('docker-registry'))('C7: resumed downloads answered with the wrong Content-Range', () => {
  async function setup() {
    const reg = await startDistribution();
    const proxy = await startFaultProxy(reg.host);
    const src = join(await tempDir(), 'src');
    await makeLayout(src, [{ tag: 'big', layers: [1 << 20] }]);
    expect((await ferry(['copy', '-q', `oci:${src}:big`, `docker://${reg.host}/range/app:1`])).code).toBe(0);
    return { reg, proxy, store: join(await tempDir(), 'store') };
  }
  const isBlob = (url: string) => /\/blobs\/sha256:/.test(url);

  it('C7: a wrong Content-Range once: the blob starts over and the pull succeeds', async () => {
    const { reg, proxy, store } = await setup();
    try {
      let lied = false;
      proxy.setRule((req) => {
        if (req.method !== 'GET' || !isBlob(req.url) || lied) return undefined;
        if (req.headers.range) {
          lied = true;
          return { setHeaders: { 'content-range': 'bytes 1-99/100' } };
        }
        return { resetAfter: 300_000 };
      });
      const r = await ferry(['--store', store, 'pull', `${proxy.host}/range/app:1`], { env: FAST });
      expect(r.code, r.stderr).toBe(0);
      expect(lied).toBe(true);
      expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
    } finally {
      await proxy.stop();
      await reg.stop();
    }
  });

  it('C7: a wrong Content-Range every time: attempts are capped, exit 6, nothing stored', async () => {
    const { reg, proxy, store } = await setup();
    try {
      proxy.setRule((req) => {
        if (req.method !== 'GET' || !isBlob(req.url)) return undefined;
        return req.headers.range ? { setHeaders: { 'content-range': 'bytes 1-99/100' } } : { resetAfter: 300_000 };
      });
      const r = await ferry(['--store', store, 'pull', `${proxy.host}/range/app:1`], { env: FAST });
      expect(r.code, r.stderr).toBe(6);
      expect(r.stderr).toContain('wrong offset');
      expect(proxy.seen.filter((s) => isBlob(s.url)).length).toBeLessThan(100);
      expect((await ferry(['--store', store, 'images', '--json'])).stdout.trim()).toBe('[]');
    } finally {
      await proxy.stop();
      await reg.stop();
    }
  });
});
