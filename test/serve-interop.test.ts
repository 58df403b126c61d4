import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ferry } from './helpers/cli.js';
import { indexEntries, mustRun, runTool, sha256, TAGS, testdataImages, type ImageInfo, type Tag } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { selfSignedCert } from './helpers/registry.js';
import { startServe, type Served } from './helpers/serve.js';
import { hasTool } from './helpers/tools.js';

const skopeo = hasTool('skopeo');
const htpasswd = skopeo && hasTool('htpasswd');
const openssl = skopeo && hasTool('openssl');

let images: Record<Tag, ImageInfo>;
beforeAll(async () => {
  images = await testdataImages();
});

/** The root digest skopeo wrote into a layout for `tag`. */
async function layoutDigest(dir: string, tag: string): Promise<string | undefined> {
  return (await indexEntries(dir)).find((e) => e.annotations?.['org.opencontainers.image.ref.name'] === tag)?.digest;
}

async function inspect(ref: string, extra: string[] = []): Promise<{ Digest: string; RepoTags: string[]; Layers: string[] }> {
  return JSON.parse((await mustRun('skopeo', ['inspect', '--tls-verify=false', ...extra, ref])).stdout.toString());
}

describe.skipIf(!skopeo)('skopeo 1.9 against ferry serve', () => {
  let s: Served;
  beforeAll(async () => {
    s = await startServe(join(await tempDir(), 'store'));
  });
  afterAll(async () => {
    await s?.stop();
  });

  it('skopeo pushes a multi-layer image and pulls it back with the identical manifest digest', async () => {
    await mustRun('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${TESTDATA}:layers`, `docker://${s.host}/x/layers:1`]);
    const out = join(await tempDir(), 'out');
    await mustRun('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${s.host}/x/layers:1`, `oci:${out}:t`]);
    expect(await layoutDigest(out, 't')).toBe(images.layers.digest);
    const info = await inspect(`docker://${s.host}/x/layers:1`);
    expect(info.Digest).toBe(images.layers.digest);
    expect(info.RepoTags).toEqual(['1']);
    expect(info.Layers).toEqual(images.layers.layers!.map((l) => l.digest));
    expect((await ferry(['verify', out])).code).toBe(0);
  });

  it('skopeo copy --all pushes the multi-platform index and pulls it back identical (children and attestation included)', async () => {
    await mustRun('skopeo', ['copy', '-q', '--all', '--dest-tls-verify=false', `oci:${TESTDATA}:multi`, `docker://${s.host}/x/multi:1`]);
    const out = join(await tempDir(), 'out');
    await mustRun('skopeo', ['copy', '-q', '--all', '--src-tls-verify=false', `docker://${s.host}/x/multi:1`, `oci:${out}:m`]);
    expect(await layoutDigest(out, 'm')).toBe(images.multi.digest);
    const raw = await mustRun('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${s.host}/x/multi:1`]);
    expect(JSON.parse(raw.stdout.toString()).manifests).toHaveLength(3);
    expect((await ferry(['verify', out])).code).toBe(0);
  });

  it('every OCI testdata image (zstd and uncompressed layers included) round-trips through ferry serve', async () => {
    // skopeo's oci: transport does not read Docker-typed entries of a layout; "docker" is the next test.
    for (const tag of TAGS.filter((t) => t !== 'docker')) {
      // --preserve-digests: skopeo would otherwise gzip the uncompressed layer of "plain" on the way.
      await mustRun('skopeo', ['copy', '-q', '--all', '--preserve-digests', '--dest-tls-verify=false', `oci:${TESTDATA}:${tag}`, `docker://${s.host}/x/all:${tag}`]);
      const out = join(await tempDir(), 'out');
      await mustRun('skopeo', ['copy', '-q', '--all', '--preserve-digests', '--src-tls-verify=false', `docker://${s.host}/x/all:${tag}`, `oci:${out}:${tag}`]);
      expect(await layoutDigest(out, tag), tag).toBe(images[tag].digest);
    }
    const tags = JSON.parse((await mustRun('skopeo', ['list-tags', '--tls-verify=false', `docker://${s.host}/x/all`])).stdout.toString());
    expect([...tags.Tags].sort()).toEqual(TAGS.filter((t) => t !== 'docker').sort());
  });

  it('a Docker schema2 image served from the store is pulled byte for byte and pushed registry to registry unchanged', async () => {
    expect((await ferry(['--store', s.store, 'copy', '-q', `oci:${TESTDATA}:docker`, 'team/docker:1'])).code).toBe(0);
    const dir = join(await tempDir(), 'dir');
    await mustRun('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${s.host}/team/docker:1`, `dir:${dir}`]);
    expect(sha256(await readFile(join(dir, 'manifest.json')))).toBe(images.docker.digest);
    await mustRun('skopeo', ['copy', '-q', '--src-tls-verify=false', '--dest-tls-verify=false', `docker://${s.host}/team/docker:1`, `docker://${s.host}/team/docker-copy:1`]);
    const raw = await mustRun('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${s.host}/team/docker-copy:1`]);
    expect(sha256(raw.stdout)).toBe(images.docker.digest);
  });

  it('images pushed by skopeo appear in ferry images under their repository names and verify', async () => {
    await mustRun('skopeo', ['copy', '-q', '--preserve-digests', '--dest-tls-verify=false', `oci:${TESTDATA}:plain`, `docker://${s.host}/team/app:2`]);
    const list = await ferry(['--store', s.store, 'images']);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(new RegExp(`team/app\\s+2\\s+${images.plain.digest.slice(7, 19)}`));
    const inspectOut = await ferry(['--store', s.store, 'inspect', '--raw', 'team/app:2']);
    expect(inspectOut.code).toBe(0);
    const verify = await ferry(['--store', s.store, 'verify', 'team/app:2']);
    expect(verify.code, verify.stderr).toBe(0);
  });

  it('skopeo delete removes the manifest; pulling it afterwards fails', async () => {
    await mustRun('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${TESTDATA}:plain`, `docker://${s.host}/x/gone:1`]);
    await mustRun('skopeo', ['delete', '--tls-verify=false', `docker://${s.host}/x/gone:1`]);
    const r = await runTool('skopeo', ['inspect', '--tls-verify=false', `docker://${s.host}/x/gone:1`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/manifest unknown/i);
  });
});

describe.skipIf(!skopeo)('skopeo pulls images that were already in the store', () => {
  it('store names map to repositories: example.com/ferry/testdata:multi and docker.io/library/web:1', async () => {
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:multi`, 'example.com/ferry/testdata:multi'])).code).toBe(0);
    expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:zstd`, 'web:1'])).code).toBe(0);
    const s = await startServe(store, ['--read-only']);
    try {
      const out = join(await tempDir(), 'out');
      await mustRun('skopeo', ['copy', '-q', '--all', '--src-tls-verify=false', `docker://${s.host}/example.com/ferry/testdata:multi`, `oci:${out}:m`]);
      expect(await layoutDigest(out, 'm')).toBe(images.multi.digest);
      await mustRun('skopeo', ['copy', '-q', '--src-tls-verify=false', `docker://${s.host}/library/web:1`, `oci:${out}:w`]);
      expect(await layoutDigest(out, 'w')).toBe(images.zstd.digest);
      expect((await inspect(`docker://${s.host}/web:1`)).Digest).toBe(images.zstd.digest);
      const push = await runTool('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${TESTDATA}:plain`, `docker://${s.host}/x/ro:1`]);
      expect(push.code).not.toBe(0);
    } finally {
      await s.stop();
    }
  });
});

describe.skipIf(!htpasswd)('skopeo with ferry serve authentication', () => {
  let file: string;
  beforeAll(async () => {
    file = join(await tempDir(), 'htpasswd');
    await writeFile(file, execFileSync('htpasswd', ['-Bbn', 'user', 'pass']).toString());
  });

  for (const mode of ['basic', 'token'] as const) {
    it(`--htpasswd${mode === 'token' ? ' --token-auth' : ''}: skopeo needs --dest-creds to push and --src-creds to pull`, async () => {
      const s = await startServe(join(await tempDir(), 'store'), ['--htpasswd', file, ...(mode === 'token' ? ['--token-auth'] : [])]);
      try {
        const denied = await runTool('skopeo', ['copy', '-q', '--dest-tls-verify=false', `oci:${TESTDATA}:layers`, `docker://${s.host}/x/auth:1`]);
        expect(denied.code).not.toBe(0);
        expect(denied.stderr).toMatch(/unauthorized|authentication required/i);
        const wrong = await runTool('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'user:wrong', `oci:${TESTDATA}:layers`, `docker://${s.host}/x/auth:1`]);
        expect(wrong.code).not.toBe(0);
        await mustRun('skopeo', ['copy', '-q', '--dest-tls-verify=false', '--dest-creds', 'user:pass', `oci:${TESTDATA}:layers`, `docker://${s.host}/x/auth:1`]);
        const out = join(await tempDir(), 'out');
        await mustRun('skopeo', ['copy', '-q', '--src-tls-verify=false', '--src-creds', 'user:pass', `docker://${s.host}/x/auth:1`, `oci:${out}:t`]);
        expect(await layoutDigest(out, 't')).toBe(images.layers.digest);
      } finally {
        const end = await s.stop();
        expect(end.stderr).not.toContain('user:pass');
      }
    });
  }
});

describe.skipIf(!openssl)('skopeo over https (--tls-cert/--tls-key)', () => {
  it('skopeo verifies ferry serve\'s certificate from --dest-cert-dir and pushes, then pulls back', async () => {
    const dir = await tempDir();
    const certs = join(dir, 'certs');
    await mkdir(certs);
    const cert = join(dir, 'cert.pem');
    const key = join(dir, 'key.pem');
    selfSignedCert(key, cert);
    await copyFile(cert, join(certs, 'ca.crt'));
    const s = await startServe(join(dir, 'store'), ['--tls-cert', cert, '--tls-key', key]);
    try {
      await mustRun('skopeo', ['copy', '-q', '--dest-cert-dir', certs, `oci:${TESTDATA}:layers`, `docker://${s.host}/x/tls:1`]);
      const out = join(dir, 'out');
      await mustRun('skopeo', ['copy', '-q', '--src-cert-dir', certs, `docker://${s.host}/x/tls:1`, `oci:${out}:t`]);
      expect(await layoutDigest(out, 't')).toBe(images.layers.digest);
    } finally {
      await s.stop();
    }
  });
});
