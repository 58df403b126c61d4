import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { RegistryClient } from '../src/locations/registry/client.js';
import { Http } from '../src/locations/registry/http.js';
import { RegistryRepository } from '../src/locations/registry/repository.js';
import type { Digest } from '../src/oci/digest.js';
import type { Descriptor } from '../src/oci/manifest.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { PASSWORD, startDistribution, USER, type RunningRegistry, type TokenServer } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry') && hasTool('openssl');

// Only ferry's clock is faked (Date): timers and I/O stay real, and so do the clocks of the token
// server and of the registry, which checks the tokens.
const wallClock = () => performance.timeOrigin + performance.now();

const descriptorOf = (bytes: Buffer): Descriptor => ({
  mediaType: 'application/vnd.oci.image.layer.v1.tar',
  digest: `sha256:${createHash('sha256').update(bytes).digest('hex')}` as Digest,
  size: bytes.byteLength,
});

/** `bytes` in 64 KiB pieces, calling `midway` once after the first `after` bytes. */
async function* pieces(bytes: Buffer, after: number, midway: () => void): AsyncGenerator<Buffer> {
  for (let i = 0; i < bytes.byteLength; i += 64 << 10) {
    if (i === after) midway();
    yield bytes.subarray(i, i + (64 << 10));
  }
}

