import { createHash } from 'node:crypto';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ArchiveSource } from '../src/archive/source.js';
import { ferry } from './helpers/cli.js';
import { tempDir } from './helpers/fs.js';
import { makeLayout, type MadeImage } from './helpers/images.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { startServe } from './helpers/serve.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry');
const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function put(dir: string, body: string): Promise<{ digest: string; size: number }> {
  await writeFile(join(dir, 'blobs', 'sha256', sha(body).slice(7)), body);
  return { digest: sha(body), size: Buffer.byteLength(body) };
}

/** An image plus an OCI 1.1 referrer (subject) and a cosign-style `sha256-<hex>.sig` tag. */
async function signedLayout(o: { sig?: boolean } = {}): Promise<{ dir: string; image: MadeImage; referrer: string; sig: string }> {
  const dir = join(await tempDir(), 'signed');
  const [image] = await makeLayout(dir, [{ tag: 'app', layers: [Buffer.from('app layer')] }]);
  const empty = { mediaType: 'application/vnd.oci.empty.v1+json', ...(await put(dir, '{}')) };
  const subject = { mediaType: image!.manifest.mediaType, digest: image!.manifest.digest, size: image!.manifest.size };
  const sbom = { mediaType: 'application/spdx+json', ...(await put(dir, '{"spdxVersion":"SPDX-2.3"}')) };
  const ref = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', artifactType: 'application/spdx+json', config: empty, layers: [sbom], subject });
  const refDesc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await put(dir, ref)) };
  const sigLayer = { mediaType: 'application/vnd.dev.cosign.simplesigning.v1+json', ...(await put(dir, '{"critical":{}}')) };
  const cfg = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await put(dir, '{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}')) };
  const sigManifest = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: cfg, layers: [sigLayer] });
  const sigDesc = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await put(dir, sigManifest)) };
  const sigTag = `${image!.manifest.digest.replace(':', '-')}.sig`;
  const index = JSON.parse(await readFile(join(dir, 'index.json'), 'utf8'));
  index.manifests.push(refDesc);
  if (o.sig ?? true) index.manifests.push({ ...sigDesc, annotations: { 'org.opencontainers.image.ref.name': sigTag } });
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  return { dir, image: image!, referrer: refDesc.digest, sig: sigTag };
}

