import { createHash } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ANNOTATION_SOURCE_INDEX, copy } from '../src/copy.js';
import { readDocument, walk } from '../src/graph.js';
import { OciLayout } from '../src/locations/layout.js';
import { parsePlatformSelection } from '../src/oci/platform.js';
import { verifyLayout } from '../src/verify.js';
import { failure } from './helpers/assert.js';
import { TAGS, testdataImages as expected } from './helpers/expected-images.js';
import { flipByte, TESTDATA, tempDir, tempFilesIn, testdataCopy } from './helpers/fs.js';
import { makeLayout, nestIndexes } from './helpers/images.js';



async function fresh(): Promise<OciLayout> {
  return OciLayout.open(join(await tempDir(), 'dst'), { create: true });
}


describe('copy engine', () => {
  it('copies every testdata image with identical digests, then skips everything on a rerun', async () => {
    const src = await OciLayout.open(TESTDATA);
    const dst = await fresh();
    const exp = await expected();
    const roots = TAGS.map((t) => ({ ref: t, names: [{ tag: t, name: exp[t]!.name }] }));
    const first = await copy(src, dst, roots);
    expect(first.images.map((i) => i.digest)).toEqual(TAGS.map((t) => exp[t]!.digest));
    expect(first.blobs.copied).toBeGreaterThan(10);
    const again = await copy(src, dst, roots);
    expect(again.blobs.copied).toBe(0);
    expect(again.manifests.copied).toBe(0);
    expect(again.blobs.skipped).toBe(first.blobs.copied);
    const report = await verifyLayout(dst);
    expect(report.problems).toEqual([]);
    const entries = await dst.entries();
    expect(entries.map((e) => e.name).sort()).toEqual(TAGS.map((t) => exp[t]!.name).sort());
    for (const t of TAGS) expect((await dst.resolve(exp[t]!.name)).digest).toBe(exp[t]!.digest);
  });

  it('keeps the original bytes of every manifest (no re-serialisation)', async () => {
    const src = await OciLayout.open(TESTDATA);
    const dst = await fresh();
    await copy(src, dst, [{ ref: 'multi' }]);
    const digest = (await expected()).multi!.digest;
    const a = await readFile(src.blobPath(digest as never));
    const b = await readFile(dst.blobPath(digest as never));
    expect(b.equals(a)).toBe(true);
    // An unnamed root is recorded once, without names.
    await copy(src, dst, [{ ref: 'multi' }]);
    expect((await dst.entries()).filter((e) => e.descriptor.digest === digest)).toHaveLength(1);
  });

  it('one platform out of an index becomes a manifest root that remembers the index', async () => {
    const src = await OciLayout.open(TESTDATA);
    const dst = await fresh();
    const r = await copy(src, dst, [{ ref: 'multi', names: [{ tag: 'arm' }] }], { platforms: parsePlatformSelection('linux/arm64') });
    expect(r.images[0]!.platforms).toEqual(['linux/arm64']);
    const [entry] = await dst.entries();
    expect(entry!.descriptor.mediaType).toBe('application/vnd.oci.image.manifest.v1+json');
    expect(entry!.descriptor.annotations?.[ANNOTATION_SOURCE_INDEX]).toBe((await expected()).multi!.digest);
    expect((await verifyLayout(dst)).problems).toEqual([]);
  });

  it('several platforms out of an index become a new index listing only those', async () => {
    const src = await OciLayout.open(TESTDATA);
    const dst = await fresh();
    await copy(src, dst, [{ ref: 'multi', names: [{ tag: 'two' }] }], { platforms: parsePlatformSelection('linux/amd64,linux/arm64') });
    const [entry] = await dst.entries();
    expect(entry!.descriptor.digest).not.toBe((await expected()).multi!.digest);
    const doc = await readDocument(dst, entry!.descriptor);
    expect(doc.kind === 'index' && doc.index.manifests.map((m) => m.platform?.architecture)).toEqual(['amd64', 'arm64']);
    // Never a layout that references a missing blob: the attestation was not copied, so it is not listed.
    expect((await verifyLayout(dst)).problems).toEqual([]);
  });

  it('all platforms keep the index and its attestation unchanged', async () => {
    const src = await OciLayout.open(TESTDATA);
    const dst = await fresh();
    const r = await copy(src, dst, [{ ref: 'multi' }], { platforms: 'all' });
    expect(r.images[0]!.digest).toBe((await expected()).multi!.digest);
    expect(r.manifests.copied).toBe(4);
  });

  it('a platform the index lacks is a NOT_FOUND naming what is available', async () => {
    const src = await OciLayout.open(TESTDATA);
    const err = await failure(copy(src, await fresh(), [{ ref: 'multi' }], { platforms: parsePlatformSelection('linux/s390x') }));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain('linux/amd64, linux/arm64');
  });

  it('A3: a source blob whose bytes differ from its digest fails with both digests; nothing is named or left', async () => {
    const dir = await testdataCopy();
    const exp = await expected();
    const layer = exp.plain!.layers![0]!.digest;
    await flipByte(join(dir, 'blobs', 'sha256', layer.slice(7)));
    const dst = await fresh();
    const before = await readFile(join(dst.dir, 'index.json'), 'utf8');
    const err = await failure(copy(await OciLayout.open(dir), dst, [{ ref: 'plain', names: [{ tag: 'p' }] }]));
    expect(err.code).toBe('DIGEST_MISMATCH');
    expect(err.message).toContain(`expected ${layer}, got sha256:`);
    expect(await readdir(join(dst.dir, 'blobs', 'sha256'))).not.toContain(layer.slice(7));
    expect(await tempFilesIn(dst.dir)).toEqual([]);
    expect(await readFile(join(dst.dir, 'index.json'), 'utf8')).toBe(before);
  });

  it('a missing source blob fails and leaves the destination index unchanged', async () => {
    const dir = await tempDir();
    const [img] = await makeLayout(dir, [{ tag: 't', layers: [Buffer.from('one'), Buffer.from('two')] }]);
    const { unlink } = await import('node:fs/promises');
    await unlink(join(dir, 'blobs', 'sha256', img!.layers[1]!.digest.slice(7)));
    const dst = await fresh();
    const err = await failure(copy(await OciLayout.open(dir), dst, [{ ref: 't', names: [{ tag: 't' }] }]));
    expect(err.code).toBe('NOT_FOUND');
    expect(err.message).toContain(img!.layers[1]!.digest);
    expect(await dst.entries()).toEqual([]);
  });

  it('A18: an index nested deeper than the limit is refused', async () => {
    const dir = await tempDir();
    const [img] = await makeLayout(dir, [{ tag: 'x', layers: [Buffer.from('a')] }]);
    await nestIndexes(dir, img!.manifest, 40, 'deep');
    const err = await failure(copy(await OciLayout.open(dir), await fresh(), [{ ref: 'deep' }]));
    expect(err.code).toBe('TOO_LARGE');
    expect(err.message).toMatch(/exceeds limit/);
  });

  it('nested indexes within the limit are copied whole', async () => {
    const dir = await tempDir();
    const [img] = await makeLayout(dir, [{ tag: 'x', layers: [Buffer.from('a')] }]);
    await nestIndexes(dir, img!.manifest, 3, 'nested');
    const dst = await fresh();
    const r = await copy(await OciLayout.open(dir), dst, [{ ref: 'nested', names: [{ tag: 'n' }] }]);
    expect(r.manifests.copied).toBe(4);
    expect((await verifyLayout(dst)).problems).toEqual([]);
  });

  it('an AbortSignal cancels cleanly: no temp files, index.json untouched', async () => {
    const dir = await tempDir();
    await makeLayout(dir, [{ tag: 'big', layers: [64 << 20, 64 << 20] }]);
    const dst = await fresh();
    const before = await readFile(join(dst.dir, 'index.json'), 'utf8');
    const ac = new AbortController();
    const p = copy(await OciLayout.open(dir), dst, [{ ref: 'big', names: [{ tag: 'big' }] }], {
      signal: ac.signal,
      onEvent: (e) => {
        if (e.type === 'blob-progress' && e.bytes > 1 << 20) ac.abort();
      },
    });
    const err = await failure(p);
    expect(err.code ?? (err as { name?: string }).name).toMatch(/ABORT/);
    expect(await tempFilesIn(dst.dir)).toEqual([]);
    expect(await readFile(join(dst.dir, 'index.json'), 'utf8')).toBe(before);
  });

  it('B8: an undersized blob left by a crash is detected and replaced', async () => {
    const src = await OciLayout.open(TESTDATA);
    const dst = await fresh();
    const exp = await expected();
    const layer = exp.layers!.layers![0]!.digest;
    const full = await readFile(src.blobPath(layer as never));
    await writeFile(dst.blobPath(layer as never), full.subarray(0, 10));
    const r = await copy(src, dst, [{ ref: 'layers' }]);
    expect(r.blobs.copied).toBe(4);
    expect((await readFile(dst.blobPath(layer as never))).equals(full)).toBe(true);
    expect((await verifyLayout(dst)).problems).toEqual([]);
  });

  it('emits progress events and reports bytes', async () => {
    const src = await OciLayout.open(TESTDATA);
    const events: string[] = [];
    const r = await copy(src, await fresh(), [{ ref: 'plain' }], { onEvent: (e) => events.push(e.type) });
    expect(events).toContain('resolved');
    expect(events).toContain('blob-start');
    expect(events).toContain('blob-done');
    expect(r.blobs.bytesCopied).toBeGreaterThan(0);
  });
});

