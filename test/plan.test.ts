import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { join, relative } from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Plan } from '../src/plan.js';
import { ferry } from './helpers/cli.js';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.js';
import { TESTDATA, tempDir } from './helpers/fs.js';
import { makeLayout, type MadeImage } from './helpers/images.js';
import { listTar } from './helpers/tar-list.js';
import { startDistribution, type RunningRegistry } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const schema = JSON.parse(await readFile(join(import.meta.dirname, '..', 'docs', 'schemas', 'plan.schema.json'), 'utf8'));
const validate = new Ajv2020({ allErrors: true }).compile(schema);

/** Parses --json output as exactly one document and checks it against docs/schemas/plan.schema.json. */
function planOf(stdout: string): Plan {
  const doc = JSON.parse(stdout) as Plan;
  expect(validate(doc), JSON.stringify(validate.errors)).toBe(true);
  return doc;
}

/** Every file under `dir` with a hash of its bytes: "unchanged" means byte for byte. */
async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out[relative(dir, p)] = createHash('sha256').update(await readFile(p)).digest('hex');
  }
  return out;
}

const sum = (...xs: number[]) => xs.reduce((a, b) => a + b, 0);

/** The blobs/ entries of a written archive: layers and configs, and manifests, counted apart as save and its plan count them. */
async function blobEntries(file: string, manifests: string[]): Promise<{ blobs: { count: number; bytes: number }; manifests: { count: number; bytes: number } }> {
  const out = { blobs: { count: 0, bytes: 0 }, manifests: { count: 0, bytes: 0 } };
  for (const e of await listTar(file)) {
    if (e.type !== 'file' || !e.name.startsWith('blobs/sha256/')) continue;
    const a = manifests.includes(`sha256:${e.name.slice(13)}`) ? out.manifests : out.blobs;
    a.count++;
    a.bytes += e.size;
  }
  return out;
}
const LAYER_A = 300 << 10;
const LAYER_B = 200 << 10;
const LAYER_C = 700 << 10;