describe.skipIf(!distribution)('referrers (--referrers)', () => {
  let reg: RunningRegistry;
  beforeAll(async () => {
    reg = await startDistribution();
  });
  afterAll(async () => reg?.stop());

  it('copy --referrers carries an SBOM referrer and a cosign .sig tag to a registry without the Referrers API, and pull brings them back', async () => {
    const { dir, image, referrer, sig } = await signedLayout();
    const push = await ferry(['copy', '--referrers', `oci:${dir}:app`, `docker://${reg.host}/ref/app:1`]);
    expect(push.code, push.stderr).toBe(0);
    const tags = (await ferry(['tags', `${reg.host}/ref/app`])).stdout.split('\n').filter(Boolean).sort();
    // distribution 2.8 has no Referrers API: the fallback tag sha256-<hex> lists the referrer.
    expect(tags).toEqual(['1', image.manifest.digest.replace(':', '-'), sig].sort());
    const fallback = await ferry(['copy', `docker://${reg.host}/ref/app:${image.manifest.digest.replace(':', '-')}`, `oci:${join(await tempDir(), 'fb')}:x`]);
    expect(fallback.code, fallback.stderr).toBe(0);

    const store = join(await tempDir(), 'store');
    const pull = await ferry(['--store', store, 'pull', '--referrers', `${reg.host}/ref/app:1`]);
    expect(pull.code, pull.stderr).toBe(0);
    const index = JSON.parse(await readFile(join(store, 'index.json'), 'utf8'));
    const digests = index.manifests.map((m: { digest: string }) => m.digest);
    expect(digests).toContain(image.manifest.digest);
    expect(digests).toContain(referrer);
    const names = index.manifests.map((m: { annotations?: Record<string, string> }) => m.annotations?.['io.containerd.image.name']);
    expect(names).toContain(`${reg.host}/ref/app:${sig}`);
    expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
  });

  it('sync --referrers into an archive carries the referrer and the .sig tag; the next run leaves the archive alone', async () => {
    const { dir, image, referrer, sig } = await signedLayout();
    expect((await ferry(['copy', '--referrers', `oci:${dir}:app`, `docker://${reg.host}/ref/arch:1`])).code).toBe(0);
    const file = join(await tempDir(), 'signed.tar');
    const args = ['sync', '--referrers', '--include', '^1$', `${reg.host}/ref/arch`, file];
    const first = await ferry(args);
    expect(first.code, first.stderr).toBe(0);
    const src = await ArchiveSource.open(file);
    const images = src.images();
    await src.close();
    expect(images.map((i) => i.ref)).toEqual(expect.arrayContaining([image.manifest.digest, referrer]));
    expect(images.flatMap((i) => i.names.map((n) => n.name))).toContain(`${reg.host}/ref/arch:${sig}`);
    expect((await ferry(['verify', file])).code).toBe(0);
    const before = (await stat(file)).mtimeMs;
    const again = await ferry(args);
    expect(again.stdout).toContain('1 tags, 0 copied, 1 unchanged');
    expect((await stat(file)).mtimeMs).toBe(before);
  });

  it('push --from a sync --referrers archive (plain and gzip) puts the referrer into its image\'s repository, after it; copy --referrers brings it back', async () => {
    const { dir, image, referrer, sig } = await signedLayout();
    expect((await ferry(['copy', '--referrers', `oci:${dir}:app`, `docker://${reg.host}/ref/fromarch:1`])).code).toBe(0);
    const file = join(await tempDir(), 'signed.tar');
    const synced = await ferry(['sync', '--referrers', '--include', '^1$', `${reg.host}/ref/fromarch`, file]);
    expect(synced.code, synced.stderr).toBe(0);
    const gz = join(await tempDir(), 'signed.tar.gz');
    await writeFile(gz, gzipSync(await readFile(file)));
    const fallbackTag = image.manifest.digest.replace(':', '-');
    for (const [archive, prefix] of [[file, 'back'], [gz, 'backgz']] as const) {
      const repo = `${reg.host}/${prefix}/ref/fromarch`;
      const push = await ferry(['push', '--from', archive, `${reg.host}/${prefix}`]);
      expect(push.code, push.stderr).toBe(0);
      const lines = push.stdout.split('\n').filter(Boolean);
      expect(lines).toContain(`${repo}:1: digest: ${image.manifest.digest}`);
      expect(lines).toContain(`Referrer: ${referrer} (application/spdx+json) for ${image.manifest.digest}`);
      // After its subject: the image's line comes first.
      expect(lines.indexOf(`Referrer: ${referrer} (application/spdx+json) for ${image.manifest.digest}`)).toBeGreaterThan(lines.indexOf(`${repo}:1: digest: ${image.manifest.digest}`));
      // distribution 2.8 has no Referrers API: the referrer is listed under the fallback tag.
      const tags = (await ferry(['tags', repo])).stdout.split('\n').filter(Boolean).sort();
      expect(tags).toEqual(['1', fallbackTag, sig].sort());
      const back = join(await tempDir(), 'back');
      const copied = await ferry(['copy', '--referrers', `docker://${repo}:1`, `oci:${back}:x`]);
      expect(copied.code, copied.stderr).toBe(0);
      expect(copied.stdout).toContain(`Referrer: ${referrer} (application/spdx+json) for ${image.manifest.digest}`);
      const digests = JSON.parse(await readFile(join(back, 'index.json'), 'utf8')).manifests.map((m: { digest: string }) => m.digest);
      expect(digests).toEqual(expect.arrayContaining([image.manifest.digest, referrer]));
    }

    // --json reports the referrer as push does: its subject and artifact type.
    const plan = await ferry(['push', '--from', file, `${reg.host}/backplan`, '--dry-run']);
    expect(plan.code, plan.stderr).toBe(0);
    expect(plan.stdout).toContain(`referrer of ${image.manifest.digest}`);

    // --referrers is accepted (an archive push always carries the referrers it holds).
    const json = await ferry(['--json', 'push', '--referrers', '--from', file, `${reg.host}/backjson`]);
    expect(json.code, json.stderr).toBe(0);
    const result = JSON.parse(json.stdout.trim().split('\n').at(-1)!);
    expect(result.images).toContainEqual({ reference: `${reg.host}/backjson/ref/fromarch:1`, digest: image.manifest.digest });
    expect(result.images).toContainEqual({ reference: `${reg.host}/backjson/ref/fromarch@${referrer}`, digest: referrer, subject: image.manifest.digest, artifactType: 'application/spdx+json' });
  });

  it('without --referrers nothing but the image moves', async () => {
    const { dir, image } = await signedLayout();
    expect((await ferry(['copy', `oci:${dir}:app`, `docker://${reg.host}/ref/plain:1`])).code).toBe(0);
    const tags = (await ferry(['tags', `${reg.host}/ref/plain`])).stdout.split('\n').filter(Boolean);
    expect(tags).toEqual(['1']);
    void image;
  });
});

