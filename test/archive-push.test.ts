import { randomBytes } from 'node:crypto';
import { cp, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { damageBlobEntry, layerTar, legacyArchive, ociImage, wholeBlobs, writeTar } from './helpers/archives.js';
import { ferry, type RunResult } from './helpers/cli.js';
import { indexEntries } from './helpers/expected-images.js';
import { tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';
import { runWatchingTmp } from './helpers/watch-tmp.js';

const registryTool = hasTool('docker-registry');
/** Two repositories: app (two tags sharing a layer) and tool (sharing it too: mounted, not re-sent). */
const NAMES = ['example.com/team/app:1', 'example.com/team/app:2', 'example.com/other/tool:1'];

let registry: RunningRegistry | undefined;
let noStore: string;
let store: string;
const digests: Record<string, string> = {};

async function ok(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const r = await ferry(args, { env: { FERRY_STORE: noStore, ...env } });
  expect(r.code, `ferry ${args.join(' ')}\n${r.stderr}`).toBe(0);
  return r;
}

async function named(s: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await indexEntries(s)) out[e.annotations?.['io.containerd.image.name'] ?? e.digest] = e.digest;
  return out;
}

/** Pulled back from `prefix`, every image of NAMES has the digest it was saved with. */
async function expectPulledBack(prefix: string): Promise<void> {
  const back = join(await tempDir(), 'back');
  for (const n of NAMES) await ok(['--store', back, 'pull', '-q', `${prefix}/${n.slice('example.com/'.length)}`]);
  const got = await named(back);
  for (const n of NAMES) expect(got[`${prefix}/${n.slice('example.com/'.length)}`], n).toBe(digests[n]);
}

/** The repositories under `prefix` the registry has (any at all means something was pushed). */
async function repositories(prefix: string): Promise<string[]> {
  const res = await fetch(`http://${registry!.host}/v2/_catalog?n=1000`);
  return ((await res.json()) as { repositories: string[] }).repositories.filter((x) => x.startsWith(`${prefix}/`));
}

/** The volumes of the set saved in `dir`, in order. */
async function volumes(dir: string, stem = 'set.'): Promise<string[]> {
  return (await readdir(dir)).filter((n) => n.startsWith(stem)).sort().map((n) => join(dir, n));
}

/** `push --from` with its own TMPDIR, watched (see runWatchingTmp). */
const pushWatched = (args: string[]) => runWatchingTmp(args, { FERRY_STORE: noStore });

beforeAll(async () => {
  noStore = join(await tempDir(), 'no-default-store');
  const src = join(await tempDir(), 'src');
  const shared = randomBytes(6 << 20);
  await makeLayout(src, [
    { tag: 'a1', layers: [shared, 4096] },
    { tag: 'a2', layers: [shared, 8192] },
    { tag: 't1', layers: [shared] },
  ]);
  store = join(await tempDir(), 'store');
  for (const [i, tag] of ['a1', 'a2', 't1'].entries()) await ok(['--store', store, 'copy', '-q', `oci:${src}:${tag}`, NAMES[i]!]);
  Object.assign(digests, await named(store));
  if (registryTool) registry = await startDistribution();
});

afterAll(async () => {
  await registry?.stop();
});

describe.skipIf(!registryTool)('push --from an archive into docker-registry', () => {
  for (const suffix of ['tar', 'tar.gz', 'tar.zst']) {
    it(`.${suffix}: every image of a multi-image archive, digests kept, no temporary copy of the archive`, async () => {
      const host = registry!.host;
      const file = join(await tempDir(), `all.${suffix}`);
      await ok(['--store', store, 'save', '-q', ...NAMES, '-o', file]);
      const prefix = `${host}/${suffix.replace('.', '-')}`;
      const { r, largest, left } = await pushWatched(['push', '--from', file, prefix]);
      expect(r.code, r.stderr).toBe(0);
      for (const n of NAMES) {
        const target = `${prefix}/${n.slice('example.com/'.length)}`;
        expect(r.stdout).toContain(`${target}: digest: ${digests[n]}`);
      }
      // Nothing the size of a blob, let alone of the archive, was written to $TMPDIR; nothing is left.
      expect(largest).toBeLessThan(1 << 20);
      expect(left).toEqual([]);
      await expectPulledBack(prefix);
    });
  }

  it('a compressed legacy docker archive: layers keep digest = diff_id; only one layer at a time is spooled', async () => {
    const host = registry!.host;
    const layers = [layerTar('etc/a', 'one'), layerTar('etc/b', 'two')];
    const legacy = legacyArchive({ layers, repoTag: 'example.com/legacy/app:7' });
    const file = join(await tempDir(), 'legacy.tar.zst');
    await writeTar(file, legacy.entries, 'zstd');
    const { r, left } = await pushWatched(['push', '--from', file, `${host}/old`]);
    expect(r.code, r.stderr).toBe(0);
    const digest = /old\/legacy\/app:7: digest: (sha256:[0-9a-f]{64})/.exec(r.stdout)?.[1];
    expect(digest).toBeDefined();
    expect(left).toEqual([]);
    const back = join(await tempDir(), 'back');
    await ok(['--store', back, 'pull', '-q', `${host}/old/legacy/app:7`]);
    expect((await named(back))[`${host}/old/legacy/app:7`]).toBe(digest);
    const manifest = JSON.parse((await readFile(join(back, 'blobs', 'sha256', digest!.slice(7)))).toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
    expect(manifest.layers.map((l) => l.digest)).toEqual(legacy.diffIds);
    expect(manifest.config.digest).toBe(legacy.configDigest);
  });

  it('refuses an archive image without a repository name before sending anything (exit 2)', async () => {
    const host = registry!.host;
    const img = ociImage({ layers: [{ data: layerTar('x', 'y') }], tag: 'onlytag' });
    const file = join(await tempDir(), 'unnamed.tar.gz');
    await writeTar(file, img.entries, 'gzip');
    const r = await ferry(['push', '--from', file, `${host}/unnamed`], { env: { FERRY_STORE: noStore } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/\(sha256:[a-f0-9]{64}, tagged onlytag without a repository\) has no repository name to push it under/);
    const res = await fetch(`http://${host}/v2/_catalog`);
    expect(((await res.json()) as { repositories: string[] }).repositories.filter((x) => x.startsWith('unnamed'))).toEqual([]);
    // The hint is a command that works once NAME is filled in.
    const hint = /hint: send it under a name of your choosing: ferry (copy \S+ \S+)/.exec(r.stderr)?.[1];
    expect(hint).toBe(`copy oci-archive:${file}:onlytag docker://${host}/unnamed/NAME:onlytag`);
    const sent = await ferry([...hint!.replace('NAME', 'app').split(' ')], { env: { FERRY_STORE: noStore } });
    expect(sent.code, sent.stderr).toBe(0);
    expect(sent.stdout).toContain(`Digest: ${img.manifest.digest}`);
  });

  it('the refusal counts images, not their two descriptions (index.json and manifest.json) in an archive ferry saved', async () => {
    const dir = await tempDir();
    await makeLayout(join(dir, 'src'), ['a', 'b', 'c'].map((tag) => ({ tag, layers: [1024] })));
    const file = join(dir, 'three.tar');
    const saved = await ferry(['save', '-q', ...['a', 'b', 'c'].map((t) => `oci:${join(dir, 'src')}:${t}`), '-o', file], { env: { FERRY_STORE: noStore } });
    expect(saved.code, saved.stderr).toBe(0);
    const r = await ferry(['push', '--from', file, `${registry!.host}/three`], { env: { FERRY_STORE: noStore } });
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/tagged a without a repository\) has no repository name to push it under, .*\(and 2 more like it\)/);
  });

  it('an unnamed image that refers to nothing in the archive is refused, by digest, before the named images go (plain and gzip)', async () => {
    const host = registry!.host;
    const named = ociImage({ layers: [{ data: layerTar('n', 'named') }], name: 'example.com/stray/app:1', tag: '1' });
    const stray = ociImage({ layers: [{ data: layerTar('s', 'stray') }] });
    const index = JSON.parse(named.entries.find((e) => e.name === 'index.json')!.data!.toString());
    index.manifests.push({ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: stray.manifest.digest, size: stray.manifest.size });
    const entries = [
      ...named.entries.filter((e) => e.name !== 'index.json'),
      ...stray.entries.filter((e) => e.name.startsWith('blobs/')),
      { name: 'index.json', data: JSON.stringify(index) },
    ];
    for (const compress of [undefined, 'gzip'] as const) {
      const file = join(await tempDir(), compress ? 'stray.tar.gz' : 'stray.tar');
      await writeTar(file, entries, compress);
      const r = await ferry(['push', '--from', file, `${host}/stray`], { env: { FERRY_STORE: noStore } });
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`(${stray.manifest.digest}) has no repository name to push it under, nor is it a referrer of an image there; nothing was pushed`);
      expect(r.stderr).toContain(`hint: send it under a name of your choosing: ferry copy oci-archive:${file}@${stray.manifest.digest} docker://${host}/stray/NAME:TAG`);
      const res = await fetch(`http://${host}/v2/_catalog`);
      expect(((await res.json()) as { repositories: string[] }).repositories.filter((x) => x.startsWith('stray'))).toEqual([]);
      const blob = await fetch(`http://${host}/v2/stray/stray/app/blobs/${named.layers[0]!.digest}`, { method: 'HEAD' });
      expect(blob.status).toBe(404);
    }
  });

  it('a truncated .tar.zst fails with exit 4 and pushes no tag', async () => {
    const host = registry!.host;
    const dir = await tempDir();
    const file = join(dir, 'all.tar.zst');
    await ok(['--store', store, 'save', '-q', NAMES[0]!, '-o', file]);
    const bytes = await readFile(file);
    const cut = join(dir, 'cut.tar.zst');
    await writeFile(cut, bytes.subarray(0, bytes.length - 4096));
    const r = await ferry(['push', '--from', cut, `${host}/cut`], { env: { FERRY_STORE: noStore } });
    expect(r.code, r.stderr).toBe(4);
    const res = await fetch(`http://${host}/v2/cut/team/app/manifests/1`, { method: 'HEAD' });
    expect(res.status).toBe(404);
  });

  it('one volume of a set alone is refused (exit 4), naming the volumes missing, with the way to name them all', async () => {
    const dir = await tempDir();
    await ok(['--store', store, 'save', '-q', NAMES[0]!, '-o', join(dir, 'set.tar'), '--volume-size', '64k']);
    const r = await ferry(['push', '--from', join(dir, 'set.001.tar'), `${registry!.host}/vol`], { env: { FERRY_STORE: noStore } });
    expect(r.code, r.stderr).toBe(4);
    expect(r.stderr).toContain('volume 2 and later of the set are missing: set.001.tar is not the last volume');
    expect(r.stderr).toContain(`hint: give every volume of the set: --from '${join(dir, 'set.*.tar')}'`);
    expect(await repositories('vol')).toEqual([]);
  });

  for (const suffix of ['tar', 'tar.zst']) {
    it(`a volume set (.${suffix}, a blob split across volumes): --from each volume in any order, or one pattern; digests kept, nothing in $TMPDIR`, async () => {
      const host = registry!.host;
      const dir = await tempDir();
      await ok(['--store', store, 'save', '-q', ...NAMES, '-o', join(dir, `set.${suffix}`), '--volume-size', '1M']);
      const files = await volumes(dir);
      expect(files.length).toBeGreaterThanOrEqual(7);
      const tag = suffix.replace('.', '-');
      const ways: Array<[string, string[]]> = [
        [`${host}/vols-${tag}`, [...files].reverse().flatMap((f) => ['--from', f])],
        [`${host}/glob-${tag}`, ['--from', join(dir, `set.*.${suffix}`)]],
      ];
      for (const [prefix, from] of ways) {
        const { r, largest, left } = await pushWatched(['push', ...from, prefix]);
        expect(r.code, r.stderr).toBe(0);
        for (const n of NAMES) expect(r.stdout).toContain(`${prefix}/${n.slice('example.com/'.length)}: digest: ${digests[n]}`);
        expect(largest).toBeLessThan(1 << 20);
        expect(left).toEqual([]);
        await expectPulledBack(prefix);
      }
      // --dry-run reads the set too.
      const plan = await ok(['push', '--from', join(dir, `set.*.${suffix}`), `${host}/plan-${tag}`, '--dry-run']);
      expect(plan.stdout).toContain(`${host}/plan-${tag}/team/app`);
      expect(await repositories(`plan-${tag}`)).toEqual([]);
    });
  }

  it('a set with a volume missing, or with a volume of another set, is refused (exit 4, 3) naming it, before anything is pushed', async () => {
    const host = registry!.host;
    const dir = await tempDir();
    const other = await tempDir();
    await ok(['--store', store, 'save', '-q', ...NAMES, '-o', join(dir, 'set.tar'), '--volume-size', '1M']);
    await ok(['--store', store, 'save', '-q', ...NAMES, '-o', join(other, 'set.tar'), '--volume-size', '1M']);
    const files = await volumes(dir);
    const cases: Array<[string[], number, string]> = [
      [files.filter((f) => !f.endsWith('set.003.tar')), 4, `volume 3 of the set is missing (given: 1, 2, 4-${files.length})`],
      [files.slice(0, -1), 4, `volume ${files.length} and later of the set are missing: set.${String(files.length - 1).padStart(3, '0')}.tar is not the last volume`],
      [[...files.slice(0, 2), join(other, 'set.003.tar'), ...files.slice(3)], 3, `${join(other, 'set.003.tar')} belongs to another volume set than ${files[0]}`],
    ];
    for (const [i, [given, code, message]] of cases.entries()) {
      const r = await ferry(['push', ...given.flatMap((f) => ['--from', f]), `${host}/partial${i}`], { env: { FERRY_STORE: noStore } });
      expect(r.code, r.stderr).toBe(code);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toMatch(/\n\s+at /);
      // Nothing pushed: no repository, not even a blob.
      expect(await repositories(`partial${i}`)).toEqual([]);
    }
    // A pattern that meets volumes of two sets (an old set's later volumes beside a new one) is refused the same way.
    await cp(join(other, files.at(-1)!.slice(dir.length + 1)), join(dir, `set.${String(files.length + 1).padStart(3, '0')}.tar`));
    const mixed = await ferry(['push', '--from', join(dir, 'set.*.tar'), `${host}/mixed`], { env: { FERRY_STORE: noStore } });
    expect(mixed.code, mixed.stderr).toBe(3);
    expect(mixed.stderr).toContain('belongs to another volume set');
    expect(await repositories('mixed')).toEqual([]);
    // A pattern that matches nothing names itself.
    const none = await ferry(['push', '--from', join(dir, 'nope.*.tar'), `${host}/none`], { env: { FERRY_STORE: noStore } });
    expect(none.code).toBe(2);
    expect(none.stderr).toContain(`${join(dir, 'nope.*.tar')}: no file matches`);
  });

  it('a corrupt part of a split blob is refused (exit 4) and no tag is pushed', async () => {
    const host = registry!.host;
    const dir = await tempDir();
    await ok(['--store', store, 'save', '-q', NAMES[0]!, '-o', join(dir, 'set.tar'), '--volume-size', '1M']);
    const files = await volumes(dir);
    // Volume 3 holds nothing but a part of the 6 MiB layer.
    const bytes = await readFile(files[2]!);
    bytes[bytes.length >> 1]! ^= 0xff;
    await writeFile(files[2]!, bytes);
    const check = await ferry(['verify', ...files], { env: { FERRY_STORE: noStore } });
    expect(check.stdout).toMatch(/volume 3 of \d+ \(set.003.tar\): part 3 of blob sha256:[0-9a-f]{64} corrupt/);
    const r = await ferry(['push', '--from', join(dir, 'set.*.tar'), `${host}/corrupt`], { env: { FERRY_STORE: noStore } });
    expect(r.code, r.stderr).toBe(4);
    // The damaged volume is named, as verify names it: that file is the one to copy again.
    expect(r.stderr).toMatch(/error: volume 3 of \d+ \(set.003.tar\): part 3 of blob sha256:[0-9a-f]{64} corrupt \(content hashes to/);
    expect(r.stderr).toContain('hint: copy set.003.tar again');
    const res = await fetch(`http://${host}/v2/corrupt/team/app/manifests/1`, { method: 'HEAD' });
    expect(res.status).toBe(404);
  });

  it('a corrupt whole blob in one volume is refused (exit 4) naming that volume, given by pattern or by file; no tag is pushed', async () => {
    const host = registry!.host;
    const dir = await tempDir();
    await ok(['--store', store, 'save', '-q', ...NAMES, '-o', join(dir, 'set.tar'), '--volume-size', '1M']);
    const files = await volumes(dir);
    // The first whole blob (not a part of the shared layer) after the first volume.
    let at = -1;
    let digest = '';
    for (const [i, f] of files.entries()) {
      const whole = i > 0 ? await wholeBlobs(f) : [];
      if (whole.length > 0) [at, digest] = [i, whole[0]!];
      if (at >= 0) break;
    }
    expect(at, 'a volume after the first holding a whole blob').toBeGreaterThan(0);
    await damageBlobEntry(files[at]!, digest);
    const name = `set.${String(at + 1).padStart(3, '0')}.tar`;
    for (const [i, from] of [['--from', join(dir, 'set.*.tar')], files.flatMap((f) => ['--from', f])].entries()) {
      const r = await ferry(['push', ...from, `${host}/whole${i}`], { env: { FERRY_STORE: noStore } });
      expect(r.code, r.stderr).toBe(4);
      expect(r.stderr).toMatch(new RegExp(`error: volume ${at + 1} of ${files.length} \\(${name.replace(/\./g, '\\.')}\\): blob ${digest} corrupt \\(content hashes to sha256:[0-9a-f]{64}; expected ${digest}\\)`));
      expect(r.stderr).toContain(`hint: copy ${name} again`);
      for (const n of NAMES) {
        const [repo, tag] = n.slice('example.com/'.length).split(':');
        const res = await fetch(`http://${host}/v2/whole${i}/${repo}/manifests/${tag}`, { method: 'HEAD' });
        expect(res.status, n).toBe(404);
      }
    }
  });

  it('the volumes of a set left unquoted after --from (the shell expanded the pattern) are refused with the way to give them', async () => {
    const dir = await tempDir();
    await ok(['--store', store, 'save', '-q', NAMES[2]!, '-o', join(dir, 'two.tar'), '--volume-size', '4M']);
    const files = await volumes(dir, 'two.');
    expect(files.length).toBe(2);
    const r = await ferry(['push', '--from', files[0]!, files[1]!, `${registry!.host}/unquoted`], { env: { FERRY_STORE: noStore } });
    expect(r.code, r.stderr).toBe(2);
    expect(r.stderr).toContain(`but ${files[1]} is a file`);
    expect(r.stderr).toContain(`--from '${join(dir, 'two.*.tar')}'`);
  });

  it('three or more volumes left unquoted after --from get the same refusal and hint (not yargs\' "Unknown argument")', async () => {
    const dir = await tempDir();
    await ok(['--store', store, 'save', '-q', NAMES[2]!, '-o', join(dir, 'many.tar'), '--volume-size', '2M']);
    const files = await volumes(dir, 'many.');
    expect(files.length).toBeGreaterThanOrEqual(3);
    for (const given of [files.slice(0, 3), files]) {
      for (const tail of [[`${registry!.host}/unquoted`], []]) {
        const r = await ferry(['push', '--from', ...given, ...tail], { env: { FERRY_STORE: noStore } });
        expect(r.code, r.stderr).toBe(2);
        expect(r.stderr).toContain(`but ${files[1]} is a file`);
        expect(r.stderr).toContain(`--from '${join(dir, 'many.*.tar')}'`);
        expect(r.stderr).not.toContain('Unknown argument');
      }
    }
    expect(await repositories('unquoted')).toEqual([]);
  });

  it('the destination may be written docker://REGISTRY/PREFIX; a tag or digest on it is refused before the archive is read', async () => {
    const host = registry!.host;
    const file = join(await tempDir(), 'one.tar');
    await ok(['--store', store, 'save', '-q', NAMES[2]!, '-o', file]);
    const r = await ok(['push', '--from', file, `docker://${host}/scheme`]);
    expect(r.stdout).toContain(`${host}/scheme/${NAMES[2]!.slice('example.com/'.length)}: digest: ${digests[NAMES[2]!]}`);
    for (const bad of [`${host}/pfx:tag`, `${host}/pfx@sha256:${'a'.repeat(64)}`]) {
      // A missing archive: the destination is refused first.
      const refused = await ferry(['push', '--from', join(await tempDir(), 'nope.tar'), bad], { env: { FERRY_STORE: noStore } });
      expect(refused.code, bad).toBe(2);
      expect(refused.stderr).toContain(`"${bad}" must be REGISTRY[/PREFIX], without a tag or digest`);
    }
  });

  it('options an archive push cannot honour are refused (exit 2), naming the option, before the archive is read', async () => {
    const file = join(await tempDir(), 'nope.tar');
    const cases: Array<[string[], string]> = [
      [['-a'], 'cannot take -a/--all-tags'],
      [['--all-tags'], 'cannot take -a/--all-tags'],
      [[`${registry!.host}/other/app:1`], `not a destination as well ("${registry!.host}/other/app:1")`],
      [['--platform', 'linux/amd64'], 'Unknown argument: platform'],
    ];
    for (const [extra, message] of cases) {
      const r = await ferry(['push', '--from', file, `${registry!.host}/opt`, ...extra], { env: { FERRY_STORE: noStore } });
      expect(r.code, extra.join(' ')).toBe(2);
      expect(r.stderr).toContain(message);
      expect(r.stderr).not.toContain('no such file');
    }
  });

  it('a missing archive is exit 2 (not found)', async () => {
    const r = await ferry(['push', '--from', join(await tempDir(), 'nope.tar.zst'), `${registry!.host}/x`], { env: { FERRY_STORE: noStore } });
    expect(r.stderr).toMatch(/no such file/);
    expect(r.code).toBe(2);
  });
});
