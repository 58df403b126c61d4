import { createHash } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ferry } from './cli.js';
import { TAGS, testdataImages } from './expected-images.js';
import { TESTDATA, tempDir } from './fs.js';
import type { RunningRegistry } from './registry.js';

/**
 * The registry behaviour ferry relies on, run against every registry implementation we test
 * (the CNCF distribution registry and `ferry serve`), so both are held to the same rules.
 */
/** `deletesTags`: the registry deletes a tag alone (OCI distribution 1.1), not only whole manifests. */
export function registrySuite(name: string, start: () => Promise<RunningRegistry>, { deletesTags }: { deletesTags: boolean }): void {
  describe(`registry round trips (${name})`, () => {
    let reg: RunningRegistry | undefined;
    afterAll(async () => reg?.stop());
    const host = async () => (reg ??= await start()).host;
    const seed = async (tag: string, repo: string) => {
      const store = join(await tempDir(), 'store');
      const h = await host();
      expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:${tag}`, `${h}/${repo}:${tag}`])).code).toBe(0);
      const push = await ferry(['--store', store, 'push', `${h}/${repo}:${tag}`]);
      expect(push.code, push.stderr).toBe(0);
      return { store, push };
    };

    it('push then pull keeps every manifest digest identical (all five images, every platform)', async () => {
      const h = await host();
      const exp = await testdataImages();
      for (const tag of TAGS) {
        await seed(tag, 'suite/roundtrip');
        const store = join(await tempDir(), 'pulled');
        const pull = await ferry(['--store', store, 'pull', '--platform', 'all', `${h}/suite/roundtrip:${tag}`]);
        expect(pull.code, pull.stderr).toBe(0);
        expect(pull.stdout).toContain(`Digest: ${exp[tag].digest}`);
        expect((await ferry(['--store', store, 'verify'])).code).toBe(0);
      }
    });

    it('pull by digest, and name:tag@digest, verify the bytes against the digest', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('layers', 'suite/bydigest');
      const store = join(await tempDir(), 's');
      const a = await ferry(['--store', store, 'pull', `${h}/suite/bydigest@${exp.layers.digest}`]);
      expect(a.code, a.stderr).toBe(0);
      const b = await ferry(['--store', store, 'pull', `${h}/suite/bydigest:layers@${exp.layers.digest}`]);
      expect(b.code, b.stderr).toBe(0);
      const images = await ferry(['--store', store, 'images']);
      expect(images.stdout).toMatch(/suite\/bydigest\s+layers/);
    });

    it('pull picks the host platform by default, or the one asked for', async () => {
      const h = await host();
      await seed('multi', 'suite/multi');
      const store = join(await tempDir(), 's');
      const exp = await testdataImages();
      const arm = await ferry(['--store', store, 'pull', '--platform', 'linux/arm64', `${h}/suite/multi:multi`]);
      expect(arm.code, arm.stderr).toBe(0);
      // Digest: is the index's, as docker prints it (what NAME@DIGEST pulls again); then what was stored.
      expect(arm.stdout).toContain(`Digest: ${exp.multi.digest}\nWritten: sha256:`);
      expect(arm.stdout).toMatch(/Written: sha256:[a-f0-9]{64} \(linux\/arm64\)/);
      const byDigest = await ferry(['--store', store, '--json', 'pull', '--platform', 'linux/arm64', `${h}/suite/multi@${exp.multi.digest}`]);
      expect(byDigest.code, byDigest.stderr).toBe(0);
      const result = JSON.parse(byDigest.stdout.trim().split('\n').at(-1)!) as { images: Array<{ digest: string; source?: string; platforms: string[] }> };
      expect(result.images[0]!.source).toBe(exp.multi.digest);
      expect(result.images[0]!.digest).not.toBe(exp.multi.digest);
      const plain = await ferry(['--store', store, 'pull', '--platform', 'linux/arm64', `${h}/suite/multi@${exp.multi.digest}`]);
      expect(plain.stdout).toContain(`Status: Image is up to date for ${h}/suite/multi@${exp.multi.digest}`);
      // The name held the whole index; now it holds the amd64 manifest, every blob of which was
      // there already: the name changed, so not "up to date".
      const s8 = join(await tempDir(), 's8');
      expect((await ferry(['--store', s8, 'pull', '-q', '--platform', 'all', `${h}/suite/multi:multi`])).code).toBe(0);
      const amd = await ferry(['--store', s8, 'pull', '--platform', 'linux/amd64', `${h}/suite/multi:multi`]);
      expect(amd.stderr).toMatch(/0 blob\(s\) downloaded/);
      expect(amd.stdout).toContain(`Status: Downloaded newer image for ${h}/suite/multi:multi`);
      const amd2 = await ferry(['--store', s8, 'pull', '--platform', 'linux/amd64', `${h}/suite/multi:multi`]);
      expect(amd2.stdout).toContain(`Status: Image is up to date for ${h}/suite/multi:multi`);
      const all = await ferry(['--store', join(await tempDir(), 's5'), 'pull', '--platform', 'all', `${h}/suite/multi:multi`]);
      expect(all.stdout).toContain(`Digest: ${exp.multi.digest}`);
      expect(all.stdout).not.toContain('Written:');
      const inspect = await ferry(['--store', store, 'inspect', `${h}/suite/multi:multi`]);
      expect(JSON.parse(inspect.stdout).config.architecture).toBe('arm64');
      const def = await ferry(['--store', join(await tempDir(), 's2'), 'pull', `${h}/suite/multi:multi`]);
      expect(def.code, def.stderr).toBe(0);
      // One word is read as docker reads it: an OS (on this host's architecture) or an architecture.
      // The image is named in full, not by its bare tag.
      const windows = await ferry(['--store', join(await tempDir(), 's3'), 'pull', '--platform', 'windows', `${h}/suite/multi:multi`]);
      expect(windows.code).toBe(2);
      expect(windows.stderr).toContain(`${h}/suite/multi:multi (sha256:`);
      expect(windows.stderr).toMatch(/no image for platform windows\/\w+ \(available: linux\/amd64, linux\/arm64\)/);
      const arm64 = await ferry(['--store', join(await tempDir(), 's4'), 'pull', '--platform', 'aarch64', `${h}/suite/multi:multi`]);
      expect(arm64.code, arm64.stderr).toBe(0);
      // A single-platform amd64 image: an explicit other platform is refused (it was stored as if
      // it matched); by default it comes as it is, as docker pulls it.
      await seed('plain', 'suite/single');
      const s6 = join(await tempDir(), 's6');
      const wrong = await ferry(['--store', s6, 'pull', '--platform', 'linux/arm64', `${h}/suite/single:plain`]);
      expect(wrong.code).toBe(2);
      expect(wrong.stderr).toContain(`${h}/suite/single:plain is a single-platform image for linux/amd64, not linux/arm64`);
      expect((await ferry(['--store', s6, 'images', '--json'])).stdout.trim()).toBe('[]');
      expect((await ferry(['--store', s6, 'pull', '-q', '--platform', 'linux/amd64', `${h}/suite/single:plain`])).code).toBe(0);
      expect((await ferry(['--store', join(await tempDir(), 's7'), 'pull', '-q', `${h}/suite/single:plain`])).code).toBe(0);
    });

    it('inspect docker:// reads the index, one platform, and the exact bytes, without pulling', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('multi', 'suite/inspect');
      const index = JSON.parse((await ferry(['inspect', `docker://${h}/suite/inspect:multi`])).stdout);
      expect(index.digest).toBe(exp.multi.digest);
      expect(index.name).toBe(`${h}/suite/inspect:multi`);
      const arm = await ferry(['inspect', '--platform', 'linux/arm64', `docker://${h}/suite/inspect:multi`]);
      expect(arm.code, arm.stderr).toBe(0);
      expect(JSON.parse(arm.stdout).config.architecture).toBe('arm64');
      const raw = await ferry(['inspect', '--raw', `docker://${h}/suite/inspect:multi`]);
      expect(createHash('sha256').update(raw.stdout).digest('hex')).toBe(exp.multi.digest.slice(7));
      const missing = await ferry(['inspect', `docker://${h}/suite/inspect:nope`]);
      expect(missing.code).toBe(2);
    });

    it('a second pull downloads nothing ("Already exists"); a second push uploads nothing', async () => {
      const h = await host();
      const { store } = await seed('docker', 'suite/again');
      const push = await ferry(['--store', store, 'push', `${h}/suite/again:docker`]);
      expect(push.code).toBe(0);
      expect(push.stderr).toMatch(/0 blob\(s\) uploaded/);
      const pulled = join(await tempDir(), 's');
      expect((await ferry(['--store', pulled, 'pull', `${h}/suite/again:docker`])).code).toBe(0);
      const again = await ferry(['--store', pulled, 'pull', `${h}/suite/again:docker`]);
      expect(again.code).toBe(0);
      expect(again.stderr).toContain('Already exists');
      expect(again.stdout).toContain('Image is up to date');
    });

    it('pushing an image to a second repository mounts its blobs instead of uploading them', async () => {
      const h = await host();
      const { store } = await seed('layers', 'suite/mount-a');
      expect((await ferry(['--store', store, 'tag', `${h}/suite/mount-a:layers`, `${h}/suite/mount-b:layers`])).code).toBe(0);
      const push = await ferry(['--store', store, 'push', `${h}/suite/mount-b:layers`]);
      expect(push.code, push.stderr).toBe(0);
      // distribution mounts from the other repository; ferry serve, whose blobs are global, already has them.
      const m = /0 blob\(s\) uploaded \(0B\), (\d+) already there, (\d+) mounted/.exec(push.stderr);
      expect(m, push.stderr).not.toBeNull();
      expect(Number(m![1]) + Number(m![2])).toBe(4);
    });

    it('push to a destination without a tag keeps the image\'s tag (it used to become latest); with one, takes it', async () => {
      const h = await host();
      const { store } = await seed('plain', 'suite/keep-src');
      const keep = await ferry(['--store', store, 'push', `${h}/suite/keep-src:plain`, `${h}/suite/keep-dst`]);
      expect(keep.code, keep.stderr).toBe(0);
      expect((await ferry(['tags', `${h}/suite/keep-dst`])).stdout.trim()).toBe('plain');
      expect((await ferry(['--store', store, 'push', '-q', `${h}/suite/keep-src:plain`, `docker://${h}/suite/keep-dst:v2`])).code).toBe(0);
      expect((await ferry(['tags', `${h}/suite/keep-dst`])).stdout.trim().split('\n').sort()).toEqual(['plain', 'v2']);
    });

    it('pushing a platform-narrowed pull back over the tag that holds the full index is refused; another tag is fine', async () => {
      const h = await host();
      await seed('multi', 'suite/narrow');
      const exp = await testdataImages();
      const store = join(await tempDir(), 's');
      expect((await ferry(['--store', store, 'pull', '-q', `${h}/suite/narrow:multi`])).code).toBe(0);
      const back = await ferry(['--store', store, 'push', `${h}/suite/narrow:multi`]);
      expect(back.code).toBe(2);
      expect(back.stderr).toContain(`${h}/suite/narrow:multi holds the full index ${exp.multi.digest}`);
      expect(back.stderr).toContain('pull it with --platform all first, or push under another tag');
      expect((await ferry(['--store', store, 'push', '--dry-run', `${h}/suite/narrow:multi`])).code).toBe(2);
      // With -a the argument is the repository: the message still names the store image with its tag.
      const allTags = await ferry(['--store', store, 'push', '-a', `${h}/suite/narrow`]);
      expect(allTags.code).toBe(2);
      expect(allTags.stderr).toContain(`platforms (${h}/suite/narrow:multi, sha256:`);
      const inspect = await ferry(['inspect', '--raw', `docker://${h}/suite/narrow:multi`]);
      expect(createHash('sha256').update(inspect.stdout).digest('hex')).toBe(exp.multi.digest.slice(7));
      expect((await ferry(['--store', store, 'push', '-q', `${h}/suite/narrow:multi`, `${h}/suite/narrow:amd64`])).code).toBe(0);
      const all = join(await tempDir(), 'all');
      expect((await ferry(['--store', all, 'pull', '-q', '--platform', 'all', `${h}/suite/narrow:multi`])).code).toBe(0);
      expect((await ferry(['--store', all, 'push', '-q', `${h}/suite/narrow:multi`])).code).toBe(0);
    });

    it('copy docker:// -> docker:// on one registry retags without uploading blobs', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('plain', 'suite/retag');
      const r = await ferry(['copy', `docker://${h}/suite/retag:plain`, `docker://${h}/suite/retag:renamed`]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain(exp.plain.digest);
      expect(r.stderr).toMatch(/0 blob\(s\) copied/);
      const tags = await ferry(['tags', `${h}/suite/retag`]);
      expect(tags.stdout.split('\n').filter(Boolean).sort()).toEqual(['plain', 'renamed']);
      // Into another repository the blobs are mounted (distribution), and the summary counts them;
      // ferry serve's blobs are global to its store, so a HEAD there already finds them.
      const other = await ferry(['copy', `docker://${h}/suite/retag:plain`, `docker://${h}/suite/retag-other:plain`]);
      expect(other.code, other.stderr).toBe(0);
      expect(other.stderr).toContain(name === 'ferry serve'
        ? '0 blob(s) copied (0B), 2 already present (2.95kB)\n'
        : '0 blob(s) copied (0B), 0 already present (0B), 2 mounted from another repository\n');
    });

    it('copy between a registry and an OCI layout in both directions', async () => {
      const h = await host();
      const exp = await testdataImages();
      expect((await ferry(['copy', `oci:${TESTDATA}:zstd`, `docker://${h}/suite/layout:z`])).code).toBe(0);
      const dir = join(await tempDir(), 'l');
      const back = await ferry(['copy', `docker://${h}/suite/layout:z`, `oci:${dir}:z`]);
      expect(back.code, back.stderr).toBe(0);
      expect(back.stdout).toContain(exp.zstd.digest);
      expect((await ferry(['verify', dir])).code).toBe(0);
    });

    it('tags lists every tag; the catalog lists repositories', async () => {
      const h = await host();
      await seed('plain', 'suite/tags');
      for (let i = 0; i < 12; i++) expect((await ferry(['copy', `docker://${h}/suite/tags:plain`, `docker://${h}/suite/tags:t${i}`])).code).toBe(0);
      const tags = await ferry(['tags', '--json', `${h}/suite/tags`]);
      expect(JSON.parse(tags.stdout)).toHaveLength(13);
      // Pages of 5: three requests following Link, the same 13 tags.
      const paged = await ferry(['tags', '--json', '--page-size', '5', `${h}/suite/tags`]);
      expect(paged.code, paged.stderr).toBe(0);
      expect(JSON.parse(paged.stdout)).toEqual(JSON.parse(tags.stdout));
      const cat = await ferry(['catalog', h]);
      expect(cat.code, cat.stderr).toBe(0);
      expect(cat.stdout).toContain('suite/tags');
      const catPaged = await ferry(['catalog', '--page-size', '1', h]);
      expect(catPaged.stdout.split('\n').filter(Boolean).sort()).toEqual(cat.stdout.split('\n').filter(Boolean).sort());
      const bad = await ferry(['tags', '--page-size', '0', `${h}/suite/tags`]);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toContain('--page-size takes a whole number of entries at least 1');
      const none = await ferry(['tags', `${h}/suite/no-such-repo`]);
      expect(none.code).toBe(2);
      expect(none.stderr).toContain(`repository ${h}/suite/no-such-repo not found`);
    });

    it('push -a pushes every tag of a repository; pull -a brings every tag back', async () => {
      const h = await host();
      const store = join(await tempDir(), 'store');
      for (const tag of ['plain', 'zstd']) {
        expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:${tag}`, `${h}/suite/all:${tag}`])).code).toBe(0);
      }
      const push = await ferry(['--store', store, 'push', '-a', `${h}/suite/all`]);
      expect(push.code, push.stderr).toBe(0);
      const pulled = join(await tempDir(), 'pulled');
      const pull = await ferry(['--store', pulled, 'pull', '-a', `${h}/suite/all`]);
      expect(pull.code, pull.stderr).toBe(0);
      const images = (await ferry(['--store', pulled, 'images'])).stdout;
      expect(images).toMatch(/suite\/all\s+plain/);
      expect(images).toMatch(/suite\/all\s+zstd/);
    });

    it('rm of a tag no other tag shares removes it; pulling it afterwards exits 2', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('plain', 'suite/rm');
      const rm = await ferry(['rm', `docker://${h}/suite/rm:plain`]);
      expect(rm.code, rm.stderr).toBe(0);
      // distribution deletes only whole manifests: the manifest went, and with it its one tag.
      expect(rm.stdout.trim()).toBe(deletesTags ? `Untagged: docker://${h}/suite/rm:plain (was ${exp.plain.digest})` : `Deleted: ${exp.plain.digest} (tags: plain)`);
      const pull = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${h}/suite/rm:plain`]);
      expect(pull.code).toBe(2);
      expect(pull.stderr).toMatch(/not found/);
      // By digest, it is named with '@' (it read "name:sha256:…").
      const gone = `sha256:${'0'.repeat(64)}`;
      const byDigest = await ferry(['--store', join(await tempDir(), 's'), 'pull', `${h}/suite/rm@${gone}`]);
      expect(byDigest.code).toBe(2);
      expect(byDigest.stderr).toContain(`manifest ${h}/suite/rm@${gone} not found`);
    });

    it('rm of a tag other tags share deletes the tag alone, or refuses where only the manifest can go; --force deletes it', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('plain', 'suite/rm-shared');
      for (const t of ['stable', '1.4']) expect((await ferry(['tag', `docker://${h}/suite/rm-shared:plain`, `docker://${h}/suite/rm-shared:${t}`])).code).toBe(0);
      const tags = async () => (await ferry(['tags', `${h}/suite/rm-shared`])).stdout.trim().split('\n').filter(Boolean).sort();
      const rm = await ferry(['--json', 'rm', `docker://${h}/suite/rm-shared:plain`]);
      if (deletesTags) {
        expect(rm.code, rm.stderr).toBe(0);
        expect(JSON.parse(rm.stdout)).toEqual({ image: `docker://${h}/suite/rm-shared:plain`, deleted: exp.plain.digest, removed: 'tag' });
        expect(await tags()).toEqual(['1.4', 'stable']);
        expect((await ferry(['--store', join(await tempDir(), 's'), 'pull', '-q', `${h}/suite/rm-shared:stable`])).code).toBe(0);
        return;
      }
      expect(rm.code, rm.stderr).toBe(2);
      expect(JSON.parse(rm.stdout)).toMatchObject({ event: 'error', code: 'USAGE', exitCode: 2 });
      expect(rm.stderr).toContain(`${h}/suite/rm-shared:plain: its manifest ${exp.plain.digest} is also tagged 1.4, stable, and the registry deletes only whole manifests (DELETE of the tag alone: HTTP 400 DIGEST_INVALID); nothing was deleted`);
      expect(rm.stderr).toContain(`hint: ferry rm --force docker://${h}/suite/rm-shared:plain deletes the manifest and every tag on it, as ferry rm docker://${h}/suite/rm-shared@${exp.plain.digest} does`);
      expect(await tags()).toEqual(['1.4', 'plain', 'stable']);
      const forced = await ferry(['--json', 'rm', '--force', `docker://${h}/suite/rm-shared:plain`]);
      expect(forced.code, forced.stderr).toBe(0);
      expect(JSON.parse(forced.stdout)).toEqual({ image: `docker://${h}/suite/rm-shared:plain`, deleted: exp.plain.digest, removed: 'manifest', tags: ['plain', '1.4', 'stable'] });
      expect(await tags()).toEqual([]);
    });

    it('rm by digest deletes the manifest and every tag on it', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('plain', 'suite/rm-digest');
      expect((await ferry(['tag', `docker://${h}/suite/rm-digest:plain`, `docker://${h}/suite/rm-digest:other`])).code).toBe(0);
      const rm = await ferry(['rm', `docker://${h}/suite/rm-digest@${exp.plain.digest}`]);
      expect(rm.code, rm.stderr).toBe(0);
      expect(rm.stdout.trim()).toBe(`Deleted: ${exp.plain.digest}`);
      expect((await ferry(['tags', `${h}/suite/rm-digest`])).stdout.trim()).toBe('');
      const again = await ferry(['rm', `docker://${h}/suite/rm-digest@${exp.plain.digest}`]);
      expect(again.code).toBe(2);
      expect(again.stderr).toContain(`${h}/suite/rm-digest@${exp.plain.digest} not found`);
    });

    it('rm of a tag or repository that does not exist exits 2 (NOT_FOUND) and deletes nothing', async () => {
      const h = await host();
      await seed('plain', 'suite/rm-missing');
      const r = await ferry(['--json', 'rm', `docker://${h}/suite/rm-missing:nope`]);
      expect(r.code).toBe(2);
      expect(JSON.parse(r.stdout)).toMatchObject({ event: 'error', code: 'NOT_FOUND', exitCode: 2 });
      expect(r.stderr).toContain(`ferry: error: ${h}/suite/rm-missing:nope not found`);
      expect(r.stderr).toContain(`hint: ferry tags ${h}/suite/rm-missing lists its tags`);
      const repo = await ferry(['rm', `docker://${h}/suite/rm-nothing-here:plain`]);
      expect(repo.code).toBe(2);
      expect(repo.stderr).toContain(`${h}/suite/rm-nothing-here:plain not found`);
      expect((await ferry(['tags', `${h}/suite/rm-missing`])).stdout.trim()).toBe('plain');
    });

    it('tag docker://A docker://B retags in the registry: the same digest, every platform kept, the store untouched', async () => {
      const h = await host();
      const exp = await testdataImages();
      await seed('multi', 'suite/retag');
      const store = join(await tempDir(), 'untouched');
      const r = await ferry(['--store', store, 'tag', `docker://${h}/suite/retag:multi`, `docker://${h}/suite/retag:stable`]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`Tagged ${exp.multi.digest} as docker://${h}/suite/retag:stable\n`);
      const head = await fetch(`http://${h}/v2/suite/retag/manifests/stable`, { method: 'HEAD', headers: { accept: 'application/vnd.oci.image.index.v1+json' } });
      expect(head.headers.get('docker-content-digest')).toBe(exp.multi.digest);
      // Into another repository of the same registry too (blobs mounted, not sent).
      expect((await ferry(['tag', `docker://${h}/suite/retag:multi`, `docker://${h}/suite/retag2:x`])).code).toBe(0);
      expect((await ferry(['tags', `${h}/suite/retag2`])).stdout.trim()).toBe('x');
      await expect(readdir(store)).rejects.toThrow();
      // Mixed or cross-registry pairs are refused with the command that does it.
      const mixed = await ferry(['tag', `docker://${h}/suite/retag:multi`, 'local:1']);
      expect(mixed.code).toBe(2);
      expect(mixed.stderr).toContain('hint: ferry pull, then ferry tag; or ferry copy');
      const far = await ferry(['tag', `docker://${h}/suite/retag:multi`, 'docker://elsewhere.example/x:1']);
      expect(far.code).toBe(2);
      expect(far.stderr).toContain('are in different registries');
    });

    it('pull, push, tags and rm take names written docker://NAME too; rmi of one points to rm', async () => {
      const h = await host();
      await seed('plain', 'suite/prefixed');
      const store = join(await tempDir(), 's');
      expect((await ferry(['--store', store, 'pull', '-q', `docker://${h}/suite/prefixed:plain`])).code).toBe(0);
      const push = await ferry(['--store', store, 'push', '-q', `docker://${h}/suite/prefixed:plain`, `docker://${h}/suite/prefixed2:p`]);
      expect(push.code, push.stderr).toBe(0);
      expect((await ferry(['tags', `docker://${h}/suite/prefixed2`])).stdout.trim()).toBe('p');
      const rmi = await ferry(['--store', store, 'rmi', `docker://${h}/suite/prefixed2:p`]);
      expect(rmi.code).toBe(2);
      expect(rmi.stderr).toContain(`hint: ferry rm docker://${h}/suite/prefixed2:p deletes it there`);
      expect((await ferry(['rm', `docker://${h}/suite/prefixed2:p`])).code).toBe(0);
    });

    it('a tag or repository that does not exist exits 2 and changes nothing', async () => {
      const h = await host();
      const store = join(await tempDir(), 's');
      const r = await ferry(['--store', store, 'pull', `${h}/suite/nothing-here:nope`]);
      expect(r.code).toBe(2);
      expect(r.stderr).toContain('suite/nothing-here:nope');
      expect(await readdir(store).catch(() => [])).not.toContain('index.json.lock');
    });
  });
}