describe.skipIf(!distribution)("bearer tokens expire by ferry's own clock (token TTL 300 s)", () => {
  let reg: RunningRegistry & { tokenServer?: TokenServer };
  let proxy: FaultProxy;
  const smallBytes = randomBytes(1000);
  const small = descriptorOf(smallBytes);
  const bigBytes = randomBytes(3 << 20);
  const big = descriptorOf(bigBytes);
  const https: Http[] = [];
  let t0 = 0;
  /** Sets ferry's clock to `s` seconds after the test began. */
  const at = (s: number) => vi.setSystemTime(t0 + s * 1000);
  const tokensIssued = () => reg.tokenServer!.requests.length;
  /** 401s, besides the one to a new client's first look at /v2/ (where it asks http or https). */
  const refusals = (since: number) => proxy.seen.slice(since).filter((q) => q.status === 401 && q.url !== '/v2/').length;

  /** A fresh client (an empty token cache) that logs in with the test credentials. */
  const client = () => {
    const http = new Http({ backoffMs: 20 });
    https.push(http);
    return new RegistryClient({ domain: proxy.host, http, credential: { username: USER, secret: PASSWORD } });
  };
  const head = async (c: RegistryClient) => {
    const res = await c.request({ method: 'HEAD', path: `/v2/expiry/app/blobs/${small.digest}`, scopes: ['repository:expiry/app:pull'] });
    await res.body.dump();
    expect(res.status).toBe(200);
  };
  /** Runs `steps` from a fresh client; how many tokens were fetched and how many 401s the registry sent. */
  const counting = async (steps: () => Promise<void>) => {
    const [tokens, seen] = [tokensIssued(), proxy.seen.length];
    await steps();
    return { tokens: tokensIssued() - tokens, refusals: refusals(seen) };
  };

  /** A fresh token serves `c` until `kept` s (a second request then), and at `renewed` s a new one is fetched first, with no 401. */
  const expectRenewal = async (c: RegistryClient, kept: number, renewed: number, label?: string) => {
    expect(await counting(async () => {
      await head(c);
      at(kept);
      await head(c);
    }), label).toEqual({ tokens: 1, refusals: 1 });
    at(renewed);
    expect(await counting(() => head(c)), label).toEqual({ tokens: 1, refusals: 0 });
  };

  beforeAll(async () => {
    reg = await startDistribution({ auth: 'token', tokenTtl: 300 });
    proxy = await startFaultProxy(reg.host);
    const repo = new RegistryRepository(client(), 'expiry/app');
    await repo.put(small, Readable.from([smallBytes]));
    await repo.put(big, Readable.from([bigBytes]));
  });

  afterAll(async () => {
    await Promise.all(https.map((h) => h.close()));
    await proxy?.stop();
    await reg?.stop();
  });

  beforeEach(() => {
    t0 = Math.floor(wallClock());
    vi.useFakeTimers({ toFake: ['Date'] });
    vi.setSystemTime(t0);
  });

  afterEach(() => {
    vi.useRealTimers();
    reg.tokenServer!.setReply(undefined);
    reg.tokenServer!.setDelay(0);
  });

  it('one token serves every request of its lifetime; once it has run out the next request fetches a new one first, with no 401', async () => {
    const c = client();
    // The first request learns from the registry's 401 how to authenticate: the only 401.
    expect(await counting(async () => {
      for (let i = 0; i < 3; i++) await head(c);
      at(200);
      for (let i = 0; i < 3; i++) await head(c);
      at(294); // 300 s less ferry's 5 s margin: still good
      await head(c);
    })).toEqual({ tokens: 1, refusals: 1 });
    at(296);
    expect(await counting(() => head(c))).toEqual({ tokens: 1, refusals: 0 });
    at(400);
    expect(await counting(() => head(c))).toEqual({ tokens: 0, refusals: 0 });
    // Requests at once after the expiry share one renewal.
    at(700);
    expect(await counting(async () => void (await Promise.all([head(c), head(c), head(c), head(c)])))).toEqual({ tokens: 1, refusals: 0 });
  });

  /** A client whose token has run out, and a request of it that renews, cancelled 100 ms into a 400 ms renewal. */
  const cancelledDuringRenewal = async () => {
    const c = client();
    await head(c);
    at(400);
    reg.tokenServer!.setDelay(400);
    const cancelled = new AbortController();
    const first = c.request({ method: 'HEAD', path: `/v2/expiry/app/blobs/${small.digest}`, scopes: ['repository:expiry/app:pull'], signal: cancelled.signal });
    setTimeout(() => cancelled.abort(new Error('cancelled by the test')), 100);
    return { c, first: expect(first).rejects.toThrow('cancelled by the test') };
  };

  it('a request cancelled while it waits on a shared renewal does not cancel the renewal for the others', async () => {
    const { c, first } = await cancelledDuringRenewal();
    const counted = counting(() => head(c));
    await first;
    expect(await counted).toEqual({ tokens: 1, refusals: 0 });
  });

  it('a renewal every waiter gave up on is cancelled, and the next request starts a new one', async () => {
    const { c, first } = await cancelledDuringRenewal();
    await first;
    reg.tokenServer!.setDelay(0);
    expect(await counting(() => head(c))).toEqual({ tokens: 1, refusals: 0 });
  });

  it('a token without expires_in lasts 60 s, and one with less than 60 s is taken to last 60 s', async () => {
    reg.tokenServer!.setReply(({ token, issued_at }) => ({ token, issued_at }));
    const c = client();
    await expectRenewal(c, 54, 56);

    reg.tokenServer!.setReply((r) => ({ ...r, expires_in: 10 }));
    at(0);
    const d = client();
    await expectRenewal(d, 54, 56);
  });

  it('issued_at counts: a token the server issued 30 s before it answered is renewed 30 s sooner', async () => {
    reg.tokenServer!.setReply((r) => ({ ...r, expires_in: 60, issued_at: new Date(Date.parse(r.issued_at) - 30_000).toISOString() }));
    const c = client();
    await expectRenewal(c, 24, 26);
  });

  it("a clock an hour off the token server's neither throws tokens away nor keeps them too long", async () => {
    for (const skew of [3600, -3600]) {
      at(skew);
      const c = client();
      expect(await counting(async () => {
        for (let i = 0; i < 3; i++) await head(c);
        at(skew + 294);
        await head(c);
      }), `skew ${skew} s`).toEqual({ tokens: 1, refusals: 1 });
      at(skew + 296);
      expect(await counting(() => head(c)), `skew ${skew} s`).toEqual({ tokens: 1, refusals: 0 });
    }
  });

  it('a pull whose blob streams across the expiry completes, and the next request renews first', async () => {
    const c = client();
    const repo = new RegistryRepository(c, 'expiry/app');
    const got: Buffer[] = [];
    expect(await counting(async () => {
      let n = 0;
      for await (const chunk of await repo.fetch(big)) {
        if ((n += (chunk as Buffer).byteLength) > 1 << 20) at(400);
        got.push(chunk as Buffer);
      }
    })).toEqual({ tokens: 1, refusals: 1 });
    expect(Buffer.concat(got).equals(bigBytes)).toBe(true);
    expect(await counting(() => head(c))).toEqual({ tokens: 1, refusals: 0 });
  });

  it('a chunked push across the expiry renews the token before the next chunk: no 401, no chunk sent twice', async () => {
    const c = client();
    const repo = new RegistryRepository(c, 'expiry/pushed', { monolithicMax: 1 << 20, chunkSize: 512 << 10 });
    const bytes = randomBytes(3 << 20);
    const d = descriptorOf(bytes);
    const seen = proxy.seen.length;
    expect(await counting(async () => {
      await repo.put(d, Readable.from(pieces(bytes, 1280 << 10, () => at(400))), { reopen: async (from) => Readable.from([bytes.subarray(from)]) });
    })).toEqual({ tokens: 2, refusals: 1 });
    expect(proxy.seen.slice(seen).filter((q) => q.method === 'PATCH')).toHaveLength(6);
    const res = await c.request({ method: 'GET', path: `/v2/expiry/pushed/blobs/${d.digest}`, scopes: ['repository:expiry/pushed:pull'] });
    expect(Buffer.from(await res.body.arrayBuffer()).equals(bytes)).toBe(true);
  });

  it('a monolithic push whose body streams across the expiry completes', async () => {
    const c = client();
    const repo = new RegistryRepository(c, 'expiry/whole');
    const bytes = randomBytes(2 << 20);
    const d = descriptorOf(bytes);
    expect(await counting(async () => {
      await repo.put(d, Readable.from(pieces(bytes, 1 << 20, () => at(400))));
    })).toEqual({ tokens: 1, refusals: 1 });
    expect(await repo.has(d)).toBe(true);
  });
});
