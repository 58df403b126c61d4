import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copy } from '../src/copy.js';
import { OciLayout } from '../src/locations/layout.js';
import { readInventory } from '../src/sync/inventory.js';
import { failure } from './helpers/assert.js';
import { ferry } from './helpers/cli.js';
import { testdataImages } from './helpers/expected-images.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { makeLayout } from './helpers/images.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

describe('inventory', () => {
  it('records every blob, manifest and tag of a store; a delta copy leaves those blobs out but keeps configs', async () => {
    const exp = await testdataImages();
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'copy', '-q', `oci:${TESTDATA}:layers`, 'example.com/base:1'])).code).toBe(0);
    const invPath = join(await tempDir(), 'inv.json');
    const r = await ferry(['--store', store, 'inventory', '-o', invPath]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/4 blobs, 1 manifests, 1 tags/);
    const inv = JSON.parse(await readFile(invPath, 'utf8'));
    expect(inv.tags['example.com/base:1']).toBe(exp.layers.digest);
    expect(inv.blobs).toContain(exp.layers.layers![0]!.digest);

    // The store named by its path, as people write it for a USB stick; a missing one is named.
    const byPath = await ferry(['inventory', store]);
    expect(byPath.code, byPath.stderr).toBe(0);
    expect(JSON.parse(byPath.stdout).sources).toEqual([`oci:${store}`]);
    const gone = await ferry(['inventory', join(store, 'nope')]);
    expect(gone.code).toBe(2);
    expect(gone.stderr).toContain(`${join(store, 'nope')} does not exist`);
    // A directory that is there but holds no layout is told apart from one that is not there.
    const notLayout = await ferry(['inventory', await tempDir()]);
    expect(notLayout.code).toBe(2);
    expect(notLayout.stderr).toContain('is not an OCI image layout (no oci-layout file)');

    const excluded = await readInventory(invPath);
    const delta = await OciLayout.open(join(await tempDir(), 'delta'), { create: true });
    const report = await copy(await OciLayout.open(TESTDATA), delta, [{ ref: 'layers', names: [{ tag: 'l' }] }], { exclude: excluded });
    expect(report.blobs.copied).toBe(1); // the config only
    const files = await readdir(join(delta.dir, 'blobs', 'sha256'));
    expect(files).toContain((exp.layers.config as string).slice(7));
    for (const l of exp.layers.layers!) expect(files).not.toContain(l.digest.slice(7));
  });

  it('a delta archive (save --exclude-from) carries only the new layers, loads where the base is, and is refused where it is not', async () => {
    const dir = join(await tempDir(), 'src');
    const base = Buffer.alloc(1 << 20, 7);
    const [, v2] = await makeLayout(dir, [
      { tag: 'base', layers: [base] },
      { tag: 'v2', layers: [base, Buffer.from('the new layer')] },
    ]);
    const airgap = join(await tempDir(), 'airgap');
    expect((await ferry(['--store', airgap, 'copy', '-q', `oci:${dir}:base`, 'example.com/app:base'])).code).toBe(0);
    const inv = join(await tempDir(), 'have.json');
    expect((await ferry(['--store', airgap, 'inventory', '-o', inv])).code).toBe(0);

    const connected = join(await tempDir(), 'connected');
    expect((await ferry(['--store', connected, 'copy', '-q', `oci:${dir}:v2`, 'example.com/app:v2'])).code).toBe(0);
    const delta = join(await tempDir(), 'delta.tar');
    const save = await ferry(['--store', connected, 'save', '--exclude-from', inv, '-o', delta, 'example.com/app:v2']);
    expect(save.code, save.stderr).toBe(0);
    expect((await stat(delta)).size).toBeLessThan(base.byteLength / 4);
    // docker load cannot take an image whose layers are elsewhere; the warning says why (it said "not a container image").
    expect(save.stderr).toContain('example.com/app:v2 has layers this delta archive leaves out: written to the OCI index only (ferry load reads it)');

    const load = await ferry(['--store', airgap, 'load', '-i', delta]);
    expect(load.code, load.stderr).toBe(0);
    expect(load.stdout).toContain('Loaded image: example.com/app:v2');
    expect((await ferry(['--store', airgap, 'verify'])).code).toBe(0);

    const empty = join(await tempDir(), 'empty');
    const refused = await ferry(['--store', empty, 'load', '-i', delta]);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain(v2!.layers[0]!.digest);
    const images = await ferry(['--store', empty, 'images', '--json']);
    expect(JSON.parse(images.stdout || '[]')).toEqual([]);
  });

  describe('a delta whose base is absent', () => {
    /** base = [A, B]; v2 = [A, B, C]; v3 = [B, D]: a delta of v2 and v3 against base leaves out A and B (B needed by both). */
    const made = (async () => {
      const dir = join(await tempDir(), 'src');
      const [base, v2, v3] = await makeLayout(dir, [
        { tag: 'base', layers: [Buffer.from('layer A'), Buffer.from('layer B')] },
        { tag: 'v2', layers: [Buffer.from('layer A'), Buffer.from('layer B'), Buffer.from('layer C')] },
        { tag: 'v3', layers: [Buffer.from('layer B'), Buffer.from('layer D')] },
      ]);
      const airgap = join(await tempDir(), 'airgap');
      expect((await ferry(['--store', airgap, 'copy', '-q', `oci:${dir}:base`, 'example.com/app:base'])).code).toBe(0);
      const inv = join(await tempDir(), 'have.json');
      expect((await ferry(['--store', airgap, 'inventory', '-o', inv])).code).toBe(0);
      const connected = join(await tempDir(), 'connected');
      for (const t of ['v2', 'v3']) expect((await ferry(['--store', connected, 'copy', '-q', `oci:${dir}:${t}`, `example.com/app:${t}`])).code).toBe(0);
      const delta = join(await tempDir(), 'delta.tar');
      const save = await ferry(['--store', connected, 'save', '-q', '--exclude-from', inv, '-o', delta, 'example.com/app:v2', 'example.com/app:v3']);
      expect(save.code, save.stderr).toBe(0);
      const [a, b] = base!.layers.map((l) => l.digest);
      return { dir, airgap, connected, delta, a: a!, b: b!, v2: v2!, v3: v3! };
    })();

    it('save records in index.json that it is a delta, and what it was made against', async () => {
      const { delta, airgap } = await made;
      const index = JSON.parse(execFileSync('tar', ['-xOf', delta, 'index.json']).toString()) as { annotations?: Record<string, string> };
      expect(index.annotations?.['dev.ferry.delta.left-out']).toBe('2');
      expect(index.annotations?.['dev.ferry.delta.base']).toMatch(new RegExp(`^store:${airgap} as of \\d{4}-`));
    });

    it('load names every missing blob once, with the images that need it, says it is a delta, hints at the base; exit 4, no store created', async () => {
      const { delta, airgap, a, b } = await made;
      const fresh = join(await tempDir(), 'fresh');
      const r = await ferry(['--store', fresh, 'load', '-i', delta]);
      expect(r.code, r.stderr).toBe(4);
      expect(r.stderr).toContain(`${delta} is a delta (made against store:${airgap} as of `);
      expect(r.stderr).toContain(`2 blob(s) it leaves out are not in ${fresh} either:`);
      expect(r.stderr).toContain(`  ${a}: layer 1 of example.com/app:v2\n`);
      expect(r.stderr).toContain(`  ${b}: layer 2 of example.com/app:v2; layer 1 of example.com/app:v3\n`);
      expect(r.stderr.split(b).length - 1).toBe(1);
      expect(r.stderr).toContain('ferry: hint: load the archive the delta was made against first, or make the delta from an up-to-date inventory');
      await expect(stat(fresh)).rejects.toThrow();

      // An empty directory given as the store stays, empty; an existing store is left as it was.
      const emptyDir = await tempDir();
      expect((await ferry(['--store', emptyDir, 'load', '-i', delta])).code).toBe(4);
      expect(await readdir(emptyDir)).toEqual([]);
      const other = join(await tempDir(), 'other');
      expect((await ferry(['--store', other, 'copy', '-q', `oci:${TESTDATA}:plain`, 'example.com/plain:1'])).code).toBe(0);
      const before = await readFile(join(other, 'index.json'), 'utf8');
      expect((await ferry(['--store', other, 'load', '-i', delta])).code).toBe(4);
      expect(await readFile(join(other, 'index.json'), 'utf8')).toBe(before);
      expect(await readdir(join(other, 'blobs', 'sha256'))).toHaveLength(3);
    });

    it('verify: left-out blobs the store holds are a note, not problems; without a store they are not checked; those a store lacks are problems with the delta hint', async () => {
      const { delta, connected, a, b } = await made;
      const clean = await ferry(['--store', connected, 'verify', delta]);
      expect(clean.code, clean.stdout + clean.stderr).toBe(0);
      expect(clean.stdout).toContain(`NOTE ${delta}: 2 blob(s) left out (delta, made against store:`);
      expect(clean.stdout).toContain(`they must already be at the destination; 2 of them are in the store ${connected}`);
      expect(clean.stdout).toContain('2 image(s)');
      expect(clean.stdout).not.toMatch(/PROBLEM|write it again|written again/);

      const none = await ferry(['--store', join(await tempDir(), 'none'), 'verify', '--json', delta]);
      expect(none.code, none.stderr).toBe(0);
      const [report] = JSON.parse(none.stdout);
      expect(report).toMatchObject({ ok: true, images: 2, problems: [], delta: { leftOut: 2 } });
      expect(report.notes.join('\n')).toContain('there is no store here to look for them in');

      const other = join(await tempDir(), 'other');
      expect((await ferry(['--store', other, 'copy', '-q', `oci:${TESTDATA}:plain`, 'example.com/plain:1'])).code).toBe(0);
      const lacking = await ferry(['--store', other, 'verify', delta]);
      expect(lacking.code).toBe(4);
      expect(lacking.stdout).toContain(`PROBLEM missing: ${a} left out (delta) and not in the store ${other} either: layer 1 of example.com/app:v2`);
      expect(lacking.stdout).toContain(`PROBLEM missing: ${b} left out (delta)`);
      expect(lacking.stdout).toContain('0 of them are in the store');
      expect(lacking.stderr).toContain('ferry: hint: load the archive the delta was made against first, or make the delta from an up-to-date inventory');
      expect(lacking.stderr).not.toContain('written again');
    });
  });

  it('load of an archive (not a delta) that lacks several blobs names them all', async () => {
    const dir = join(await tempDir(), 'src');
    const [img] = await makeLayout(dir, [{ tag: 'x', layers: [Buffer.from('one'), Buffer.from('two'), Buffer.from('three')] }]);
    const store = join(await tempDir(), 'store');
    expect((await ferry(['--store', store, 'copy', '-q', `oci:${dir}:x`, 'example.com/x:1'])).code).toBe(0);
    const full = join(await tempDir(), 'full.tar');
    expect((await ferry(['--store', store, 'save', '-q', '--format', 'oci', '-o', full, 'example.com/x:1'])).code).toBe(0);
    // The same archive without two of its layers.
    const cut = join(await tempDir(), 'cut');
    await mkdir(cut);
    execFileSync('tar', ['-xf', full, '-C', cut]);
    for (const l of img!.layers.slice(0, 2)) await rm(join(cut, 'blobs', 'sha256', l.digest.slice(7)));
    const broken = join(await tempDir(), 'broken.tar');
    execFileSync('tar', ['-cf', broken, '-C', cut, '.']);
    const fresh = join(await tempDir(), 'fresh');
    const r = await ferry(['--store', fresh, 'load', '-i', broken]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain(`${broken}: 2 blob(s) are neither in the archive nor in ${fresh}:`);
    for (const [i, l] of img!.layers.slice(0, 2).entries()) expect(r.stderr).toContain(`  ${l.digest}: layer ${i + 1} of example.com/x:1`);
    expect(r.stderr).toMatch(/hint: write the archive again from its source/);
    await expect(stat(fresh)).rejects.toThrow();
  });

  it('an archive carried over earlier is an inventory too: the next delta leaves out what it held', async () => {
    const dir = join(await tempDir(), 'src');
    const base = Buffer.alloc(1 << 20, 9);
    await makeLayout(dir, [
      { tag: 'base', layers: [base] },
      { tag: 'v2', layers: [base, Buffer.from('another new layer')] },
    ]);
    const store = join(await tempDir(), 'store');
    for (const t of ['base', 'v2']) expect((await ferry(['--store', store, 'copy', '-q', `oci:${dir}:${t}`, `example.com/app:${t}`])).code).toBe(0);
    const week1 = join(await tempDir(), 'week1.tar.gz');
    expect((await ferry(['--store', store, 'save', '-q', '-o', week1, 'example.com/app:base'])).code).toBe(0);

    const inv = join(await tempDir(), 'have.json');
    const r = await ferry(['inventory', week1, '-o', inv]);
    expect(r.code, r.stderr).toBe(0);
    const doc = JSON.parse(await readFile(inv, 'utf8'));
    expect(doc.sources).toEqual([`archive:${week1}`]);
    expect(Object.keys(doc.tags)).toEqual(['example.com/app:base']);
    const fromStore = JSON.parse((await ferry(['--store', store, 'inventory'])).stdout);
    expect(doc.blobs.every((b: string) => fromStore.blobs.includes(b))).toBe(true);

    const delta = join(await tempDir(), 'week2.tar');
    expect((await ferry(['--store', store, 'save', '-q', '--exclude-from', inv, '-o', delta, 'example.com/app:v2'])).code).toBe(0);
    expect((await stat(delta)).size).toBeLessThan(base.byteLength / 4);

    // The same images carried as a volume set: each volume named (as a shell expands NAME.*.tar), or a pattern.
    const vols = await tempDir();
    expect((await ferry(['--store', store, 'save', '-q', '-o', join(vols, 'week1.tar'), '--volume-size', '256K', 'example.com/app:base'])).code).toBe(0);
    const files = (await readdir(vols)).sort().map((n) => join(vols, n));
    expect(files.length).toBeGreaterThanOrEqual(4);
    for (const given of [[...files].reverse(), [`oci-archive:${join(vols, 'week1.*.tar')}`]]) {
      const fromSet = await ferry(['inventory', ...given]);
      expect(fromSet.code, fromSet.stderr).toBe(0);
      const set = JSON.parse(fromSet.stdout);
      expect(set.sources).toHaveLength(1);
      expect(set.blobs).toEqual(doc.blobs);
      expect(set.manifests).toEqual(doc.manifests);
      expect(set.tags).toEqual(doc.tags);
    }
    const partial = await ferry(['inventory', ...files.slice(1)]);
    expect(partial.code).toBe(4);
    expect(partial.stderr).toContain('volume 1 of the set is missing');

    const missing = await ferry(['inventory', join(dir, 'gone.tar')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`${join(dir, 'gone.tar')}: no such file`);
  });

  it('-o naming a directory is refused before anything is read, with the file to name instead', async () => {
    const dir = await tempDir();
    const r = await ferry(['--store', await tempDir(), 'inventory', `oci:${TESTDATA}`, '-o', dir]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(`-o ${dir} is a directory; the inventory is one file`);
    expect(r.stderr).toContain(`hint: name the file: -o ${join(dir, 'have.json')}`);
  });

  it('refuses a file that is not an inventory', async () => {
    const p = join(await tempDir(), 'x.json');
    await (await import('node:fs/promises')).writeFile(p, '{"blobs": []}');
    expect((await failure(readInventory(p))).code).toBe('INVALID_INPUT');
    expect((await failure(readInventory(`${p}.missing`))).code).toBe('NOT_FOUND');
  });

  it('says why an inventory cannot be used: another format, cut short, a directory, a wrong field; a BOM is fine', async () => {
    const { writeFile: write } = await import('node:fs/promises');
    const dir = await tempDir();
    const digest = `sha256:${'a'.repeat(64)}`;
    const good = { ferryInventory: 1, created: '2026-11-24T05:00:00.000Z', sources: ['store:/s'], blobs: [digest], manifests: [digest], tags: { 'a:1': digest } };
    const cases: Array<[string, string, string]> = [
      ['v2', JSON.stringify({ ...good, ferryInventory: 2 }), 'an inventory of format 2; this ferry reads format 1'],
      ['cut', JSON.stringify(good).slice(0, 60), 'is not an inventory: the JSON is cut short'],
      ['text', 'hello', 'is not an inventory: not JSON ('],
      ['manifests', JSON.stringify({ ...good, manifests: ['nope'] }), 'manifests[0]: invalid digest "nope"'],
      ['tags', JSON.stringify({ ...good, tags: { a: 'nope' } }), 'tags["a"]: invalid digest "nope"'],
      ['created', JSON.stringify({ ...good, created: 'yesterday' }), '"created" must be a date and time (ISO 8601), not "yesterday"'],
      ['sources', JSON.stringify({ ...good, sources: 'foo' }), '"sources" must be a list of strings'],
    ];
    for (const [name, text, message] of cases) {
      const p = join(dir, `${name}.json`);
      await write(p, text);
      const e = await failure(readInventory(p));
      expect(e.code, name).toBe('INVALID_INPUT');
      expect(e.message, name).toContain(message);
    }
    expect((await failure(readInventory(dir))).message).toBe(`inventory ${dir} is a directory, not a file`);
    const bom = join(dir, 'bom.json');
    await write(bom, `\uFEFF${JSON.stringify(good)}`);
    expect([...(await readInventory(bom))]).toEqual([digest]);
  });
});

describe.skipIf(!hasTool('docker-registry'))('inventory of a registry repository', () => {
  let reg: RunningRegistry;
  beforeAll(async () => {
    reg = await startDistribution();
  });
  afterAll(async () => reg?.stop());

  it('lists the tags and every reachable blob', async () => {
    const exp = await testdataImages();
    expect((await ferry(['copy', `oci:${TESTDATA}:multi`, `docker://${reg.host}/inv/multi:1`])).code).toBe(0);
    const r = await ferry(['inventory', `${reg.host}/inv/multi`]);
    expect(r.code, r.stderr).toBe(0);
    const inv = JSON.parse(r.stdout);
    expect(inv.tags[`${reg.host}/inv/multi:1`]).toBe(exp.multi.digest);
    expect(inv.manifests).toContain(exp.multi.digest);
    expect(inv.manifests.length).toBe(4);
  });

  it('a tag or digest records that one image, not the whole repository; a missing tag exits 2', async () => {
    const exp = await testdataImages();
    expect((await ferry(['copy', `oci:${TESTDATA}:multi`, `docker://${reg.host}/inv/one:1`])).code).toBe(0);
    expect((await ferry(['copy', `oci:${TESTDATA}:plain`, `docker://${reg.host}/inv/one:2`])).code).toBe(0);
    const byTag = JSON.parse((await ferry(['inventory', `${reg.host}/inv/one:2`])).stdout);
    expect(byTag.tags).toEqual({ [`${reg.host}/inv/one:2`]: exp.plain.digest });
    expect(byTag.manifests).toEqual([exp.plain.digest]);
    expect(byTag.sources).toEqual([`docker://${reg.host}/inv/one:2`]);
    const byDigest = JSON.parse((await ferry(['inventory', `docker://${reg.host}/inv/one@${exp.multi.digest}`])).stdout);
    expect(byDigest.manifests).toContain(exp.multi.digest);
    expect(byDigest.manifests).not.toContain(exp.plain.digest);
    const missing = await ferry(['inventory', `${reg.host}/inv/one:3`]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain(`${reg.host}/inv/one:3 not found`);
  });
});
