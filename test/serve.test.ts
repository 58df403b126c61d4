import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { request as httpRequest } from 'node:http';
import { appendFile, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bcryptHash, bcryptVerify } from '../src/serve/bcrypt.js';
import { parseRange } from '../src/serve/blobs.js';
import { paginate } from '../src/serve/listing.js';
import { repoKeyFor, repositoryFor } from '../src/serve/names.js';
import { Uploads } from '../src/serve/uploads.js';
import { RegistryError } from '../src/serve/errors.js';
import { ferry } from './helpers/cli.js';
import { blobFile, indexEntries, testdataImages, type ImageInfo, type Tag } from './helpers/expected-images.js';
import { makeLayout } from './helpers/images.js';
import { connect as netConnect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { selfSignedCert } from './helpers/registry.js';
import { startServe, type Served } from './helpers/serve.js';
import { hasTool } from './helpers/tools.js';
import { startFaultProxy } from './helpers/fault-proxy.js';
import { copy } from '../src/copy.js';
import { OciLayout } from '../src/locations/layout.js';
import { closeRegistryClients, registryClient } from '../src/locations/registry/pool.js';
import { RegistryRepository } from '../src/locations/registry/repository.js';

const htpasswdTool = hasTool('htpasswd');
const openssl = hasTool('openssl');

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const ALL_MANIFESTS = [OCI_INDEX, OCI_MANIFEST, 'application/vnd.docker.distribution.manifest.list.v2+json', DOCKER_MANIFEST].join(', ');

const sha256 = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  json<T = any>(): T;
  /** The first error code of a distribution error body. */
  code(): string | undefined;
}

async function call(url: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer | string; dispatcher?: Agent } = {}): Promise<Reply> {
  const r = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers: opts.headers, body: opts.body, dispatcher: opts.dispatcher });
  const body = Buffer.from(await r.body.arrayBuffer());
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(r.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : String(v);
  return {
    status: r.statusCode,
    headers,
    body,
    json: () => JSON.parse(body.toString()),
    code: () => {
      try {
        return JSON.parse(body.toString()).errors?.[0]?.code;
      } catch {
        return undefined;
      }
    },
  };
}

/** A small image built in memory: one random layer, a config, an OCI manifest. */
function makeImage(extra: Record<string, unknown> = {}) {
  const layer = randomBytes(2000 + Math.floor(Math.random() * 1000));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256(layer)] }, n: randomBytes(4).toString('hex') }));
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: OCI_MANIFEST,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256(layer), size: layer.length }],
      ...extra,
    }),
  );
  return { layer, config, manifest, digest: sha256(manifest) };
}

async function pushBlob(base: string, repo: string, data: Buffer): Promise<Reply> {
  return call(`${base}/v2/${repo}/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data, headers: { 'content-type': 'application/octet-stream' } });
}

async function pushImage(base: string, repo: string, ref: string, img = makeImage()): Promise<ReturnType<typeof makeImage> & { reply: Reply }> {
  expect((await pushBlob(base, repo, img.layer)).status).toBe(201);
  expect((await pushBlob(base, repo, img.config)).status).toBe(201);
  const reply = await call(`${base}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': OCI_MANIFEST } });
  return { ...img, reply };
}

/** A store holding some testdata images under their names (example.com/ferry/testdata:TAG). */
/** `ferry serve --tls-cert --tls-key` with a fresh self-signed certificate for 127.0.0.1. */
async function tlsServe(): Promise<{ cert: string; s: Awaited<ReturnType<typeof startServe>> }> {
  const dir = await tempDir();
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  selfSignedCert(key, cert);
  return { cert, s: await startServe(join(dir, 'store'), ['--tls-cert', cert, '--tls-key', key]) };
}

async function seededStore(tags: Tag[]): Promise<string> {
  const store = join(await tempDir(), 'store');
  for (const t of tags) {
    const r = await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:${t}`, `example.com/ferry/testdata:${t}`]);
    expect(r.code, r.stderr).toBe(0);
  }
  return store;
}

let images: Record<Tag, ImageInfo>;
beforeAll(async () => {
  images = await testdataImages();
});

describe('ferry serve: names, pages, ranges, bcrypt (units)', () => {
  it('maps repository names to store names the way docker normalises image names', () => {
    expect(repoKeyFor('team/app')).toBe('docker.io/team/app');
    expect(repoKeyFor('alpine')).toBe('docker.io/library/alpine');
    expect(repoKeyFor('library/alpine')).toBe('docker.io/library/alpine');
    expect(repoKeyFor('example.com/ferry/testdata')).toBe('example.com/ferry/testdata');
    expect(repositoryFor('docker.io/library/alpine')).toBe('library/alpine');
    expect(repositoryFor('example.com/ferry/testdata')).toBe('example.com/ferry/testdata');
    expect(repositoryFor('registry.internal:5000/team/api')).toBeUndefined();
    expect(repositoryFor('docker.io/foo.com/x')).toBe('docker.io/foo.com/x');
    for (const bad of ['Upper/case', 'a//b', '/a', 'a/', 'a..b', '-a', 'a'.repeat(64).replace(/a/g, 'f'), 'x'.repeat(256), 'host:5000/a']) {
      expect(() => repoKeyFor(bad), bad).toThrow(/invalid repository name/);
    }
  });

  it('paginates with n and last, and offers a next page only when one exists', () => {
    const all = Array.from({ length: 25 }, (_, i) => `t${String(i).padStart(2, '0')}`);
    const u = (q: string) => new URL(`http://x/?${q}`);
    expect(paginate(all, u('n=10')).items).toEqual(all.slice(0, 10));
    expect(paginate(all, u('n=10')).next?.get('last')).toBe('t09');
    expect(paginate(all, u('n=10&last=t19')).next).toBeUndefined();
    expect(paginate(all, u('n=0')).items).toEqual([]);
    expect(paginate(all, u('last=t24')).items).toEqual([]);
    expect(paginate(all, u('')).items).toHaveLength(25);
  });

  it('parses Range headers: one range served, malformed ignored, beyond the end unsatisfiable', () => {
    expect(parseRange('bytes=10-19', 100)).toEqual({ start: 10, end: 19 });
    expect(parseRange('bytes=90-', 100)).toEqual({ start: 90, end: 99 });
    expect(parseRange('bytes=-5', 100)).toEqual({ start: 95, end: 99 });
    expect(parseRange('bytes=50-500', 100)).toEqual({ start: 50, end: 99 });
    expect(parseRange('bytes=100-', 100)).toBe('unsatisfiable');
    expect(parseRange('bytes=0-1,5-6', 100)).toBeUndefined();
    expect(parseRange('items=0-1', 100)).toBeUndefined();
  });

  it.skipIf(!htpasswdTool)('bcrypt verifies what htpasswd -B writes (costs 4-6, UTF-8, over 72 bytes)', () => {
    const cases: Array<[string, string]> = [['4', 'pass'], ['5', ''], ['5', 'pässwörd ✓'], ['6', 'x'.repeat(71) + 'yz-ignored-after-72']];
    for (const [cost, password] of cases) {
      const line = execFileSync('htpasswd', ['-Bbn', '-C', cost, 'user', password]).toString().trim();
      const hash = line.slice('user:'.length);
      expect(bcryptVerify(password, hash), `${cost} ${password}`).toBe(true);
      expect(bcryptVerify(password + '!', hash)).toBe(password.length > 72);
      expect(bcryptHash(password, hash)).toBe(hash);
    }
    expect(bcryptVerify('pass', '$2y$05$short')).toBe(false);
  });
});