describe('dry-run plans: save', () => {
  let srcDir: string;
  let base: MadeImage;
  let app: MadeImage;
  beforeAll(async () => {
    srcDir = await tempDir();
    [base] = await makeLayout(join(srcDir, 'base'), [{ tag: 'base', layers: [LAYER_A] }, { tag: 'big', layers: [LAYER_C] }]);
    // app is built on base: the same layer bytes, so the same digest.
    const shared = await readFile(join(srcDir, 'base', 'blobs', 'sha256', base.layers[0]!.digest.slice(7)));
    [app] = await makeLayout(join(srcDir, 'app'), [{ tag: 'app', layers: [shared, LAYER_B] }]);
  });
  const baseRef = () => `oci:${srcDir}/base:base`;
  const bigRef = () => `oci:${srcDir}/base:big`;
  const appRef = () => `oci:${srcDir}/app:app`;

  it('counts a shared base layer once, writes nothing, and predicts the archive size exactly', async () => {
    const dir = await tempDir();
    const out = join(dir, 'set.tar');
    const dry = await ferry(['save', '--dry-run', '--json', baseRef(), appRef(), '-o', out]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(await readdir(dir)).toEqual([]);
    const plan = planOf(dry.stdout);
    expect(plan.command).toBe('save');
    expect(plan.images.map((i) => i.digest)).toEqual([base.manifest.digest, app.manifest.digest]);
    expect(plan.blobs).toEqual({ count: 4, bytes: sum(LAYER_A, LAYER_B, base.config.size, app.config.size) });
    expect(plan.manifests).toEqual({ count: 2, bytes: base.manifest.size + app.manifest.size });
    expect(plan.excluded.count).toBe(0);

    const real = await ferry(['save', '-q', '--json', baseRef(), appRef(), '-o', out]);
    expect(real.code, real.stderr).toBe(0);
    expect(plan.archive!.files).toEqual([{ path: out, bytes: (await stat(out)).size }]);
    const result = JSON.parse(real.stdout.trim().split('\n').at(-1)!);
    expect({ blobs: result.blobs, manifests: result.manifests }).toEqual({ blobs: plan.blobs, manifests: plan.manifests });
    expect(await blobEntries(out, [base.manifest.digest, app.manifest.digest])).toEqual({ blobs: plan.blobs, manifests: plan.manifests });

    const human = await ferry(['save', '--dry-run', baseRef(), appRef(), '-o', join(dir, 'other.tar')]);
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/blobs to move: +4 \(/);
    expect(human.stdout).toContain(base.manifest.digest.slice(7, 19));
  });

  it('every image shows its platforms: a single manifest from its config, an index without its attestations', async () => {
    const dry = await ferry(['save', '--dry-run', '--json', baseRef(), `oci:${TESTDATA}:multi`, '-o', join(await tempDir(), 'x.tar')]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(planOf(dry.stdout).images.map((i) => i.platforms)).toEqual([['linux/amd64'], ['linux/amd64', 'linux/arm64']]);
    const human = await ferry(['save', '--dry-run', baseRef(), '-o', join(await tempDir(), 'y.tar')]);
    expect(human.stdout).toMatch(/base\s+[0-9a-f]{12}\s+linux\/amd64\s/);
  });

  it('--volume-size: the planned volumes are the files a real save writes, with the same sizes', async () => {
    const dir = await tempDir();
    const out = join(dir, 'vol.tar');
    const dry = await ferry(['save', '--dry-run', '--json', '--volume-size', '256k', baseRef(), appRef(), bigRef(), '-o', out]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(await readdir(dir)).toEqual([]);
    const plan = planOf(dry.stdout);
    expect(plan.archive!.volumeSize).toBe(256 << 10);
    expect(plan.archive!.files.length).toBeGreaterThan(4);

    const real = await ferry(['save', '-q', '--volume-size', '256k', baseRef(), appRef(), bigRef(), '-o', out]);
    expect(real.code, real.stderr).toBe(0);
    const written = (await readdir(dir)).sort().map((f) => join(dir, f));
    expect(plan.archive!.files.map((f) => f.path)).toEqual(written);
    for (const f of plan.archive!.files) expect(f.bytes).toBe((await stat(f.path)).size);
  });

  it('--media: a plan that does not fit fails with exit 3 and says by how much; a real save is refused before writing', async () => {
    const dir = await tempDir();
    const out = join(dir, 'm.tar');
    const small = await ferry(['save', '--dry-run', '--media', '400k', baseRef(), appRef(), '-o', out]);
    expect(small.code).toBe(3);
    expect(small.stdout).toMatch(/media: +does NOT fit on 410kB/);
    expect(small.stderr).toMatch(/the archive needs .* but --media is 410kB \(409600 bytes\): .* too much/);
    const json = await ferry(['save', '--dry-run', '--json', '--media', '400k', baseRef(), appRef(), '-o', out]);
    expect(json.code).toBe(3);
    const plan = planOf(json.stdout);
    expect(plan.archive!.media).toMatchObject({ size: 400 << 10, fits: false, over: plan.archive!.bytes - (400 << 10) });

    const refused = await ferry(['save', '-q', '--media', '400k', baseRef(), appRef(), '-o', out]);
    expect(refused.code).toBe(3);
    expect(refused.stderr).toContain('nothing was written');
    expect(await readdir(dir)).toEqual([]);

    const fits = await ferry(['save', '--dry-run', '--media', '1M', baseRef(), appRef(), '-o', out]);
    expect(fits.code, fits.stderr).toBe(0);
    expect(fits.stdout).toMatch(/media: +fits on 1\.05MB/);
    const saved = await ferry(['save', '-q', '--media', '1M', baseRef(), appRef(), '-o', out]);
    expect(saved.code, saved.stderr).toBe(0);
    expect((await stat(out)).size).toBe(plan.archive!.bytes);
  });

  it('--media on a compressed archive is checked against the most it can take once compressed, not the tar', async () => {
    // Random layers: stored in the .tar.gz/.tar.zst, which then comes out a little larger than the tar.
    const dir = await tempDir();
    for (const suffix of ['tar.gz', 'tar.zst']) {
      const out = join(dir, `c.${suffix}`);
      const json = await ferry(['save', '--dry-run', '--json', baseRef(), appRef(), '-o', out]);
      expect(json.code, json.stderr).toBe(0);
      const a = planOf(json.stdout).archive!;
      expect(a.maxBytes).toBeGreaterThan(a.bytes);
      expect(a.files[0]!.maxBytes).toBe(a.maxBytes);
      const saved = await ferry(['save', '-q', '--media', String(a.maxBytes), baseRef(), appRef(), '-o', out]);
      expect(saved.code, saved.stderr).toBe(0);
      expect((await stat(out)).size).toBeLessThanOrEqual(a.maxBytes!);
      // One byte less than the bound is refused, though the tar alone would fit.
      const tight = await ferry(['save', '--dry-run', '--media', String(a.maxBytes! - 1), baseRef(), appRef(), '-o', join(dir, `d.${suffix}`)]);
      expect(tight.code).toBe(3);
      expect(tight.stdout).toMatch(/archive: .* as tar before (gzip|zstd) compression, at most .* after/);
      expect(tight.stderr).toContain(`the archive needs up to`);
      expect(tight.stderr).toContain(`(${a.maxBytes} bytes) but --media is`);
    }
  });

  it('bad inputs: --media garbage, --dry-run with --compress-layers', async () => {
    const out = join(await tempDir(), 'x.tar');
    const garbage = await ferry(['save', '--dry-run', '--media', 'lots', baseRef(), '-o', out]);
    expect(garbage.code).toBe(2);
    expect(garbage.stderr).toContain('invalid size "lots"');
    const recompress = await ferry(['save', '--dry-run', '--compress-layers', 'zstd', baseRef(), '-o', out]);
    expect(recompress.code).toBe(2);
    expect(recompress.stderr).toContain('cannot plan --compress-layers');
  });

  it('refuses what the real save would: a missing output directory, a file in the path (volumes too); writes nothing', async () => {
    const dir = await tempDir();
    await writeFile(join(dir, 'file'), 'x');
    const cases: Array<[string[], string, number]> = [
      [['-o', join(dir, 'missing', 'set.tar')], `cannot write ${join(dir, 'missing', 'set.tar')}: the directory ${join(dir, 'missing')} does not exist`, 7],
      [['-o', join(dir, 'missing', 'set.tar'), '--volume-size', '256k'], `cannot write ${join(dir, 'missing', 'set.001.tar')}: the directory ${join(dir, 'missing')} does not exist`, 7],
      [['-o', join(dir, 'file', 'set.tar.zst')], `ENOTDIR: ${join(dir, 'file', 'set.tar.zst')} (not a directory)`, 7],
      [['-o', join(dir, 'file', 'set.tar'), '--volume-size', '256k'], `ENOTDIR: ${join(dir, 'file', 'set.001.tar')} (not a directory)`, 7],
    ];
    for (const [out, message, code] of cases) {
      const dry = await ferry(['save', '--dry-run', baseRef(), ...out]);
      const real = await ferry(['save', baseRef(), ...out]);
      expect(real.code, real.stderr).toBe(code);
      expect(real.stderr).toContain(message);
      expect(dry.code, dry.stderr).toBe(code);
      expect(dry.stderr).toBe(real.stderr);
      expect(dry.stdout).toBe('');
    }
    expect(await readdir(dir)).toEqual(['file']);
  });

  it('--exclude-from: the plan shows the base layer as excluded and moves only the new one', async () => {
    const have = join(await tempDir(), 'airgap');
    expect((await ferry(['--store', have, 'copy', '-q', baseRef(), 'example.com/app:base'])).code).toBe(0);
    const inv = join(await tempDir(), 'inv.json');
    expect((await ferry(['--store', have, 'inventory', '-o', inv])).code).toBe(0);
    const dry = await ferry(['save', '--dry-run', '--json', '--exclude-from', inv, appRef(), '-o', join(await tempDir(), 'delta.tar')]);
    expect(dry.code, dry.stderr).toBe(0);
    const plan = planOf(dry.stdout);
    expect(plan.excluded).toEqual({ count: 1, bytes: LAYER_A });
    expect(plan.blobs).toEqual({ count: 2, bytes: LAYER_B + app.config.size });
    expect(plan.manifests).toEqual({ count: 1, bytes: app.manifest.size });
    const human = await ferry(['save', '--dry-run', '--exclude-from', inv, appRef(), '-o', join(await tempDir(), 'delta.tar')]);
    expect(human.stdout).toMatch(/excluded: +1 \(307kB\) listed by --exclude-from/);
    const blobsLine = human.stdout.match(/blobs to move: +(\d+) \((\S+)\)/)!;
    const manifestsLine = human.stdout.match(/manifests: +(\d+) \((\S+)\)/)!;

    // The real delta writes what the plan said: the new layer and the config as blobs, the manifest apart.
    const file = join(await tempDir(), 'delta.tar');
    const real = await ferry(['save', '--json', '--exclude-from', inv, appRef(), '-o', file]);
    expect(real.code, real.stderr).toBe(0);
    const result = JSON.parse(real.stdout.trim().split('\n').at(-1)!);
    expect({ blobs: result.blobs, manifests: result.manifests }).toEqual({ blobs: plan.blobs, manifests: plan.manifests });
    expect(await blobEntries(file, [app.manifest.digest])).toEqual({ blobs: plan.blobs, manifests: plan.manifests });
    const saved = await ferry(['save', '--exclude-from', inv, appRef(), '-o', file, '--force']);
    expect(saved.stdout).toContain(`Wrote ${file}: ${blobsLine[1]} blob(s) (${blobsLine[2]}), ${manifestsLine[1]} manifest(s) (${manifestsLine[2]})`);
  });
});

const distribution = hasTool('docker-registry');

describe.skipIf(!distribution)('dry-run plans: push, push --from, sync (distribution registry)', () => {
  let reg: RunningRegistry;
  let proxy: FaultProxy;
  let store: string;
  let made: MadeImage[];
  let src: string;
  const writes = (from: number) => proxy.seen.slice(from).filter((q) => !['GET', 'HEAD'].includes(q.method));

  beforeAll(async () => {
    reg = await startDistribution();
    proxy = await startFaultProxy(reg.host);
    src = join(await tempDir(), 'src');
    const shared = Buffer.alloc(LAYER_A, 3);
    made = await makeLayout(src, [
      { tag: 'v1', layers: [shared, Buffer.alloc(1000, 1)] },
      { tag: 'v2', layers: [shared, Buffer.alloc(LAYER_B, 2)] },
    ]);
    store = join(await tempDir(), 'store');
    for (const t of ['v1', 'v2']) {
      expect((await ferry(['--store', store, 'copy', '-q', `oci:${src}:${t}`, `${proxy.host}/plan/app:${t}`])).code).toBe(0);
      expect((await ferry(['copy', '-q', `oci:${src}:${t}`, `docker://${reg.host}/plan/src:${t}`])).code).toBe(0);
    }
  }, 120_000);
  afterAll(async () => {
    await proxy?.stop();
    await reg?.stop();
  });

  it('push --dry-run uploads nothing, then reports what the registry already has', async () => {
    const mark = proxy.seen.length;
    const dry = await ferry(['--store', store, 'push', '--dry-run', '--json', '--all-tags', `${proxy.host}/plan/app`]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(writes(mark)).toEqual([]);
    const plan = planOf(dry.stdout);
    expect(plan.blobs).toEqual({ count: 5, bytes: sum(LAYER_A, 1000, LAYER_B, made[0]!.config.size, made[1]!.config.size) });
    expect(plan.skipped.count).toBe(0);
    // Each image by NAME:TAG, as a push of that tag alone lists it.
    expect(plan.images.map((i) => i.source).sort()).toEqual([`${proxy.host}/plan/app:v1`, `${proxy.host}/plan/app:v2`]);
    const text = await ferry(['--store', store, 'push', '--dry-run', '-a', `${proxy.host}/plan/app`]);
    expect(text.code, text.stderr).toBe(0);
    for (const t of ['v1', 'v2']) expect(text.stdout).toMatch(new RegExp(`^${proxy.host}/plan/app:${t} +[0-9a-f]{12} +linux/amd64 +${proxy.host}/plan/app:${t}$`, 'm'));
    expect((await ferry(['tags', `${reg.host}/plan/app`])).code).toBe(2);

    expect((await ferry(['--store', store, 'push', '-q', `${proxy.host}/plan/app:v1`])).code).toBe(0);
    const after = await ferry(['--store', store, 'push', '--dry-run', '--json', `${proxy.host}/plan/app:v2`]);
    const p2 = planOf(after.stdout);
    expect(p2.skipped).toEqual({ count: 1, bytes: LAYER_A });
    expect(p2.blobs).toEqual({ count: 2, bytes: LAYER_B + made[1]!.config.size });
    expect(p2.images).toEqual([{ source: `${proxy.host}/plan/app:v2`, digest: made[1]!.manifest.digest, platforms: ['linux/amd64'], names: [`${proxy.host}/plan/app:v2`] }]);
  });

  it('push --from ARCHIVE --dry-run: one count per blob for images sharing a layer; nothing uploaded', async () => {
    const archive = join(await tempDir(), 'both.tar');
    expect((await ferry(['--store', store, 'save', '-q', `${proxy.host}/plan/app:v1`, `${proxy.host}/plan/app:v2`, '-o', archive])).code).toBe(0);
    const mark = proxy.seen.length;
    const dry = await ferry(['push', '--from', archive, `${proxy.host}/fresh`, '--dry-run', '--json']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(writes(mark)).toEqual([]);
    const plan = planOf(dry.stdout);
    expect(plan.images.map((i) => i.names[0])).toEqual([`${proxy.host}/fresh/plan/app:v1`, `${proxy.host}/fresh/plan/app:v2`]);
    // Each image is listed by its name in the archive; where it goes is its names.
    expect(plan.images.map((i) => i.source)).toEqual([`${proxy.host}/plan/app:v1`, `${proxy.host}/plan/app:v2`]);
    expect(plan.blobs).toEqual({ count: 5, bytes: sum(LAYER_A, 1000, LAYER_B, made[0]!.config.size, made[1]!.config.size) });
    expect((await ferry(['catalog', reg.host])).stdout).not.toContain('fresh');
  });

  it('sync --dry-run changes neither a layout (byte for byte) nor a registry, and creates no missing store', async () => {
    const layout = join(await tempDir(), 'mirror');
    expect((await ferry(['sync', '-q', '--include', '^v1$', `${proxy.host}/plan/src`, `oci:${layout}`])).code).toBe(0);
    const before = await snapshot(layout);
    const dry = await ferry(['sync', '--dry-run', '--json', `${proxy.host}/plan/src`, `oci:${layout}`]);
    expect(dry.code, dry.stderr).toBe(0);
    expect(await snapshot(layout)).toEqual(before);
    const plan = planOf(dry.stdout);
    expect(plan.command).toBe('sync');
    expect(plan.images.map((i) => i.source), dry.stdout).toEqual([`${proxy.host}/plan/src:v2`]);
    expect(plan.skipped).toEqual({ count: 1, bytes: LAYER_A });
    expect(plan.blobs).toEqual({ count: 2, bytes: LAYER_B + made[1]!.config.size });

    const missing = join(await tempDir(), 'no-store-yet');
    const intoStore = await ferry(['--store', missing, 'sync', '--dry-run', `${proxy.host}/plan/src`]);
    expect(intoStore.code, intoStore.stderr).toBe(0);
    expect(intoStore.stdout).toMatch(/blobs to move: +5 /);
    await expect(stat(missing)).rejects.toThrow();

    const mark = proxy.seen.length;
    const toRegistry = await ferry(['sync', '--dry-run', `${proxy.host}/plan/src`, `docker://${proxy.host}/copy`]);
    expect(toRegistry.code, toRegistry.stderr).toBe(0);
    expect(toRegistry.stdout).toContain('2 would copy');
    expect(writes(mark)).toEqual([]);
  });
});
