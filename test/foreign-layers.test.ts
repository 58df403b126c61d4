// Catalogue D4: foreign-layer `urls` are not fetched by default and never see credentials.
// A Windows-style image: a foreign base layer that exists only at its URL (here a loopback server
// that counts requests), plus one ordinary layer. Copies carry the manifest and leave the foreign
// blob behind; verify accepts its absence; export says why it cannot go on.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { access, mkdir, readFile, unlink, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { file, sha256, tarOf } from './helpers/layers.js';
import { PASSWORD, startDistribution, USER, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const FOREIGN_TYPE = 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip';

interface Foreign {
  dir: string;
  manifestDigest: string;
  foreignDigest: string;
  layerDigest: string;
}

let server: Server;
let url: string;
const requests: IncomingMessage[] = [];

async function putBlob(dir: string, body: Buffer | string): Promise<{ digest: string; size: number }> {
  const digest = sha256(body);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), body);
  return { digest, size: Buffer.byteLength(body) };
}

/** A docker v2 image in a layout whose first layer is foreign and absent. */
async function makeForeignLayout(dir: string, tag = 'win'): Promise<Foreign> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const foreignBytes = Buffer.from('the base layer lives only at its URL');
  const foreign = { mediaType: FOREIGN_TYPE, digest: sha256(foreignBytes), size: foreignBytes.length, urls: [`${url}/base.tar.gz`] };
  const tar = tarOf([file('app/hello.txt', 'hello from the top layer\n')]);
  const layer = { mediaType: 'application/vnd.docker.image.rootfs.diff.tar', ...(await putBlob(dir, tar)) };
  const cfg = JSON.stringify({ architecture: 'amd64', os: 'windows', rootfs: { type: 'layers', diff_ids: [sha256('foreign diff id'), layer.digest] } });
  const config = { mediaType: 'application/vnd.docker.container.image.v1+json', ...(await putBlob(dir, cfg)) };
  const m = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.docker.distribution.manifest.v2+json', config, layers: [foreign, layer] });
  const manifest = { mediaType: 'application/vnd.docker.distribution.manifest.v2+json', ...(await putBlob(dir, m)) };
  const index = { schemaVersion: 2, manifests: [{ ...manifest, annotations: { 'org.opencontainers.image.ref.name': tag } }] };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  return { dir, manifestDigest: manifest.digest, foreignDigest: foreign.digest, layerDigest: layer.digest };
}

const exists = (p: string) => access(p).then(() => true, () => false);
const blobPath = (dir: string, digest: string) => join(dir, 'blobs', 'sha256', digest.slice(7));