describe('ferry serve: the distribution API', () => {
  let s: Served;
  let base: string;
  beforeAll(async () => {
    s = await startServe(await seededStore(['layers', 'multi', 'docker']));
    base = s.url;
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('answers the /v2/ ping with the API version header', async () => {
    const r = await call(`${base}/v2/`);
    expect(r.status).toBe(200);
    expect(r.headers['docker-distribution-api-version']).toBe('registry/2.0');
  });

  it('serves store images under their names: GET and HEAD by tag, with digest, type and length', async () => {
    const url = `${base}/v2/example.com/ferry/testdata/manifests/layers`;
    const get = await call(url, { headers: { accept: ALL_MANIFESTS } });
    expect(get.status).toBe(200);
    expect(sha256(get.body)).toBe(images.layers.digest);
    expect(get.headers['docker-content-digest']).toBe(images.layers.digest);
    expect(get.headers['content-type']).toBe(OCI_MANIFEST);
    expect(Number(get.headers['content-length'])).toBe(images.layers.size);
    const head = await call(url, { method: 'HEAD', headers: { accept: ALL_MANIFESTS } });
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
    expect(head.headers['docker-content-digest']).toBe(images.layers.digest);
    expect(Number(head.headers['content-length'])).toBe(images.layers.size);
  });

  it('If-None-Match naming the current digest is answered 304 without a body; another digest gets the manifest', async () => {
    const url = `${base}/v2/example.com/ferry/testdata/manifests/layers`;
    const etag = `"${images.layers.digest}"`;
    for (const inm of [etag, `W/${etag}`, `"sha256:${'0'.repeat(64)}", ${etag}`, '*']) {
      for (const method of ['HEAD', 'GET']) {
        const r = await call(url, { method, headers: { accept: ALL_MANIFESTS, 'if-none-match': inm } });
        expect(r.status, `${method} ${inm}`).toBe(304);
        expect(r.body.length).toBe(0);
        expect(r.headers['docker-content-digest']).toBe(images.layers.digest);
        expect(r.headers.etag).toBe(etag);
      }
    }
    const moved = await call(url, { headers: { accept: ALL_MANIFESTS, 'if-none-match': `"sha256:${'0'.repeat(64)}"` } });
    expect(moved.status).toBe(200);
    expect(sha256(moved.body)).toBe(images.layers.digest);
    // Content negotiation still comes first: a type the client cannot read is not "not modified".
    const refused = await call(url, { method: 'HEAD', headers: { accept: DOCKER_MANIFEST, 'if-none-match': etag } });
    expect(refused.status).toBe(404);
  });

  it('serves an index and its children by digest in the same repository', async () => {
    const idx = await call(`${base}/v2/example.com/ferry/testdata/manifests/multi`, { headers: { accept: ALL_MANIFESTS } });
    expect(idx.headers['content-type']).toBe(OCI_INDEX);
    for (const child of idx.json().manifests as Array<{ digest: string; mediaType: string }>) {
      const r = await call(`${base}/v2/example.com/ferry/testdata/manifests/${child.digest}`, { headers: { accept: ALL_MANIFESTS } });
      expect(r.status).toBe(200);
      expect(sha256(r.body)).toBe(child.digest);
      expect(r.headers['content-type']).toBe(child.mediaType);
    }
    // The same digest in a repository whose images do not reach it is unknown there.
    const other = await call(`${base}/v2/other/repo/manifests/${images.layers.digest}`);
    expect(other.status).toBe(404);
    expect(other.code()).toBe('MANIFEST_UNKNOWN');
    // A layer is not a manifest.
    const layer = await call(`${base}/v2/example.com/ferry/testdata/manifests/${images.layers.layers![0]!.digest}`);
    expect(layer.status).toBe(404);
  });

  it('content negotiation: never serves a type the Accept header does not list; no Accept or */* takes anything', async () => {
    const url = `${base}/v2/example.com/ferry/testdata/manifests/layers`;
    const dockerOnly = await call(url, { headers: { accept: DOCKER_MANIFEST } });
    expect(dockerOnly.status).toBe(404);
    expect(dockerOnly.code()).toBe('MANIFEST_UNKNOWN');
    expect(dockerOnly.json().errors[0].message).toContain(`its media type is ${OCI_MANIFEST}, which the request's Accept header does not list`);
    expect((await call(url, { headers: { accept: `${OCI_MANIFEST};q=0.9` } })).status).toBe(200);
    expect((await call(url, { headers: { accept: '*/*' } })).status).toBe(200);
    expect((await call(url)).status).toBe(200);
    const docker = await call(`${base}/v2/example.com/ferry/testdata/manifests/docker`, { headers: { accept: OCI_MANIFEST } });
    expect(docker.status).toBe(404);
    const dockerOk = await call(`${base}/v2/example.com/ferry/testdata/manifests/docker`, { headers: { accept: DOCKER_MANIFEST } });
    expect(dockerOk.status).toBe(200);
    expect(dockerOk.headers['content-type']).toBe(DOCKER_MANIFEST);
  });

  it('error bodies follow the spec: {"errors":[{code,message,detail}]} with a JSON content type', async () => {
    const r = await call(`${base}/v2/example.com/ferry/testdata/manifests/nope`);
    expect(r.status).toBe(404);
    expect(r.headers['content-type']).toBe('application/json');
    const e = r.json().errors[0];
    expect(e.code).toBe('MANIFEST_UNKNOWN');
    expect(e.message).toContain('nope');
    expect(e.detail).toEqual({ name: 'example.com/ferry/testdata', reference: 'nope' });
  });

  it('A2: refuses bad repository names (400 NAME_INVALID) and bad digests (400 DIGEST_INVALID) before any use', async () => {
    for (const name of ['UPPER/case', 'a..b', 'f'.repeat(64), `${'x'.repeat(250)}/yyyyyy`]) {
      const r = await call(`${base}/v2/${name}/tags/list`);
      expect(r.status, name).toBe(400);
      expect(r.code()).toBe('NAME_INVALID');
    }
    for (const d of ['sha256:abc', 'sha256:..%2F..%2Fetc%2Fpasswd', `sha256:${'A'.repeat(64)}`, `md5:${'0'.repeat(32)}`, `sha256:${'0'.repeat(63)}g`]) {
      const blob = await call(`${base}/v2/x/y/blobs/${d}`);
      expect(blob.status, d).toBe(400);
      expect(blob.code()).toBe('DIGEST_INVALID');
      const manifest = await call(`${base}/v2/x/y/manifests/${d}`);
      expect(manifest.status).toBe(400);
      expect(manifest.code()).toBe('DIGEST_INVALID');
    }
    const tag = await call(`${base}/v2/x/y/manifests/-bad-tag`);
    expect(tag.status).toBe(400);
    expect(tag.code()).toBe('TAG_INVALID');
    const mount = await call(`${base}/v2/x/y/blobs/uploads/?mount=sha256:nope&from=x/z`, { method: 'POST' });
    expect(mount.code()).toBe('DIGEST_INVALID');
    expect(mount.json().errors[0].message).toBe('invalid digest "sha256:nope" in the mount parameter: sha256 needs 64 lowercase hex characters');
    // Said once, on every endpoint taking a digest.
    for (const path of ['manifests', 'blobs', 'referrers']) {
      const r = await call(`${base}/v2/x/y/${path}/sha256:abc`);
      expect(r.json().errors[0].message, path).toBe('invalid digest "sha256:abc": sha256 needs 64 lowercase hex characters');
    }
  });

  it('unknown endpoints are 404, unsupported methods 405', async () => {
    expect((await call(`${base}/v3/`)).status).toBe(404);
    const r = await call(`${base}/v2/x/y/tags/list`, { method: 'POST' });
    expect(r.status).toBe(405);
    expect(r.code()).toBe('UNSUPPORTED');
  });

  it('blobs: GET and HEAD with digest and length; Range answers 206 with Content-Range; unsatisfiable is 416', async () => {
    const layer = images.layers.layers![0]!;
    const bytes = await readFile(blobFile(TESTDATA, layer.digest));
    const url = `${base}/v2/example.com/ferry/testdata/blobs/${layer.digest}`;
    const get = await call(url);
    expect(get.status).toBe(200);
    expect(sha256(get.body)).toBe(layer.digest);
    expect(get.headers['docker-content-digest']).toBe(layer.digest);
    const head = await call(url, { method: 'HEAD' });
    expect(Number(head.headers['content-length'])).toBe(layer.size);
    const part = await call(url, { headers: { range: 'bytes=10-19' } });
    expect(part.status).toBe(206);
    expect(part.headers['content-range']).toBe(`bytes 10-19/${layer.size}`);
    expect(part.body).toEqual(bytes.subarray(10, 20));
    const tail = await call(url, { headers: { range: `bytes=${layer.size - 7}-` } });
    expect(tail.body).toEqual(bytes.subarray(layer.size - 7));
    const beyond = await call(url, { headers: { range: `bytes=${layer.size}-` } });
    expect(beyond.status).toBe(416);
    expect(beyond.headers['content-range']).toBe(`bytes */${layer.size}`);
    const unknown = await call(`${base}/v2/example.com/ferry/testdata/blobs/sha256:${'0'.repeat(64)}`);
    expect(unknown.status).toBe(404);
    expect(unknown.code()).toBe('BLOB_UNKNOWN');
  });

  it('blobs are global in the store: any repository name serves a blob the store holds', async () => {
    const layer = images.multi.platforms!['linux/amd64']!.layers[0]!;
    const r = await call(`${base}/v2/any/other/blobs/${layer.digest}`, { method: 'HEAD' });
    expect(r.status).toBe(200);
  });

  it('monolithic upload: POST ?digest= stores the blob (201, Location, Docker-Content-Digest)', async () => {
    const data = randomBytes(5000);
    const r = await pushBlob(base, 'up/mono', data);
    expect(r.status).toBe(201);
    expect(r.headers.location).toBe(`/v2/up/mono/blobs/${sha256(data)}`);
    expect(r.headers['docker-content-digest']).toBe(sha256(data));
    expect((await call(`${base}${r.headers.location}`)).body).toEqual(data);
  });

  it('sha512 digests are verified and stored under blobs/sha512', async () => {
    const data = randomBytes(3000);
    const d = `sha512:${createHash('sha512').update(data).digest('hex')}`;
    const r = await call(`${base}/v2/up/sha512/blobs/uploads/?digest=${d}`, { method: 'POST', body: data });
    expect(r.status).toBe(201);
    expect(await readFile(blobFile(s.store, d))).toEqual(data);
    // ferry verify hashes every blob with sha256 (reported): keep the shared store verifiable.
    await rm(blobFile(s.store, d));
  });

  it('POST opens a session (202, Location, Range 0-0, Docker-Upload-UUID); PUT ?digest= with the body finishes it', async () => {
    const start = await call(`${base}/v2/up/session/blobs/uploads/`, { method: 'POST' });
    expect(start.status).toBe(202);
    const uuid = start.headers['docker-upload-uuid']!;
    expect(start.headers.location).toBe(`/v2/up/session/blobs/uploads/${uuid}`);
    expect(start.headers.range).toBe('0-0');
    const data = randomBytes(10_000);
    const put = await call(`${base}${start.headers.location}?digest=${sha256(data)}`, { method: 'PUT', body: data });
    expect(put.status).toBe(201);
    expect(put.headers['docker-content-digest']).toBe(sha256(data));
    expect((await call(`${base}/v2/up/session/blobs/${sha256(data)}`)).body).toEqual(data);
    expect((await call(`${base}${start.headers.location}`)).code()).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('C15: chunked upload: PATCH with Content-Range, a wrong start is 416 with the current Range, GET status, resume, PUT', async () => {
    const data = randomBytes(300_000);
    const start = await call(`${base}/v2/up/chunked/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    const p1 = await call(loc, { method: 'PATCH', body: data.subarray(0, 100_000), headers: { 'content-range': '0-99999', 'content-type': 'application/octet-stream' } });
    expect(p1.status).toBe(202);
    expect(p1.headers.range).toBe('0-99999');
    expect(p1.headers.location).toBe(start.headers.location);
    const wrong = await call(loc, { method: 'PATCH', body: data.subarray(150_000, 200_000), headers: { 'content-range': '150000-199999' } });
    expect(wrong.status).toBe(416);
    expect(wrong.headers.range).toBe('0-99999');
    const again = await call(loc, { method: 'PATCH', body: data.subarray(0, 10), headers: { 'content-range': '0-9' } });
    expect(again.status).toBe(416);
    const status = await call(loc);
    expect(status.status).toBe(204);
    expect(status.headers.range).toBe('0-99999');
    const offset = Number(status.headers.range!.split('-')[1]) + 1;
    const p2 = await call(loc, { method: 'PATCH', body: data.subarray(offset, 250_000), headers: { 'content-range': `${offset}-249999` } });
    expect(p2.status).toBe(202);
    expect(p2.headers.range).toBe('0-249999');
    const put = await call(`${loc}?digest=${sha256(data)}`, { method: 'PUT', body: data.subarray(250_000), headers: { 'content-range': '250000-299999' } });
    expect(put.status).toBe(201);
    expect((await call(`${base}/v2/up/chunked/blobs/${sha256(data)}`)).body).toEqual(data);
  });

  it('a PATCH whose Content-Range disagrees with Content-Length is SIZE_INVALID; a malformed Content-Range is 416', async () => {
    const start = await call(`${base}/v2/up/badrange/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    const r = await call(loc, { method: 'PATCH', body: Buffer.alloc(10), headers: { 'content-range': '0-19' } });
    expect(r.status).toBe(400);
    expect(r.code()).toBe('SIZE_INVALID');
    const bad = await call(loc, { method: 'PATCH', body: Buffer.alloc(10), headers: { 'content-range': 'bytes */10' } });
    expect(bad.status).toBe(416);
    expect((await call(loc)).headers.range).toBe('0-0');
  });

  it('a streamed chunk longer or shorter than its Content-Range is SIZE_INVALID and not applied: the upload stays where it was', async () => {
    const data = randomBytes(3000);
    const start = await call(`${base}/v2/up/overlong/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    expect((await call(loc, { method: 'PATCH', body: data.subarray(0, 1000), headers: { 'content-range': '0-999' } })).status).toBe(202);
    // No Content-Length (chunked transfer encoding): the size is only known once the body has arrived.
    for (const chunk of [randomBytes(1500), randomBytes(400)]) {
      const r = await request(loc, { method: 'PATCH', body: Readable.from([chunk]), headers: { 'content-range': '1000-1999' } });
      const body = JSON.parse(await r.body.text());
      expect(r.statusCode).toBe(400);
      expect(body.errors[0].code).toBe('SIZE_INVALID');
      expect(r.headers.range).toBe('0-999');
      expect((await call(loc)).headers.range).toBe('0-999');
    }
    expect((await call(loc, { method: 'PATCH', body: data.subarray(1000), headers: { 'content-range': '1000-2999' } })).status).toBe(202);
    expect((await call(`${loc}?digest=${sha256(data)}`, { method: 'PUT' })).status).toBe(201);
    expect((await call(`${base}/v2/up/overlong/blobs/${sha256(data)}`)).body).toEqual(data);
  });

  it('streamed PATCH bodies without Content-Range are appended', async () => {
    const data = randomBytes(200_000);
    const start = await call(`${base}/v2/up/stream/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    async function* body() {
      for (let i = 0; i < data.length; i += 30_000) {
        yield data.subarray(i, i + 30_000);
        await sleep(1);
      }
    }
    const r = await request(loc, { method: 'PATCH', body: Readable.from(body()) });
    await r.body.dump();
    expect(r.statusCode).toBe(202);
    expect(r.headers.range).toBe(`0-${data.length - 1}`);
    expect((await call(`${loc}?digest=${sha256(data)}`, { method: 'PUT' })).status).toBe(201);
  });

  it('C15: a corrupt upload is refused with DIGEST_INVALID and nothing is published', async () => {
    const data = randomBytes(50_000);
    const claimed = sha256(Buffer.concat([data, Buffer.from('x')]));
    const start = await call(`${base}/v2/up/corrupt/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    expect((await call(loc, { method: 'PATCH', body: data })).status).toBe(202);
    const put = await call(`${loc}?digest=${claimed}`, { method: 'PUT' });
    expect(put.status).toBe(400);
    expect(put.code()).toBe('DIGEST_INVALID');
    expect(put.json().errors[0].message).toContain(sha256(data));
    for (const d of [claimed, sha256(data)]) expect((await call(`${base}/v2/up/corrupt/blobs/${d}`, { method: 'HEAD' })).status).toBe(404);
    expect((await call(loc)).code()).toBe('BLOB_UPLOAD_UNKNOWN');
    const mono = await call(`${base}/v2/up/corrupt/blobs/uploads/?digest=${claimed}`, { method: 'POST', body: data });
    expect(mono.code()).toBe('DIGEST_INVALID');
    const other = await call(`${base}/v2/up/corrupt/blobs/uploads/`, { method: 'POST' });
    const missing = await call(`${base}${other.headers.location}`, { method: 'PUT', body: data });
    expect(missing.status).toBe(400);
    expect(missing.code()).toBe('DIGEST_INVALID');
    expect(await readdir(join(s.store, '.ferry-uploads'))).not.toContain(start.headers['docker-upload-uuid']);
  });

  it('H5: an upload interrupted by closing the socket mid-PATCH resumes from the offset the server reports', async () => {
    const data = randomBytes(2_000_000);
    const start = await call(`${base}/v2/up/interrupted/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    await new Promise<void>((resolve) => {
      const req = httpRequest(loc, { method: 'PATCH', headers: { 'content-length': data.length, 'content-type': 'application/octet-stream' } });
      req.on('error', () => resolve());
      req.write(data.subarray(0, 1_000_000), () => {
        setTimeout(() => {
          req.destroy();
          resolve();
        }, 200);
      });
    });
    const status = await call(loc);
    expect(status.status).toBe(204);
    const offset = Number(status.headers.range!.split('-')[1]) + 1;
    expect(offset).toBeGreaterThan(0);
    expect(offset).toBeLessThanOrEqual(1_000_000);
    const rest = await call(loc, { method: 'PATCH', body: data.subarray(offset), headers: { 'content-range': `${offset}-${data.length - 1}` } });
    expect(rest.status).toBe(202);
    const put = await call(`${loc}?digest=${sha256(data)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(sha256((await call(`${base}/v2/up/interrupted/blobs/${sha256(data)}`)).body)).toBe(sha256(data));
  });

  /**
   * A PATCH whose connection stays open with its chunk half sent (over 1 MiB: a batch of it written),
   * as a connection that died without the server noticing looks to the server.
   */
  async function stalePatch(loc: string, data: Buffer, from: number, sent: number) {
    const req = httpRequest(loc, { method: 'PATCH', headers: { 'content-range': `${from}-${data.length - 1}`, 'content-length': data.length - from } });
    req.on('error', () => {});
    let closed = false;
    const gone = new Promise<void>((ok) => req.on('close', () => ((closed = true), ok())));
    await new Promise<void>((ok) => req.write(data.subarray(from, from + sent), () => ok()));
    await sleep(300);
    return { req, gone, closed: () => closed };
  }

  /** `p`, or a failure after `ms` (a request queued behind a stale one would wait for the 120 s idle timeout). */
  const soon = <T,>(p: Promise<T>, ms = 5000): Promise<T> => Promise.race([p, sleep(ms).then(() => Promise.reject(new Error(`no answer within ${ms} ms`)))]);

  it('a status GET is answered at once while an earlier PATCH still streams, with the durable offset; a PATCH from there cuts the old one off and proceeds at once', async () => {
    const data = randomBytes(3_000_000);
    const start = await call(`${base}/v2/up/stale/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    expect((await call(loc, { method: 'PATCH', body: data.subarray(0, 100_000), headers: { 'content-range': '0-99999' } })).status).toBe(202);
    const stale = await stalePatch(loc, data, 100_000, 1_500_000);
    const t0 = Date.now();
    const status = await call(loc);
    expect(Date.now() - t0).toBeLessThan(1000);
    expect(status.status).toBe(204);
    expect(status.headers.range).toBe('0-99999');
    expect(status.headers.location).toBe(start.headers.location);
    // A status aborts nothing.
    await sleep(200);
    expect(stale.closed()).toBe(false);
    // The client resumes from the reported offset: the old PATCH is cut off, its bytes taken back.
    const rest = await soon(call(loc, { method: 'PATCH', body: data.subarray(100_000), headers: { 'content-range': `100000-${data.length - 1}` } }));
    expect(rest.status).toBe(202);
    expect(rest.headers.range).toBe(`0-${data.length - 1}`);
    await soon(stale.gone);
    expect((await call(loc)).headers.range).toBe(`0-${data.length - 1}`);
    expect((await soon(call(`${loc}?digest=${sha256(data)}`, { method: 'PUT' }))).status).toBe(201);
    expect(sha256((await call(`${base}/v2/up/stale/blobs/${sha256(data)}`)).body)).toBe(sha256(data));
    // A status GET of an unknown or finished upload is still BLOB_UPLOAD_UNKNOWN.
    expect((await call(loc)).code()).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('the final PUT with the last chunk cuts off earlier PATCHes still streaming (the running one and one queued); a PATCH from a wrong offset does too, and gets 416 with the durable Range', async () => {
    const data = randomBytes(2_500_000);
    const start = await call(`${base}/v2/up/stale-put/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    expect((await call(loc, { method: 'PATCH', body: data.subarray(0, 100_000), headers: { 'content-range': '0-99999' } })).status).toBe(202);
    // A PATCH that assumes the stale chunk's bytes arrived is refused: they were never applied.
    const first = await stalePatch(loc, data, 100_000, 1_500_000);
    const wrong = await soon(call(loc, { method: 'PATCH', body: data.subarray(1_200_000, 1_300_000), headers: { 'content-range': '1200000-1299999' } }));
    expect(wrong.status).toBe(416);
    expect(wrong.headers.range).toBe('0-99999');
    await soon(first.gone);
    // The final PUT carrying the rest, while another stale PATCH holds the session and a third waits behind it.
    const second = await stalePatch(loc, data, 100_000, 1_200_000);
    const third = await stalePatch(loc, data, 100_000, 200_000);
    const put = await soon(call(`${loc}?digest=${sha256(data)}`, { method: 'PUT', body: data.subarray(100_000), headers: { 'content-range': `100000-${data.length - 1}` } }));
    expect(put.status, put.body.toString()).toBe(201);
    await soon(Promise.all([second.gone, third.gone]));
    expect(sha256((await call(`${base}/v2/up/stale-put/blobs/${sha256(data)}`)).body)).toBe(sha256(data));
  });

  it('a DELETE of the upload cuts off a PATCH still streaming, and the upload is gone at once', async () => {
    const data = randomBytes(2_500_000);
    const start = await call(`${base}/v2/up/stale-delete/blobs/uploads/`, { method: 'POST' });
    const loc = `${base}${start.headers.location}`;
    const stale = await stalePatch(loc, data, 0, 1_500_000);
    expect((await soon(call(loc, { method: 'DELETE' }))).status).toBe(204);
    await soon(stale.gone);
    expect((await call(loc)).code()).toBe('BLOB_UPLOAD_UNKNOWN');
  });

  it('a chunked push resumes in place from what the registry holds when that is more than was acknowledged (a lost answer, a status from before it, a 416)', async () => {
    const proxy = await startFaultProxy(s.host);
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 't', layers: [3 << 20] }]);
    const uploads = '/v2/up/lost-answer/blobs/uploads/';
    let patches = 0;
    let stale = false;
    proxy.setRule((q) => {
      if (!q.url.includes(uploads)) return undefined;
      // The third chunk is applied but its answer lost; the status that follows is the one a server
      // gives while that PATCH still runs: without the chunk.
      if (q.method === 'PATCH' && ++patches === 3) return { dropResponse: true };
      if (q.method === 'GET' && patches === 3 && !stale) {
        stale = true;
        return { status: 204, headers: { range: `0-${(1 << 20) - 1}` } };
      }
      return undefined;
    });
    try {
      const repo = new RegistryRepository(registryClient(proxy.host), 'up/lost-answer', { monolithicMax: 1 << 20, chunkSize: 512 << 10 });
      const r = await copy(await OciLayout.open(src), repo, [{ ref: 't', names: [{ tag: '1' }] }]);
      expect(r.images[0]!.digest).toBe(img!.manifest.digest);
    } finally {
      await closeRegistryClients();
      await proxy.stop();
    }
    const seen = proxy.seen.filter((q) => q.url.includes(uploads)).map((q) => `${q.method} ${q.status ?? '-'}`);
    const lost = seen.indexOf('PATCH -');
    // The stale status is the proxy's own answer (no status recorded for it).
    expect(seen.slice(lost, lost + 5), seen.join(', ')).toEqual(['PATCH -', 'GET -', 'PATCH 416', 'GET 204', 'PATCH 202']);
    const back = join(await tempDir(), 'back');
    expect((await ferry(['copy', `docker://${s.host}/up/lost-answer:1`, `oci:${back}:x`])).code).toBe(0);
    expect((await ferry(['verify', back])).code).toBe(0);
  });

  it('uploads belong to their repository; unknown and malformed session ids are BLOB_UPLOAD_UNKNOWN; DELETE cancels', async () => {
    const start = await call(`${base}/v2/up/mine/blobs/uploads/`, { method: 'POST' });
    const uuid = start.headers['docker-upload-uuid']!;
    expect((await call(`${base}/v2/up/theirs/blobs/uploads/${uuid}`)).code()).toBe('BLOB_UPLOAD_UNKNOWN');
    for (const id of ['00000000-0000-0000-0000-000000000000', '..%2F..%2Findex.json', 'not-a-uuid']) {
      const r = await call(`${base}/v2/up/mine/blobs/uploads/${id}`, { method: 'PATCH', body: 'x' });
      expect(r.status, id).toBe(404);
      expect(r.code()).toBe('BLOB_UPLOAD_UNKNOWN');
    }
    const del = await call(`${base}${start.headers.location}`, { method: 'DELETE' });
    expect(del.status).toBe(204);
    expect((await call(`${base}${start.headers.location}`)).status).toBe(404);
  });

  it('cross-repository mount: 201 for a blob the store has, a new upload session (202) otherwise', async () => {
    const layer = images.layers.layers![1]!;
    const ok = await call(`${base}/v2/up/mounted/blobs/uploads/?mount=${layer.digest}&from=example.com/ferry/testdata`, { method: 'POST' });
    expect(ok.status).toBe(201);
    expect(ok.headers.location).toBe(`/v2/up/mounted/blobs/${layer.digest}`);
    expect(ok.headers['docker-content-digest']).toBe(layer.digest);
    const missing = await call(`${base}/v2/up/mounted/blobs/uploads/?mount=sha256:${'1'.repeat(64)}&from=example.com/ferry/testdata`, { method: 'POST' });
    expect(missing.status).toBe(202);
    expect(missing.headers.location).toMatch(/^\/v2\/up\/mounted\/blobs\/uploads\/[0-9a-f-]{36}$/);
  });

  it('manifest PUT by tag: 201 with Location and digest; pulled back byte for byte; listed by ferry images', async () => {
    const img = await pushImage(base, 'team/app', '1');
    expect(img.reply.status).toBe(201);
    expect(img.reply.headers['docker-content-digest']).toBe(img.digest);
    expect(img.reply.headers.location).toBe(`/v2/team/app/manifests/${img.digest}`);
    expect(img.reply.headers['oci-subject']).toBeUndefined();
    const back = await call(`${base}/v2/team/app/manifests/1`, { headers: { accept: OCI_MANIFEST } });
    expect(back.body).toEqual(img.manifest);
    const list = await ferry(['--store', s.store, 'images']);
    expect(list.stdout).toMatch(new RegExp(`team/app\\s+1\\s+${img.digest.slice(7, 19)}`));
    const entry = (await indexEntries(s.store)).find((e) => e.digest === img.digest)!;
    expect(entry.annotations).toEqual({ 'org.opencontainers.image.ref.name': '1', 'io.containerd.image.name': 'docker.io/team/app:1' });
  });

  it('names: a push to "alpine" is docker.io/library/alpine in the store, served as alpine and library/alpine', async () => {
    const img = await pushImage(base, 'alpine', '3.20');
    expect(img.reply.status).toBe(201);
    expect((await call(`${base}/v2/library/alpine/manifests/3.20`)).status).toBe(200);
    expect((await call(`${base}/v2/alpine/tags/list`)).json()).toEqual({ name: 'alpine', tags: ['3.20'] });
    const inspect = await ferry(['--store', s.store, 'inspect', '--raw', 'alpine:3.20']);
    expect(inspect.stdout).toBe(img.manifest.toString());
    expect((await call(`${base}/v2/_catalog`)).json().repositories).toContain('library/alpine');
  });

  it('manifest PUT by digest: the digest must match; the manifest is kept as an untagged entry and survives gc', async () => {
    const img = makeImage();
    const wrong = await pushImage(base, 'team/bydigest', `sha256:${'2'.repeat(64)}`, img);
    expect(wrong.reply.status).toBe(400);
    expect(wrong.reply.code()).toBe('DIGEST_INVALID');
    const ok = await call(`${base}/v2/team/bydigest/manifests/${img.digest}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': OCI_MANIFEST } });
    expect(ok.status).toBe(201);
    const entry = (await indexEntries(s.store)).find((e) => e.digest === img.digest)!;
    expect(entry.annotations).toEqual({ 'io.containerd.image.name': `docker.io/team/bydigest@${img.digest}` });
    const gc = await ferry(['--store', s.store, 'gc']);
    expect(gc.code, gc.stderr).toBe(0);
    expect((await call(`${base}/v2/team/bydigest/manifests/${img.digest}`)).status).toBe(200);
    expect((await call(`${base}/v2/team/bydigest/blobs/${sha256(img.layer)}`)).status).toBe(200);
    expect((await call(`${base}/v2/team/bydigest/tags/list`)).json().tags).toEqual([]);
  });

  it('MANIFEST_BLOB_UNKNOWN: a manifest or index referencing what the store lacks is refused; a missing subject is fine', async () => {
    const img = makeImage();
    expect((await pushBlob(base, 'team/missing', img.config)).status).toBe(201);
    const r = await call(`${base}/v2/team/missing/manifests/1`, { method: 'PUT', body: img.manifest, headers: { 'content-type': OCI_MANIFEST } });
    expect(r.status).toBe(400);
    expect(r.code()).toBe('MANIFEST_BLOB_UNKNOWN');
    expect(r.json().errors[0].detail.digest).toBe(sha256(img.layer));
    const index = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [{ mediaType: OCI_MANIFEST, digest: `sha256:${'3'.repeat(64)}`, size: 10 }] });
    const i = await call(`${base}/v2/team/missing/manifests/idx`, { method: 'PUT', body: index, headers: { 'content-type': OCI_INDEX } });
    expect(i.code()).toBe('MANIFEST_BLOB_UNKNOWN');
    const withSubject = await pushImage(base, 'team/missing', 'sub', makeImage({ subject: { mediaType: OCI_MANIFEST, digest: `sha256:${'4'.repeat(64)}`, size: 1 } }));
    expect(withSubject.reply.status).toBe(201);
    expect(withSubject.reply.headers['oci-subject']).toBe(`sha256:${'4'.repeat(64)}`);
    expect((await indexEntries(s.store)).some((e) => e.annotations?.['io.containerd.image.name'] === 'docker.io/team/missing:1')).toBe(false);
  });

  it('a manifest giving a blob the store has another size is MANIFEST_INVALID naming both sizes, not MANIFEST_BLOB_UNKNOWN', async () => {
    const img = makeImage();
    expect((await pushBlob(base, 'team/wrongsize', img.layer)).status).toBe(201);
    expect((await pushBlob(base, 'team/wrongsize', img.config)).status).toBe(201);
    const doc = JSON.parse(img.manifest.toString());
    doc.layers[0].size += 1;
    const r = await call(`${base}/v2/team/wrongsize/manifests/1`, { method: 'PUT', body: JSON.stringify(doc), headers: { 'content-type': OCI_MANIFEST } });
    expect(r.status).toBe(400);
    expect(r.code()).toBe('MANIFEST_INVALID');
    expect(r.json().errors[0].detail).toEqual({ digest: sha256(img.layer), size: img.layer.length + 1, actual: img.layer.length });
    expect((await call(`${base}/v2/team/wrongsize/manifests/1`)).status).toBe(404);
  });

  it('A19/A17: schema1, ambiguous documents and a Content-Type that disagrees with the body are MANIFEST_INVALID', async () => {
    const schema1 = JSON.stringify({ schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [], history: [] });
    const r1 = await call(`${base}/v2/team/invalid/manifests/s1`, { method: 'PUT', body: schema1, headers: { 'content-type': 'application/vnd.docker.distribution.manifest.v1+prettyjws' } });
    expect(r1.status).toBe(400);
    expect(r1.code()).toBe('MANIFEST_INVALID');
    expect(r1.json().errors[0].message).toMatch(/schema1/);
    const img = makeImage();
    const ambiguous = JSON.stringify({ ...JSON.parse(img.manifest.toString()), manifests: [] });
    expect((await call(`${base}/v2/team/invalid/manifests/a`, { method: 'PUT', body: ambiguous, headers: { 'content-type': OCI_MANIFEST } })).code()).toBe('MANIFEST_INVALID');
    const disagree = await call(`${base}/v2/team/invalid/manifests/b`, { method: 'PUT', body: img.manifest, headers: { 'content-type': DOCKER_MANIFEST } });
    expect(disagree.code()).toBe('MANIFEST_INVALID');
    expect((await call(`${base}/v2/team/invalid/manifests/c`, { method: 'PUT', body: '{not json', headers: { 'content-type': OCI_MANIFEST } })).code()).toBe('MANIFEST_INVALID');
  });

  it('A18: a manifest over 4 MiB is refused with 413', async () => {
    const big = Buffer.alloc(4 * 1024 * 1024 + 1, 0x20);
    const r = await call(`${base}/v2/team/big/manifests/1`, { method: 'PUT', body: big, headers: { 'content-type': OCI_MANIFEST } });
    expect(r.status).toBe(413);
    expect(r.code()).toBe('MANIFEST_INVALID');
  });

  it('C14: tags list paginates with n and last, and Link points to the next page', async () => {
    const img = await pushImage(base, 'team/many', 't00');
    for (let i = 1; i < 25; i++) {
      const r = await call(`${base}/v2/team/many/manifests/t${String(i).padStart(2, '0')}`, { method: 'PUT', body: img.manifest, headers: { 'content-type': OCI_MANIFEST } });
      expect(r.status).toBe(201);
    }
    const seen: string[] = [];
    let next: string | undefined = '/v2/team/many/tags/list?n=10';
    let pages = 0;
    while (next) {
      const r = await call(`${base}${next}`);
      expect(r.status).toBe(200);
      expect(r.json().name).toBe('team/many');
      seen.push(...r.json().tags);
      pages++;
      next = /<([^>]+)>;\s*rel="next"/.exec(r.headers.link ?? '')?.[1];
    }
    expect(pages).toBe(3);
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `t${String(i).padStart(2, '0')}`));
    expect((await call(`${base}/v2/team/many/tags/list`)).json().tags).toHaveLength(25);
    expect((await call(`${base}/v2/team/many/tags/list?n=0`)).json().tags).toEqual([]);
    const unknown = await call(`${base}/v2/team/never-pushed/tags/list`);
    expect(unknown.status).toBe(404);
    expect(unknown.code()).toBe('NAME_UNKNOWN');
  });

  it('_catalog lists store images under their repository names, with n/last pagination', async () => {
    const all = (await call(`${base}/v2/_catalog`)).json().repositories as string[];
    expect(all).toContain('example.com/ferry/testdata');
    expect(all).toEqual([...all].sort());
    const first = await call(`${base}/v2/_catalog?n=1`);
    expect(first.json().repositories).toEqual([all[0]]);
    expect(first.headers.link).toBe(`</v2/_catalog?n=1&last=${encodeURIComponent(all[0]!)}>; rel="next"`);
  });

  it('the Referrers API lists manifests whose subject is the digest, filters by artifactType, and is empty for unknown subjects', async () => {
    const subject = await pushImage(base, 'team/signed', 'v1');
    const desc = { mediaType: OCI_MANIFEST, digest: subject.digest, size: subject.manifest.length };
    const empty = Buffer.from('{}');
    expect((await pushBlob(base, 'team/signed', empty)).status).toBe(201);
    const artifact = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MANIFEST,
        artifactType: 'application/vnd.example.sig',
        config: { mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: 2 },
        layers: [{ mediaType: 'application/vnd.oci.empty.v1+json', digest: sha256(empty), size: 2 }],
        subject: desc,
        annotations: { 'org.example.note': 'signed' },
      }),
    );
    const put = await call(`${base}/v2/team/signed/manifests/${sha256(artifact)}`, { method: 'PUT', body: artifact, headers: { 'content-type': OCI_MANIFEST } });
    expect(put.status).toBe(201);
    expect(put.headers['oci-subject']).toBe(subject.digest);
    const list = await call(`${base}/v2/team/signed/referrers/${subject.digest}`);
    expect(list.status).toBe(200);
    expect(list.headers['content-type']).toBe(OCI_INDEX);
    expect(list.json()).toEqual({
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [{ mediaType: OCI_MANIFEST, digest: sha256(artifact), size: artifact.length, artifactType: 'application/vnd.example.sig', annotations: { 'org.example.note': 'signed' } }],
    });
    const filtered = await call(`${base}/v2/team/signed/referrers/${subject.digest}?artifactType=application/other`);
    expect(filtered.headers['oci-filters-applied']).toBe('artifactType');
    expect(filtered.json().manifests).toEqual([]);
    expect((await call(`${base}/v2/team/signed/referrers/${subject.digest}?artifactType=application/vnd.example.sig`)).json().manifests).toHaveLength(1);
    expect((await call(`${base}/v2/team/elsewhere/referrers/${subject.digest}`)).json().manifests).toEqual([]);
    expect((await call(`${base}/v2/team/signed/referrers/sha256:${'5'.repeat(64)}`)).json().manifests).toEqual([]);
    expect((await call(`${base}/v2/team/signed/referrers/sha256:bad`)).code()).toBe('DIGEST_INVALID');
  });

  it('DELETE: a tag removes that tag; a digest removes every name for it; a child of an index is refused; blobs are 405', async () => {
    const img = await pushImage(base, 'team/del', 'a');
    expect((await call(`${base}/v2/team/del/manifests/b`, { method: 'PUT', body: img.manifest, headers: { 'content-type': OCI_MANIFEST } })).status).toBe(201);
    const byTag = await call(`${base}/v2/team/del/manifests/a`, { method: 'DELETE' });
    expect(byTag.status).toBe(202);
    expect((await call(`${base}/v2/team/del/tags/list`)).json().tags).toEqual(['b']);
    expect((await call(`${base}/v2/team/del/manifests/a`, { method: 'DELETE' })).code()).toBe('MANIFEST_UNKNOWN');
    const byDigest = await call(`${base}/v2/team/del/manifests/${img.digest}`, { method: 'DELETE' });
    expect(byDigest.status).toBe(202);
    expect((await call(`${base}/v2/team/del/manifests/${img.digest}`)).status).toBe(404);
    expect((await call(`${base}/v2/team/del/manifests/b`)).status).toBe(404);
    const child = images.multi.platforms!['linux/arm64/v8']?.manifest ?? Object.values(images.multi.platforms!)[0]!.manifest;
    const refused = await call(`${base}/v2/example.com/ferry/testdata/manifests/${child}`, { method: 'DELETE' });
    expect(refused.status).toBe(405);
    expect(refused.code()).toBe('UNSUPPORTED');
    const blob = await call(`${base}/v2/team/del/blobs/${sha256(img.layer)}`, { method: 'DELETE' });
    expect(blob.status).toBe(405);
    expect(blob.json().errors[0].message).toContain('ferry gc');
  });

  it('G1: images another ferry process adds to the store while serving are served at once, and concurrent pushes all land', async () => {
    const copy = ferry(['--store', s.store, 'copy', '-q', `oci:${TESTDATA}:plain`, 'example.com/ferry/testdata:plain']);
    const pushes = Array.from({ length: 4 }, (_, i) => pushImage(base, 'team/concurrent', `c${i}`));
    expect((await copy).code).toBe(0);
    for (const p of await Promise.all(pushes)) expect(p.reply.status).toBe(201);
    expect((await call(`${base}/v2/team/concurrent/tags/list`)).json().tags).toEqual(['c0', 'c1', 'c2', 'c3']);
    const plain = await call(`${base}/v2/example.com/ferry/testdata/manifests/plain`);
    expect(plain.headers['docker-content-digest']).toBe(images.plain.digest);
    const verify = await ferry(['--store', s.store, 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });

  it('writes one access-log line per request on stderr', async () => {
    await call(`${base}/v2/example.com/ferry/testdata/manifests/layers`, { method: 'HEAD' });
    await sleep(50);
    expect(s.stderr()).toMatch(/127\.0\.0\.1 - "HEAD \/v2\/example\.com\/ferry\/testdata\/manifests\/layers" 200 0 in=0 \d+ms/);
  });

  it('the access log counts the request body bytes received (in=), small and large', async () => {
    const start = await call(`${base}/v2/log/bytes/blobs/uploads/`, { method: 'POST' });
    const data = randomBytes(1_000_000);
    const patch = await call(`${base}${start.headers.location}`, { method: 'PATCH', body: data, headers: { 'content-range': `0-${data.length - 1}` } });
    expect(patch.status).toBe(202);
    expect((await call(`${base}${start.headers.location}?digest=${sha256(data)}`, { method: 'PUT' })).status).toBe(201);
    const img = makeImage();
    const pushed = await pushImage(base, 'log/bytes', 'v1', img);
    expect(pushed.reply.status).toBe(201);
    await sleep(50);
    const id = start.headers.location!.split('/').pop();
    expect(s.stderr()).toContain(`"PATCH /v2/log/bytes/blobs/uploads/${id}" 202 0 in=1000000 `);
    expect(s.stderr()).toContain(`"PUT /v2/log/bytes/blobs/uploads/${id}?digest=${sha256(data)}" 201 0 in=0 `);
    expect(s.stderr()).toContain(`"POST /v2/log/bytes/blobs/uploads/?digest=${sha256(img.layer)}" 201 0 in=${img.layer.length} `);
    expect(s.stderr()).toContain(`"PUT /v2/log/bytes/manifests/v1" 201 0 in=${img.manifest.length} `);
  });
});

describe('ferry serve: unfinished uploads (limits and purge)', () => {
  const newUploads = async (limits = { perClient: 3, total: 5, evictIdleMs: 60_000 }) => {
    const root = await tempDir();
    return new Uploads(join(root, '.ferry-uploads'), join(root, 'blobs'), limits);
  };
  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => undefined,
      (e: unknown) => (e instanceof RegistryError ? e : Promise.reject(e)),
    );

  it('an append aborted by a newer request takes back every byte it wrote: file, offset and hash stay at the durable offset', async () => {
    const u = await newUploads();
    const s = await u.create('docker.io/a/b', 'alice');
    const data = randomBytes(3_000_000);
    await u.append(s, Readable.from([data.subarray(0, 100_000)]));
    const controller = new AbortController();
    let sent = 0;
    // A body that delivers 1.5 MiB (one batch written, part of the next pending), then hangs until aborted.
    async function* hanging(): AsyncGenerator<Buffer> {
      for (let at = 100_000; at < 100_000 + 1_500_000; at += 64 << 10) {
        const chunk = data.subarray(at, Math.min(at + (64 << 10), 1_600_000));
        sent += chunk.length;
        yield chunk;
      }
      await new Promise<void>((ok) => controller.signal.addEventListener('abort', () => ok(), { once: true }));
      throw controller.signal.reason;
    }
    const appending = u.append(s, hanging(), data.length - 100_000, controller.signal);
    while (sent < 1_500_000) await sleep(10);
    await sleep(50);
    expect(s.offset).toBeGreaterThan(100_000);
    expect(s.durable).toBe(100_000);
    controller.abort(new Error('superseded'));
    const result = await appending;
    expect((result.error as Error).message).toBe('superseded');
    expect(s.offset).toBe(100_000);
    expect(s.durable).toBe(100_000);
    expect((await stat(s.data)).size).toBe(100_000);
    expect(JSON.parse(await readFile(join(s.dir, 'state.json'), 'utf8')).offset).toBe(100_000);
    // The running hash was taken back too: the upload completes from there with the right digest.
    expect((await u.append(s, Readable.from([data.subarray(100_000)]), data.length - 100_000)).received).toBe(data.length - 100_000);
    await u.complete(s, sha256(data) as `sha256:${string}`);
    expect(sha256(await readFile(join(u.root, '..', 'blobs', 'sha256', sha256(data).slice(7))))).toBe(sha256(data));
  });

  it('a newer writing request aborts earlier ones still sending their body, not those whose body has arrived', async () => {
    const u = await newUploads();
    const s = await u.create('docker.io/a/b', 'alice');
    const sending = s.enter(() => true);
    const arrived = s.enter(() => false);
    const left = s.enter(() => true);
    s.leave(left);
    const newer = s.enter(() => true);
    expect(sending.controller.signal.aborted).toBe(true);
    expect((sending.controller.signal.reason as NodeJS.ErrnoException).code).toBe('ECONNRESET');
    expect(arrived.controller.signal.aborted).toBe(false);
    expect(left.controller.signal.aborted).toBe(false);
    expect(newer.controller.signal.aborted).toBe(false);
  });

  it('one client is held to its own limit; idle sessions of that client make room first; others are unaffected', async () => {
    const u = await newUploads();
    const mine = [await u.create('docker.io/a/b', 'alice'), await u.create('docker.io/a/b', 'alice'), await u.create('docker.io/a/b', 'alice')];
    const refused = await refusal(u.create('docker.io/a/b', 'alice'));
    expect(refused?.status).toBe(429);
    expect(refused?.message).toMatch(/you have 3 unfinished uploads .*cancel the ones you gave up/);
    expect(refused?.headers['Retry-After']).toBe('60');
    // Another client still gets sessions.
    expect((await u.create('docker.io/c/d', 'bob')).owner).toBe('bob');
    // One of alice's sessions idle past the eviction time gives way; a busy one never does.
    mine[0]!.lastActive -= 120_000;
    mine[1]!.lastActive -= 120_000;
    let release!: () => void;
    const held = mine[1]!.exclusive(() => new Promise<void>((ok) => (release = ok)));
    const next = await u.create('docker.io/a/b', 'alice');
    expect(mine[0]!.closed).toBe(true);
    await expect(readdir(mine[0]!.dir)).rejects.toThrow();
    expect(mine[1]!.closed).toBe(false);
    expect(u.openBy('alice').map((s) => s.uuid).sort()).toEqual([mine[1]!.uuid, mine[2]!.uuid, next.uuid].sort());
    release();
    await held;
  });

  it('the global limit is the last resort: 429 saying the registry is full, after idle sessions of anyone were dropped', async () => {
    const u = await newUploads({ perClient: 10, total: 3, evictIdleMs: 60_000 });
    const a = await u.create('docker.io/a/b', 'alice');
    await u.create('docker.io/a/b', 'bob');
    await u.create('docker.io/a/b', 'carol');
    const refused = await refusal(u.create('docker.io/a/b', 'dave'));
    expect(refused?.status).toBe(429);
    expect(refused?.message).toMatch(/the registry has 3 unfinished uploads, the most it keeps; try again later/);
    a.lastActive -= 120_000;
    expect((await u.create('docker.io/a/b', 'dave')).owner).toBe('dave');
    expect(a.closed).toBe(true);
  });

  it('purge deletes sessions of this run idle past the limit, not one with a request in progress; a late request finds it unknown', async () => {
    const u = await newUploads();
    const idle = await u.create('docker.io/a/b', 'alice');
    const busy = await u.create('docker.io/a/b', 'alice');
    const fresh = await u.create('docker.io/a/b', 'alice');
    idle.lastActive -= 10_000;
    busy.lastActive -= 10_000;
    let release!: () => void;
    const held = busy.exclusive(() => new Promise<void>((ok) => (release = ok)));
    expect(await u.purge(5_000)).toBe(1);
    await expect(readdir(idle.dir)).rejects.toThrow();
    expect((await readdir(busy.dir)).sort()).toEqual(['data', 'state.json']);
    expect((await readdir(fresh.dir)).sort()).toEqual(['data', 'state.json']);
    await expect(u.get(idle.uuid, 'docker.io/a/b')).rejects.toThrow(/unknown/);
    release();
    await held;
    // Once its request is over it is idle again, and goes when idle long enough.
    busy.lastActive -= 10_000;
    expect(await u.purge(5_000)).toBe(1);
    expect(u.openBy('alice').map((s) => s.uuid)).toEqual([fresh.uuid]);
  });

  it('a client at its limit gets 429 with what to do, while a client from another address still pushes', async () => {
    const s = await startServe(join(await tempDir(), 'store'), ['-q']);
    try {
      const codes: number[] = [];
      for (let i = 0; i < 100; i++) codes.push((await call(`${s.url}/v2/abandon/x/blobs/uploads/`, { method: 'POST' })).status);
      expect(codes.every((c) => c === 202)).toBe(true);
      const over = await call(`${s.url}/v2/other/repo/blobs/uploads/`, { method: 'POST' });
      expect(over.status).toBe(429);
      expect(over.code()).toBe('TOOMANYREQUESTS');
      expect(over.json().errors[0].message).toContain('you have 100 unfinished uploads on this registry');
      expect(over.headers['retry-after']).toBe('60');
      // Another client: the same machine, another loopback address.
      const fromOther = (path: string, body?: Buffer) =>
        new Promise<number>((resolve, reject) => {
          const q = httpRequest(`${s.url}${path}`, { method: 'POST', localAddress: '127.0.0.2' }, (res) => {
            res.resume();
            res.on('end', () => resolve(res.statusCode!));
          });
          q.on('error', reject);
          q.end(body);
        });
      const data = randomBytes(1000);
      expect(await fromOther(`/v2/other/repo/blobs/uploads/?digest=${sha256(data)}`, data)).toBe(201);
      expect(await fromOther('/v2/other/repo/blobs/uploads/')).toBe(202);
    } finally {
      await s.stop();
    }
  });

  it('abandoned uploads are deleted while the server runs (FERRY_SERVE_UPLOAD_TTL_MS)', async () => {
    const s = await startServe(join(await tempDir(), 'store'), [], { env: { FERRY_SERVE_UPLOAD_TTL_MS: '800' } });
    try {
      const opened = await call(`${s.url}/v2/team/app/blobs/uploads/`, { method: 'POST' });
      expect(opened.status).toBe(202);
      const location = opened.headers.location!;
      // Kept while it is used.
      await sleep(500);
      expect((await call(`${s.url}${location}`)).status).toBe(204);
      await sleep(500);
      expect((await call(`${s.url}${location}`)).status).toBe(204);
      await sleep(2000);
      const gone = await call(`${s.url}${location}`);
      expect(gone.status).toBe(404);
      expect(gone.code()).toBe('BLOB_UPLOAD_UNKNOWN');
      expect(await readdir(join(s.store, '.ferry-uploads'))).toEqual([]);
      expect(s.stderr()).toMatch(/deleted 1 upload\(s\) idle for more than 1 s/);
    } finally {
      await s.stop();
    }
    const bad = await ferry(['--store', join(await tempDir(), 's'), 'serve', '--addr', '127.0.0.1:0'], { env: { FERRY_SERVE_UPLOAD_TTL_MS: 'soon' } });
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('FERRY_SERVE_UPLOAD_TTL_MS');
  });
});

describe('ferry serve and ferry gc', () => {
  it('a blob a push was told exists (HEAD 200) survives a gc before the manifest arrives; --read-only leaves mtimes alone', async () => {
    const store = await seededStore(['layers']);
    expect((await ferry(['--store', store, 'rmi', '--no-prune', 'example.com/ferry/testdata:layers'])).code).toBe(0);
    const img = images.layers;
    const manifest = await readFile(blobFile(TESTDATA, img.digest));
    const blobs = [img.config!, ...img.layers!.map((l) => l.digest)];
    // Unreferenced and older than any server: what gc deletes.
    const old = new Date(Date.now() - 3600_000);
    for (const d of blobs) await utimes(blobFile(store, d), old, old);

    const ro = await startServe(store, ['-q', '--read-only']);
    for (const d of blobs) expect((await call(`${ro.url}/v2/team/gc/blobs/${d}`, { method: 'HEAD' })).status).toBe(200);
    await sleep(200);
    for (const d of blobs) expect((await stat(blobFile(store, d))).mtimeMs).toBe(old.getTime());
    await ro.stop();

    const s = await startServe(store, ['-q']);
    try {
      for (const d of blobs) expect((await call(`${s.url}/v2/team/gc/blobs/${d}`, { method: 'HEAD' })).status).toBe(200);
      await sleep(200);
      const gc = await ferry(['--store', store, 'gc']);
      expect(gc.code, gc.stderr).toBe(0);
      const put = await call(`${s.url}/v2/team/gc/manifests/1`, { method: 'PUT', body: manifest, headers: { 'content-type': img.mediaType } });
      expect(put.status, put.body.toString()).toBe(201);
    } finally {
      await s.stop();
    }
    const verify = await ferry(['--store', store, 'verify']);
    expect(verify.code, verify.stdout + verify.stderr).toBe(0);
  });
});

describe('verify docker://: a registry image checked where it is', () => {
  it('fetches and hashes every blob (diff_ids too), stores nothing, and reports a corrupt and a missing blob (exit 4)', async () => {
    const store = await seededStore(['layers', 'multi']);
    const s = await startServe(store, ['-q']);
    try {
      const empty = join(await tempDir(), 'untouched');
      const good = await ferry(['--store', empty, 'verify', `docker://${s.host}/example.com/ferry/testdata:multi`]);
      expect(good.code, good.stderr).toBe(0);
      expect(good.stdout).toMatch(/\(sha256:[0-9a-f]{64}\): 10 blob\(s\), [\d.]+kB checked, 0 problem\(s\)/);
      await expect(readdir(empty)).rejects.toThrow(); // no store was made

      const [first, second] = images.layers.layers!;
      const corrupt = blobFile(store, first!.digest);
      const bytes = await readFile(corrupt);
      bytes[bytes.length - 1] ^= 0xff;
      await writeFile(corrupt, bytes);
      await rm(blobFile(store, second!.digest));
      const bad = await ferry(['verify', '--json', `docker://${s.host}/example.com/ferry/testdata:layers`]);
      expect(bad.code).toBe(4);
      const report = JSON.parse(bad.stdout);
      expect(report.problems.map((p: { kind: string; digest: string }) => [p.kind, p.digest]).sort()).toEqual([['digest', first!.digest], ['missing', second!.digest]].sort());
    } finally {
      await s.stop();
    }
  });
});

describe('ferry serve: lifecycle', () => {
  it('prints the address it listens on; a busy port or bad --addr is an error naming it', async () => {
    const store = join(await tempDir(), 'store');
    const a = await startServe(store);
    expect(a.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(a.port).toBeGreaterThan(0);
    const busy = await ferry(['--store', store, 'serve', '--addr', a.host]);
    expect(busy.code).toBe(7);
    expect(busy.stderr).toContain(a.host.replace(/:\d+$/, ''));
    expect(busy.stderr).toMatch(/EADDRINUSE/);
    const bad = await ferry(['--store', store, 'serve', '--addr', 'nonsense']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('nonsense');
    // A host name that does not resolve: a usage error with what to give instead, no stack trace.
    const nowhere = await ferry(['--store', store, 'serve', '--addr', 'no-such-host.invalid:5000']);
    expect(nowhere.code).toBe(2);
    expect(nowhere.stderr).toContain('cannot listen on no-such-host.invalid:5000: no such host name');
    expect(nowhere.stderr).toContain('hint: give an address of this machine');
    expect(nowhere.stderr).not.toMatch(/\n\s+at /);
    expect((await a.stop()).code).toBe(0);
  });

  it('every access log line names the client, also a download the client cut off', async () => {
    const src = join(await tempDir(), 'src');
    const [img] = await makeLayout(src, [{ tag: 'big', layers: [16 << 20] }]);
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'copy', '-q', `oci:${src}:big`, 'example.com/big:1'])).code).toBe(0);
    const s = await startServe(store);
    // Reads the first bytes of a 16 MiB blob, then hangs up: the line is written after the socket is gone.
    await new Promise<void>((resolve, reject) => {
      const sock = netConnect(s.port, '127.0.0.1', () => sock.write(`GET /v2/example.com/big/blobs/${img!.layers[0]!.digest} HTTP/1.1\r\nHost: x\r\n\r\n`));
      sock.once('data', () => {
        sock.pause();
        setTimeout(() => sock.destroy(), 50);
      });
      sock.on('close', () => resolve()).on('error', reject);
    });
    await new Promise((r) => setTimeout(r, 300));
    const { stderr } = await s.stop();
    const cut = stderr.split('\n').filter((l) => l.includes('(cut)'));
    expect(cut.length, stderr).toBe(1);
    expect(cut[0]).toMatch(/^ferry serve: \S+ 127\.0\.0\.1 - "GET /);
  });

  it('SIGTERM lets an upload in progress finish, then exits 0; the access log never shows credentials', async () => {
    const s = await startServe(join(await tempDir(), 'store'));
    const start = await call(`${s.url}/v2/x/slow/blobs/uploads/`, { method: 'POST' });
    const data = randomBytes(400_000);
    let signalled = false;
    async function* body() {
      for (let i = 0; i < data.length; i += 50_000) {
        yield data.subarray(i, i + 50_000);
        if (i === 100_000) {
          s.child.kill('SIGTERM');
          signalled = true;
        }
        await sleep(100);
      }
    }
    const r = await request(`${s.url}${start.headers.location}`, { method: 'PATCH', body: Readable.from(body()), headers: { authorization: 'Bearer secret-token-value' } });
    await r.body.dump();
    expect(signalled).toBe(true);
    expect(r.statusCode).toBe(202);
    expect(r.headers.range).toBe(`0-${data.length - 1}`);
    const end = await s.stop();
    expect(end.code).toBe(0);
    expect(end.stderr).not.toContain('secret-token-value');
    expect(end.stderr).toMatch(/"PATCH \/v2\/x\/slow\/blobs\/uploads\/[0-9a-f-]+" 202/);
  });

  it('F1: past the grace period a stalled upload is cut (exit 143); its state stays on disk and resumes after a restart', async () => {
    const store = join(await tempDir(), 'store');
    const s = await startServe(store, ['--grace', '0.5']);
    const start = await call(`${s.url}/v2/x/restart/blobs/uploads/`, { method: 'POST' });
    const data = randomBytes(1_000_000);
    const req = httpRequest(`${s.url}${start.headers.location}`, { method: 'PATCH', headers: { 'content-length': data.length } });
    req.on('error', () => {});
    await new Promise<void>((ok) => req.write(data.subarray(0, 300_000), () => ok()));
    await sleep(200);
    const end = await s.stop('SIGTERM');
    expect(end.code).toBe(143);
    // No status went out: the log says it was cut, with the bytes that arrived.
    expect(end.stderr).toMatch(/"PATCH \/v2\/x\/restart\/blobs\/uploads\/[0-9a-f-]+" -\(cut\) 0 in=300000 \d+ms/);
    req.destroy();

    const again = await startServe(store);
    const loc = `${again.url}${start.headers.location}`;
    const status = await call(loc);
    expect(status.status).toBe(204);
    const offset = Number(status.headers.range!.split('-')[1]) + 1;
    expect(offset).toBe(300_000);
    expect((await call(loc, { method: 'PATCH', body: data.subarray(offset), headers: { 'content-range': `${offset}-${data.length - 1}` } })).status).toBe(202);
    expect((await call(`${loc}?digest=${sha256(data)}`, { method: 'PUT' })).status).toBe(201);
    expect((await again.stop()).code).toBe(0);
  });

  it('F2: after a crash (SIGKILL), bytes past the recorded offset are cut: the resumed upload publishes exactly what was acknowledged', async () => {
    const store = join(await tempDir(), 'store');
    const s = await startServe(store);
    const start = await call(`${s.url}/v2/x/crash/blobs/uploads/`, { method: 'POST' });
    const data = randomBytes(100_000);
    expect((await call(`${s.url}${start.headers.location}`, { method: 'PATCH', body: data })).status).toBe(202);
    expect((await s.stop('SIGKILL')).signal).toBe('SIGKILL');
    await appendFile(join(store, '.ferry-uploads', start.headers['docker-upload-uuid']!, 'data'), 'garbage written before the crash');
    const again = await startServe(store);
    const put = await call(`${again.url}${start.headers.location}?digest=${sha256(data)}`, { method: 'PUT' });
    expect(put.status).toBe(201);
    expect(await readFile(blobFile(store, sha256(data)))).toEqual(data);
    await again.stop();
  });

  it('--read-only serves pulls and refuses every write with 405 UNSUPPORTED', async () => {
    const store = await seededStore(['layers']);
    expect((await ferry(['--store', store, 'tag', 'example.com/ferry/testdata:layers', 'example.com/ferry/testdata:also'])).code).toBe(0);
    const s = await startServe(store, ['--read-only']);
    try {
      expect((await call(`${s.url}/v2/example.com/ferry/testdata/manifests/layers`)).status).toBe(200);
      const writes: Array<[string, string]> = [
        ['POST', '/v2/x/y/blobs/uploads/'],
        ['PUT', '/v2/x/y/manifests/1'],
        ['DELETE', `/v2/example.com/ferry/testdata/manifests/${images.layers.digest}`],
        ['PATCH', '/v2/x/y/blobs/uploads/00000000-0000-0000-0000-000000000000'],
      ];
      for (const [method, path] of writes) {
        const r = await call(`${s.url}${path}`, { method, body: method === 'PUT' ? '{}' : undefined });
        expect(r.status, `${method} ${path}`).toBe(405);
        expect(r.code()).toBe('UNSUPPORTED');
      }
      expect((await ferry(['--store', s.store, 'images'])).stdout).toContain('layers');
      // ferry as the client: refused at once (exit 6, the registry's refusal; no retries), saying why.
      const push = await ferry(['copy', `oci:${TESTDATA}:plain`, `docker://${s.host}/x/y:1`]);
      expect(push.code, push.stderr).toBe(6);
      expect(push.stderr).toContain('does not allow this (HTTP 405)');
      expect(push.stderr).not.toMatch(/[Rr]etrying/);
      const rm = await ferry(['rm', `docker://${s.host}/example.com/ferry/testdata@${images.layers.digest}`]);
      expect(rm.code, rm.stderr).toBe(6);
      expect(rm.stderr).toContain('does not allow deleting manifests');
      expect(rm.stderr).not.toContain('ferry --help');
      // A tag that shares its manifest: the 405 may mean no deletes at all, not only whole manifests.
      const shared = await ferry(['rm', `docker://${s.host}/example.com/ferry/testdata:also`]);
      expect(shared.code, shared.stderr).toBe(2);
      expect(shared.stderr).toContain('the registry refused to delete the tag alone (HTTP 405 UNSUPPORTED): it deletes only whole manifests, or nothing at all; nothing was deleted');
      expect(shared.stderr).toContain('hint: if it deletes manifests, ferry rm --force');
    } finally {
      await s.stop();
    }
  });
});

describe.skipIf(!htpasswdTool)('ferry serve: authentication', () => {
  let htpasswd: string;
  beforeAll(async () => {
    htpasswd = join(await tempDir(), 'htpasswd');
    const lines = [execFileSync('htpasswd', ['-Bbn', 'alice', 'wonder-land']).toString().trim(), execFileSync('htpasswd', ['-sbn', 'bob', 'sha-pass']).toString().trim()];
    await writeFile(htpasswd, lines.join('\n') + '\n');
  });
  const basic = (u: string, p: string) => ({ authorization: `Basic ${Buffer.from(`${u}:${p}`).toString('base64')}` });

  it('D5: --htpasswd: no credentials or a wrong password is 401 with a Basic challenge; bcrypt and {SHA} users get in', async () => {
    const s = await startServe(await seededStore(['layers']), ['--htpasswd', htpasswd]);
    const none = await call(`${s.url}/v2/`);
    expect(none.status).toBe(401);
    expect(none.headers['www-authenticate']).toBe('Basic realm="ferry"');
    expect(none.code()).toBe('UNAUTHORIZED');
    expect((await call(`${s.url}/v2/`, { headers: basic('alice', 'wrong') })).status).toBe(401);
    expect((await call(`${s.url}/v2/`, { headers: basic('nobody', 'wonder-land') })).status).toBe(401);
    expect((await call(`${s.url}/v2/`, { headers: basic('alice', 'wonder-land') })).status).toBe(200);
    expect((await call(`${s.url}/v2/`, { headers: basic('bob', 'sha-pass') })).status).toBe(200);
    const m = await call(`${s.url}/v2/example.com/ferry/testdata/manifests/layers`, { headers: basic('alice', 'wonder-land') });
    expect(m.status).toBe(200);
    const end = await s.stop();
    expect(end.stderr).not.toContain('wonder-land');
    expect(end.stderr).not.toContain(Buffer.from('alice:wonder-land').toString('base64'));
    expect(end.stderr).toMatch(/127\.0\.0\.1 alice "GET \/v2\/example\.com/);
  });

  it('repeated wrong passwords from one address are answered 429 TOOMANYREQUESTS', async () => {
    const s = await startServe(join(await tempDir(), 'store'), ['--htpasswd', htpasswd]);
    const codes: number[] = [];
    for (let i = 0; i < 12; i++) codes.push((await call(`${s.url}/v2/`, { headers: basic('alice', `bad${i}`) })).status);
    expect(codes.slice(0, 10).every((c) => c === 401)).toBe(true);
    const last = await call(`${s.url}/v2/`, { headers: basic('alice', 'wonder-land') });
    expect(last.status).toBe(429);
    expect(last.code()).toBe('TOOMANYREQUESTS');
    expect(last.headers['retry-after']).toBe('60');
    await s.stop();
  });

  it('D6: --token-auth: challenge names the realm; /token checks the password and grants scopes; tokens are checked per request', async () => {
    const s = await startServe(join(await tempDir(), 'store'), ['--htpasswd', htpasswd, '--token-auth']);
    const ping = await call(`${s.url}/v2/`);
    expect(ping.status).toBe(401);
    expect(ping.headers['www-authenticate']).toBe(`Bearer realm="${s.url}/token",service="ferry"`);
    const upload = await call(`${s.url}/v2/team/app/blobs/uploads/`, { method: 'POST' });
    expect(upload.headers['www-authenticate']).toContain('scope="repository:team/app:pull,push"');

    expect((await call(`${s.url}/token?service=ferry&scope=repository:team/app:pull`)).status).toBe(401);
    expect((await call(`${s.url}/token?service=ferry&scope=repository:team/app:pull`, { headers: basic('alice', 'nope') })).status).toBe(401);
    const tokenFor = async (scope: string) => {
      const r = await call(`${s.url}/token?service=ferry&scope=${encodeURIComponent(scope)}`, { headers: basic('alice', 'wonder-land') });
      expect(r.status).toBe(200);
      const body = r.json();
      expect(body.access_token).toBe(body.token);
      expect(body.expires_in).toBeGreaterThanOrEqual(60);
      expect(Date.parse(body.issued_at)).not.toBeNaN();
      return { authorization: `Bearer ${body.token}` };
    };
    const push = await tokenFor('repository:team/app:pull,push');
    expect((await call(`${s.url}/v2/`, { headers: push })).status).toBe(200);
    const data = randomBytes(1000);
    const put = await call(`${s.url}/v2/team/app/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data, headers: push });
    expect(put.status).toBe(201);

    const pullOnly = await tokenFor('repository:team/app:pull');
    expect((await call(`${s.url}/v2/team/app/blobs/${sha256(data)}`, { headers: pullOnly })).status).toBe(200);
    const denied = await call(`${s.url}/v2/team/app/blobs/uploads/`, { method: 'POST', headers: pullOnly });
    expect(denied.status).toBe(401);
    expect(denied.headers['www-authenticate']).toContain('error="insufficient_scope"');
    expect((await call(`${s.url}/v2/team/other/blobs/${sha256(data)}`, { headers: pullOnly })).status).toBe(401);
    expect((await call(`${s.url}/v2/_catalog`, { headers: pullOnly })).status).toBe(401);
    expect((await call(`${s.url}/v2/_catalog`, { headers: await tokenFor('registry:catalog:*') })).status).toBe(200);

    const [h, p, sig] = push.authorization.slice(7).split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString());
    claims.access = [{ type: 'repository', name: 'team/other', actions: ['pull', 'push'] }];
    const forged = `Bearer ${h}.${Buffer.from(JSON.stringify(claims)).toString('base64url')}.${sig}`;
    const f = await call(`${s.url}/v2/team/other/blobs/uploads/`, { method: 'POST', headers: { authorization: forged } });
    expect(f.status).toBe(401);
    expect(f.headers['www-authenticate']).toContain('error="invalid_token"');
    const end = await s.stop();
    expect(end.stderr).not.toContain(push.authorization.slice(7));
  });

  it('with --htpasswd the upload limit is per user: a user at the limit gets 429 from any address, another user from the same address still pushes', async () => {
    const s = await startServe(join(await tempDir(), 'store'), ['-q', '--htpasswd', htpasswd]);
    try {
      const bob = basic('bob', 'sha-pass');
      const opened: Reply[] = [];
      for (let i = 0; i < 100; i++) opened.push(await call(`${s.url}/v2/abandon/x/blobs/uploads/`, { method: 'POST', headers: bob }));
      expect(opened.map((r) => r.status).every((c) => c === 202)).toBe(true);
      const over = await call(`${s.url}/v2/other/repo/blobs/uploads/`, { method: 'POST', headers: bob });
      expect(over.status).toBe(429);
      expect(over.code()).toBe('TOOMANYREQUESTS');
      expect(over.json().errors[0].message).toContain('you have 100 unfinished uploads on this registry');
      // The limit follows the user, not the address it comes from.
      const fromOther = await new Promise<number>((resolve, reject) => {
        const q = httpRequest(`${s.url}/v2/other/repo/blobs/uploads/`, { method: 'POST', localAddress: '127.0.0.2', headers: bob }, (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode!));
        });
        q.on('error', reject);
        q.end();
      });
      expect(fromOther).toBe(429);
      // Another user on the same address (127.0.0.1) is not held to bob's uploads.
      const alice = basic('alice', 'wonder-land');
      const data = randomBytes(1000);
      expect((await call(`${s.url}/v2/other/repo/blobs/uploads/?digest=${sha256(data)}`, { method: 'POST', body: data, headers: alice })).status).toBe(201);
      expect((await call(`${s.url}/v2/other/repo/blobs/uploads/`, { method: 'POST', headers: alice })).status).toBe(202);
      // Bob cancelling one of his uploads makes room for one more of his.
      expect((await call(`${s.url}${opened[0]!.headers.location}`, { method: 'DELETE', headers: bob })).status).toBe(204);
      expect((await call(`${s.url}/v2/other/repo/blobs/uploads/`, { method: 'POST', headers: bob })).status).toBe(202);
      expect((await call(`${s.url}/v2/other/repo/blobs/uploads/`, { method: 'POST', headers: bob })).status).toBe(429);
    } finally {
      await s.stop();
    }
  });

  it('--token-auth without --htpasswd is a usage error', async () => {
    const r = await ferry(['--store', join(await tempDir(), 's'), 'serve', '--token-auth', '--addr', '127.0.0.1:0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--htpasswd');
  });

  it('a missing htpasswd file is an error naming it', async () => {
    const r = await ferry(['--store', join(await tempDir(), 's'), 'serve', '--htpasswd', '/nonexistent/htpasswd', '--addr', '127.0.0.1:0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('/nonexistent/htpasswd');
  });
});

describe.skipIf(!openssl)('ferry serve: TLS', () => {
  it('--tls-cert/--tls-key serve https; a client trusting the certificate pulls', async () => {
    const dir = await tempDir();
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    selfSignedCert(key, cert);
    const s = await startServe(await seededStore(['layers']), ['--tls-cert', cert, '--tls-key', key]);
    expect(s.url).toMatch(/^https:\/\//);
    const dispatcher = new Agent({ connect: { ca: await readFile(cert) } });
    const r = await call(`${s.url}/v2/example.com/ferry/testdata/manifests/layers`, { dispatcher });
    expect(r.status).toBe(200);
    expect(sha256(r.body)).toBe(images.layers.digest);
    await dispatcher.close();
    await s.stop();
    const half = await ferry(['--store', s.store, 'serve', '--tls-cert', cert, '--addr', '127.0.0.1:0']);
    expect(half.code).toBe(2);
    expect(half.stderr).toContain('--tls-key');
    // Swapped files: named, with what each must hold; no stack trace, and it does not start.
    const swapped = await ferry(['--store', s.store, 'serve', '--tls-cert', key, '--tls-key', cert, '--addr', '127.0.0.1:0']);
    expect(swapped.code).toBe(2);
    expect(swapped.stderr).toContain(`--tls-cert ${key} and --tls-key ${cert} are not a PEM certificate and its private key`);
    expect(swapped.stderr).toContain('check they are not swapped');
    expect(swapped.stderr).not.toMatch(/\n\s+at /);
    const missing = await ferry(['--store', s.store, 'serve', '--tls-cert', join(dir, 'nope.pem'), '--tls-key', key, '--addr', '127.0.0.1:0']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`cannot read TLS certificate ${join(dir, 'nope.pem')}: no such file or directory (ENOENT)`);
    expect(missing.stderr).toContain('hint: give the path of the PEM certificate file');
  });

  it('a plain-http request to the https server is answered 400 saying it speaks TLS; https still works after it', async () => {
    const { cert, s } = await tlsServe();
    try {
      const plain = await call(`http://${s.host}/v2/`);
      expect(plain.status).toBe(400);
      expect(plain.body.toString()).toContain('Client sent an HTTP request to an HTTPS server: this ferry serve speaks TLS; use https://');
      const dispatcher = new Agent({ connect: { ca: await readFile(cert) } });
      expect((await call(`${s.url}/v2/`, { dispatcher })).status).toBe(200);
      await dispatcher.close();
    } finally {
      await s.stop();
    }
  });

  it('whatever does not start a TLS handshake gets that 400 (CONNECT, a request with a body, bytes that are not http); a handshake arriving byte by byte still works', async () => {
    const { cert, s } = await tlsServe();
    const raw = (bytes: string) =>
      new Promise<string>((resolve, reject) => {
        const sock = netConnect(s.port, '127.0.0.1', () => sock.write(bytes));
        let got = '';
        sock.on('data', (c: Buffer) => (got += c.toString()));
        sock.on('error', reject);
        sock.on('close', () => resolve(got));
      });
    // A TLS client whose first packet holds a single byte; the rest of its hello follows later.
    const proxy = createNetServer((c) => {
      const up = netConnect(s.port, '127.0.0.1');
      c.on('error', () => up.destroy());
      up.on('error', () => c.destroy());
      up.pipe(c);
      c.once('data', (hello: Buffer) => {
        c.pause();
        up.write(hello.subarray(0, 1));
        setTimeout(() => {
          up.write(hello.subarray(1));
          c.pipe(up);
        }, 100);
      });
    });
    const dispatcher = new Agent({ connect: { ca: await readFile(cert) } });
    try {
      const requests = [
        `CONNECT ${s.host} HTTP/1.1\r\nHost: ${s.host}\r\n\r\n`,
        `POST /v2/a/b/blobs/uploads/ HTTP/1.1\r\nHost: ${s.host}\r\nContent-Length: 300000\r\n\r\n${'x'.repeat(300_000)}`,
        '\x00\x01 not http at all',
      ];
      for (const r of requests) {
        const answer = await raw(r);
        expect(answer, r.slice(0, 20)).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
        expect(answer).toContain('this ferry serve speaks TLS; use https://');
      }
      await new Promise<void>((ok) => proxy.listen(0, '127.0.0.1', ok));
      const viaProxy = `https://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
      expect((await call(`${viaProxy}/v2/`, { dispatcher })).status).toBe(200);
      expect((await call(`${s.url}/v2/_catalog`, { dispatcher })).json()).toEqual({ repositories: [] });
    } finally {
      await dispatcher.close();
      proxy.close();
      await s.stop();
    }
  });
});

describe('ferry serve refuses what its own store walk would stop at (one such push stopped every later gc of the store)', () => {
  const INDEX = 'application/vnd.oci.image.index.v1+json';
  const MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
  const index = (child: object) => JSON.stringify({ schemaVersion: 2, mediaType: INDEX, manifests: [child] });
  const sha = (text: string) => `sha256:${createHash('sha256').update(text).digest('hex')}`;

  it('an index entry of the wrong kind, nesting past 16 levels, an image config that is a layer: 400 MANIFEST_INVALID; gc and verify stay clean', async () => {
    const store = await seededStore(['plain']);
    const s = await startServe(store);
    try {
      const plain = images.plain;
      const layer = plain.layers![0]!;
      const put = (ref: string, body: string, type: string) => call(`${s.url}/v2/example.com/ferry/testdata/manifests/${ref}`, { method: 'PUT', headers: { 'content-type': type }, body });
      const manifestOf = { mediaType: MANIFEST, digest: plain.digest, size: plain.size };
      for (const [what, body, type] of [
        ['a layer declared as a manifest', index({ mediaType: MANIFEST, digest: layer.digest, size: layer.size }), INDEX],
        ['a manifest declared as an index', index({ mediaType: INDEX, digest: plain.digest, size: plain.size }), INDEX],
        ['a layer as the image config', JSON.stringify({ schemaVersion: 2, mediaType: MANIFEST, config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: layer.digest, size: layer.size }, layers: [layer] }), MANIFEST],
      ] as const) {
        const r = await put('bad', body, type);
        expect(r.status, what).toBe(400);
        expect(r.code(), what).toBe('MANIFEST_INVALID');
      }
      // A chain of indexes, each pushed by digest: the 17th level is refused, as gc would stop there.
      let child: object = manifestOf;
      let refusedAt = -1;
      for (let level = 0; level < 20 && refusedAt < 0; level++) {
        const body = index(child);
        const r = await put(sha(body), body, INDEX);
        if (r.status === 400) refusedAt = level;
        else child = { mediaType: INDEX, digest: sha(body), size: Buffer.byteLength(body) };
      }
      expect(refusedAt).toBe(16);
      expect((await put('ok', index(manifestOf), INDEX)).status).toBe(201);
      // A manifest an index holds is not deleted by digest (202 left it served, its own tag gone).
      const del = await call(`${s.url}/v2/example.com/ferry/testdata/manifests/${plain.digest}`, { method: 'DELETE' });
      expect(del.status).toBe(405);
      expect((await call(`${s.url}/v2/example.com/ferry/testdata/manifests/plain`, { method: 'HEAD' })).status).toBe(200);
    } finally {
      await s.stop();
    }
    const gc = await ferry(['--store', store, 'gc']);
    expect(gc.code, gc.stderr).toBe(0);
    expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
  });

  it('index.json lost while serve runs: a push is refused, and no index.json naming only it is written', async () => {
    const store = await seededStore(['plain', 'layers']);
    const s = await startServe(store);
    try {
      await rm(join(store, 'index.json'));
      const old = new Date(Date.now() - 3_600_000);
      for (const p of ['oci-layout', 'blobs', 'blobs/sha256']) await utimes(join(store, p), old, old);
      const body = index({ mediaType: MANIFEST, digest: images.plain.digest, size: images.plain.size });
      const r = await call(`${s.url}/v2/lost/x/manifests/1`, { method: 'PUT', headers: { 'content-type': INDEX }, body });
      expect(r.status).toBeGreaterThanOrEqual(400);
      expect(await stat(join(store, 'index.json')).catch(() => undefined)).toBeUndefined();
    } finally {
      await s.stop();
    }
  });
});