describe("an index walk reads its children's manifests ahead, within bounds", () => {
  /** A layout whose index blob lists `n` images' manifests; returns those and the index. */
  async function wideIndex(n: number) {
    const dir = join(await tempDir(), 'wide');
    const made = await makeLayout(dir, Array.from({ length: n }, (_, i) => ({ tag: `t${i}`, layers: [Buffer.from(`layer ${i}`)] })));
    const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: made.map((m) => m.manifest) });
    const hex = createHash('sha256').update(body).digest('hex');
    await writeFile(join(dir, 'blobs', 'sha256', hex), body);
    const index = { mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${hex}` as never, size: Buffer.byteLength(body) };
    return { dir, manifests: made.map((m) => m.manifest.digest as string), index };
  }

  /** The layout as a source whose fetches are recorded. */
  async function recorded(dir: string) {
    const layout = await OciLayout.open(dir);
    const fetched: string[] = [];
    const fetch = layout.fetch.bind(layout);
    layout.fetch = (d, o) => (fetched.push(d.digest), fetch(d, o));
    return { layout, fetched };
  }

  it('reads manifests from the one it visits to at most 7 past it, each once', async () => {
    const { dir, manifests, index } = await wideIndex(30);
    const { layout, fetched } = await recorded(dir);
    let whileOnFirst = -1;
    await walk(layout, index, {
      onDocument: async (n) => {
        if (n.descriptor.digest !== manifests[0]) return;
        await new Promise((r) => setTimeout(r, 100));
        whileOnFirst = fetched.filter((d) => manifests.includes(d)).length;
      },
    });
    expect(whileOnFirst).toBe(8);
    expect(fetched.filter((d) => manifests.includes(d))).toEqual(manifests);
  });

  it('asks for nothing more once the walk has failed', async () => {
    const { dir, manifests, index } = await wideIndex(30);
    await rm(join(dir, 'blobs', 'sha256', manifests[2]!.slice('sha256:'.length)));
    const { layout, fetched } = await recorded(dir);
    expect((await failure(walk(layout, index, {}))).code).toBe('NOT_FOUND');
    await new Promise((r) => setTimeout(r, 100));
    expect(fetched.filter((d) => manifests.includes(d)).length).toBeLessThanOrEqual(10);
  });
});

describe('a digest in a new name or a destination (it was ignored: the image stored unnamed, or another image pushed)', () => {
  it('store names, import and load --tag refuse a digest; a registry destination\'s digest must be the image\'s own', async () => {
    const { ferry } = await import('./helpers/cli.js');
    const { startServe } = await import('./helpers/serve.js');
    const exp = await expected();
    const zero = `sha256:${'0'.repeat(64)}`;
    const store = await tempDir();
    for (const dest of [`example.com/dst@${zero}`, `example.com/dst:1@${zero}`]) {
      const r = await ferry(['--store', store, 'copy', `oci:${TESTDATA}:plain`, dest]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`the destination "${dest}" holds a digest; a new name is NAME[:TAG]`);
    }
    const tar = join(await tempDir(), 'root.tar');
    await writeFile(tar, Buffer.alloc(1024));
    const imported = await ferry(['--store', store, 'import', tar, `example.com/imp@${exp.plain.digest}`]);
    expect(imported.code, imported.stderr).toBe(2);
    expect(imported.stderr).toContain('holds a digest');
    const archive = join(await tempDir(), 'a.tar');
    expect((await ferry(['save', '-q', `oci:${TESTDATA}:plain`, '-o', archive])).code).toBe(0);
    const loaded = await ferry(['--store', store, 'load', '-i', archive, '--tag', `new/name:2@${zero}`]);
    expect(loaded.code, loaded.stderr).toBe(2);
    expect(loaded.stderr).toContain('--tag "new/name:2@');
    expect(await readdir(store)).toEqual([]);

    const served = await startServe(await tempDir());
    try {
      const wrong = await ferry(['copy', `oci:${TESTDATA}:plain`, `docker://${served.host}/p/x@${exp.multi.digest}`]);
      expect(wrong.code, wrong.stderr).toBe(2);
      expect(wrong.stderr).toContain(`names digest ${exp.multi.digest}, but the image is ${exp.plain.digest}`);
      const narrowed = await ferry(['copy', '--platform', 'linux/amd64', `oci:${TESTDATA}:multi`, `docker://${served.host}/p/x@${exp.multi.digest}`]);
      expect(narrowed.code, narrowed.stderr).toBe(2);
      expect(narrowed.stderr).toContain('a copy narrowed to some platforms gets a digest of its own');
      expect((await ferry(['catalog', served.host])).stdout).not.toContain('p/x');
      const right = await ferry(['copy', `oci:${TESTDATA}:plain`, `docker://${served.host}/p/x@${exp.plain.digest}`]);
      expect(right.code, right.stderr).toBe(0);
    } finally {
      await served.stop();
    }
  });
});