beforeAll(async () => {
  server = createServer((req, res) => {
    requests.push(req);
    res.writeHead(500).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((r) => server.close(r));
});

describe('D4: foreign layers between layouts and archives', () => {
  let src: Foreign;
  let work: string;
  beforeAll(async () => {
    work = await tempDir('ferry-foreign-');
    src = await makeForeignLayout(join(work, 'src'));
  });

  it('copy carries the manifest, leaves the foreign blob behind, and says so; verify is clean on both sides', async () => {
    const dst = join(work, 'copy');
    const r = await ferry(['copy', `oci:${src.dir}:win`, `oci:${dst}:win`]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`layer ${src.foreignDigest} is a foreign layer \\(downloaded from 127\\.0\\.0\\.1:\\d+ `));
    expect(await exists(blobPath(dst, src.layerDigest))).toBe(true);
    expect(await exists(blobPath(dst, src.foreignDigest))).toBe(false);
    const idx = JSON.parse(await readFile(join(dst, 'index.json'), 'utf8'));
    expect(idx.manifests[0].digest).toBe(src.manifestDigest);
    for (const dir of [src.dir, dst]) {
      const v = await ferry(['verify', `oci:${dir}`]);
      expect(v.code, v.stdout + v.stderr).toBe(0);
    }
    expect(requests).toHaveLength(0);
  });

  it('verify still checks a foreign layer that is present, and a missing ordinary layer is still a problem', async () => {
    const dir = join(work, 'present');
    const made = await makeForeignLayout(dir);
    await writeFile(blobPath(dir, made.foreignDigest), 'not the bytes the digest names');
    const bad = await ferry(['verify', `oci:${dir}`]);
    expect(bad.code).toBe(4);
    expect(bad.stdout + bad.stderr).toContain(made.foreignDigest);
    const dir2 = join(work, 'missing-ordinary');
    const made2 = await makeForeignLayout(dir2);
    await unlink(blobPath(dir2, made2.layerDigest));
    const missing = await ferry(['verify', `oci:${dir2}`]);
    expect(missing.code).not.toBe(0);
    expect(missing.stdout + missing.stderr).toContain(`blob ${made2.layerDigest} is referenced but missing`);
    expect(missing.stdout + missing.stderr).not.toContain(`blob ${made2.foreignDigest} is referenced but missing`);
  });

  it('save writes an OCI archive without the foreign blob (docker load cannot use it: warned); load and verify take it back', async () => {
    const archive = join(work, 'win.tar');
    const s = await ferry(['save', `oci:${src.dir}:win`, '-o', archive]);
    expect(s.code, s.stderr).toBe(0);
    expect(s.stderr).toMatch(/needs a foreign layer that is not in the archive: written to the OCI index only/);
    const av = await ferry(['verify', archive]);
    expect(av.code, av.stdout + av.stderr).toBe(0);
    const store = join(work, 'store');
    const l = await ferry(['--store', store, 'load', '-i', archive]);
    expect(l.code, l.stderr).toBe(0);
    const sv = await ferry(['--store', store, 'verify']);
    expect(sv.code, sv.stdout + sv.stderr).toBe(0);
    expect(requests).toHaveLength(0);
  });

  it('export stops with a clear error naming the foreign layer, and fetches nothing', async () => {
    const r = await ferry(['export', `oci:${src.dir}:win`, '-o', join(work, 'fs.tar')]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain(`${src.foreignDigest} is a foreign layer and is not here; ferry does not download foreign layers`);
    expect(await exists(join(work, 'fs.tar'))).toBe(false);
    expect(requests).toHaveLength(0);
  });
});

const distribution = hasTool('docker-registry');

describe.skipIf(!distribution)('D4: foreign layers through the CNCF distribution registry (basic auth)', () => {
  let reg: RunningRegistry;
  let src: Foreign;
  let work: string;
  let env: Record<string, string>;
  beforeAll(async () => {
    // distribution refuses manifests with URLs unless they are allowed.
    reg = await startDistribution({ auth: 'htpasswd', config: ['validation: {manifests: {urls: {allow: ["^http://127\\\\.0\\\\.0\\\\.1"]}}}'] });
    work = await tempDir('ferry-foreign-reg-');
    src = await makeForeignLayout(join(work, 'src'));
    const docker = join(work, 'docker');
    await mkdir(docker);
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    await writeFile(join(docker, 'config.json'), JSON.stringify({ auths: { [reg.host]: { auth } } }));
    env = { DOCKER_CONFIG: docker };
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('push and pull keep the manifest digest; the foreign layer is neither uploaded, downloaded, nor fetched from its URL', async () => {
    const ref = `docker://${reg.host}/win/app:1`;
    const push = await ferry(['copy', `oci:${src.dir}:win`, ref], { env });
    expect(push.code, push.stderr).toBe(0);
    const head = await fetch(`http://${reg.host}/v2/win/app/blobs/${src.foreignDigest}`, {
      method: 'HEAD',
      headers: { authorization: `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}` },
    });
    expect(head.status).toBe(404);
    const back = join(work, 'back');
    const pull = await ferry(['copy', ref, `oci:${back}:win`], { env });
    expect(pull.code, pull.stderr).toBe(0);
    const idx = JSON.parse(await readFile(join(back, 'index.json'), 'utf8'));
    expect(idx.manifests[0].digest).toBe(src.manifestDigest);
    expect(await exists(blobPath(back, src.layerDigest))).toBe(true);
    const v = await ferry(['verify', `oci:${back}`]);
    expect(v.code, v.stdout + v.stderr).toBe(0);
    // Nothing went to the foreign URL, so no credential could have.
    expect(requests).toHaveLength(0);
  });
});