describe('--referrers output (ferry serve)', () => {
  it('copy and pull print a referrer as a Referrer: line of its own, not as another copy of the tag', async () => {
    const { dir, image, referrer } = await signedLayout({ sig: false });
    const s = await startServe(join(await tempDir(), 'served'));
    try {
      const copy = await ferry(['copy', '--referrers', `oci:${dir}:app`, `docker://${s.host}/ref/app:1`]);
      expect(copy.code, copy.stderr).toBe(0);
      const lines = copy.stdout.split('\n');
      expect(lines.filter((l) => l.startsWith('Copied '))).toEqual([`Copied oci:${dir}:app -> docker://${s.host}/ref/app:1`]);
      expect(lines.filter((l) => l.startsWith('Digest: '))).toEqual([`Digest: ${image.manifest.digest}`]);
      expect(lines.filter((l) => l.startsWith('Referrer: '))).toEqual([`Referrer: ${referrer} (application/spdx+json) for ${image.manifest.digest}`]);

      const pull = await ferry(['--store', join(await tempDir(), 'store'), 'pull', '--referrers', `${s.host}/ref/app:1`]);
      expect(pull.code, pull.stderr).toBe(0);
      const pulled = pull.stdout.split('\n');
      expect(pulled.filter((l) => l.startsWith('Status: '))).toEqual([`Status: Downloaded newer image for ${s.host}/ref/app:1`]);
      expect(pulled.filter((l) => l.startsWith('Referrer: '))).toEqual([`Referrer: ${referrer} (application/spdx+json) for ${image.manifest.digest}`]);

      // --json keeps one image per manifest; the referrer says what it refers to.
      const json = await ferry(['--json', 'copy', '--referrers', `oci:${dir}:app`, `oci:${join(await tempDir(), 'out')}:x`]);
      expect(json.code, json.stderr).toBe(0);
      const result = JSON.parse(json.stdout.trim().split('\n').at(-1)!);
      expect(result.images.map((i: { digest: string; names: unknown[]; subject?: string; artifactType?: string }) => [i.digest, i.names.length, i.subject, i.artifactType])).toEqual([
        [image.manifest.digest, 1, undefined, undefined],
        [referrer, 0, image.manifest.digest, 'application/spdx+json'],
      ]);
    } finally {
      await s.stop();
    }
  });

  it('push --referrers prints a referrer as a Referrer: line too; --json gives it its subject', async () => {
    const { dir, image, referrer } = await signedLayout({ sig: false });
    const s = await startServe(join(await tempDir(), 'served'));
    try {
      const store = join(await tempDir(), 'store');
      const name = `${s.host}/ref/pushed:1`;
      const load = await ferry(['--store', store, 'copy', '--referrers', `oci:${dir}:app`, name]);
      expect(load.code, load.stderr).toBe(0);
      const push = await ferry(['--store', store, 'push', '--referrers', name]);
      expect(push.code, push.stderr).toBe(0);
      expect(push.stdout.split('\n').filter(Boolean)).toEqual([`1: digest: ${image.manifest.digest}`, `Referrer: ${referrer} (application/spdx+json) for ${image.manifest.digest}`]);
      expect(push.stdout).not.toContain('pushed ');

      const json = await ferry(['--store', store, '--json', 'push', '--referrers', name, `${s.host}/ref/again:2`]);
      expect(json.code, json.stderr).toBe(0);
      const result = JSON.parse(json.stdout.trim().split('\n').at(-1)!);
      expect(result.images.map((i: { digest: string; names: Array<{ tag: string }>; subject?: string; artifactType?: string }) => [i.digest, i.names.map((n) => n.tag), i.subject, i.artifactType])).toEqual([
        [image.manifest.digest, ['2'], undefined, undefined],
        [referrer, [], image.manifest.digest, 'application/spdx+json'],
      ]);
      expect(result.reference).toBe(`${s.host}/ref/again`);
    } finally {
      await s.stop();
    }
  });
});
