import { describe, expect, it } from 'vitest';
import { digestOf, parseDigest } from '../src/oci/digest.js';
import { MAX_JSON_BYTES, parseConfig, parseManifestDocument } from '../src/oci/manifest.js';
import { MediaType } from '../src/oci/mediatypes.js';
import { hostPlatform, normalizePlatform, parsePlatform, selectPlatforms } from '../src/oci/platform.js';
import type { Descriptor } from '../src/oci/manifest.js';

const HEX = 'a'.repeat(64);
const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
  } catch (e) {
    return (e as { code?: string }).code;
  }
  return undefined;
};
const bytes = (v: unknown) => Buffer.from(JSON.stringify(v));
const desc = (mediaType: string, extra: Partial<Descriptor> = {}): Descriptor => ({ mediaType, digest: `sha256:${HEX}`, size: 10, ...extra });
const manifest = (extra: Record<string, unknown> = {}) => ({
  schemaVersion: 2,
  mediaType: MediaType.OciManifest,
  config: desc(MediaType.OciConfig),
  layers: [desc(MediaType.OciLayerGzip)],
  ...extra,
});

describe('digests (A2, I3)', () => {
  it.each([
    ['sha256:' + HEX],
    ['sha512:' + 'b'.repeat(128)],
  ])('accepts %s', (d) => expect(parseDigest(d)).toBe(d));

  it.each([
    ['sha256:../../x', 'path traversal'],
    ['sha256:' + 'A'.repeat(64), 'uppercase hex'],
    ['sha256:' + 'a'.repeat(63), 'short'],
    ['sha256:' + 'a'.repeat(65), 'long'],
    ['md5:d41d8cd98f00b204e9800998ecf8427e', 'unknown algorithm'],
    ['sha256' + HEX, 'no colon'],
    ['', 'empty'],
    [`sha256:${HEX}/../x`, 'slash'],
  ])('A2: refuses %s (%s) with INVALID_DIGEST', (d) => {
    expect(code(() => parseDigest(d))).toBe('INVALID_DIGEST');
  });

  it('refuses non-strings', () => expect(code(() => parseDigest(42))).toBe('INVALID_DIGEST'));

  it('hashes the empty string to the well-known digest', () => {
    expect(digestOf('')).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});

describe('manifest and index validation', () => {
  const where = 'test';

  it('parses an OCI manifest and keeps unknown fields', () => {
    const doc = parseManifestDocument(bytes(manifest({ 'x-extra': { keep: true } })), { where });
    expect(doc.kind).toBe('manifest');
    if (doc.kind === 'manifest') expect(doc.manifest['x-extra']).toEqual({ keep: true });
  });

  it('parses a Docker manifest list', () => {
    const doc = parseManifestDocument(bytes({ schemaVersion: 2, mediaType: MediaType.DockerList, manifests: [desc(MediaType.DockerManifest, { platform: { os: 'linux', architecture: 'amd64' } })] }), { where });
    expect(doc.kind).toBe('index');
  });

  it('duck-types a manifest without mediaType from its shape', () => {
    const m = manifest();
    delete (m as Record<string, unknown>).mediaType;
    expect(parseManifestDocument(bytes(m), { where }).kind).toBe('manifest');
    expect(parseManifestDocument(bytes({ schemaVersion: 2, manifests: [] }), { where }).kind).toBe('index');
  });

  it('A17: refuses a document with both manifests and layers', () => {
    const both = { ...manifest(), manifests: [] };
    expect(code(() => parseManifestDocument(bytes(both), { where }))).toBe('INVALID_INPUT');
    const noType = { ...both } as Record<string, unknown>;
    delete noType.mediaType;
    expect(code(() => parseManifestDocument(bytes(noType), { where }))).toBe('INVALID_INPUT');
  });

  it('A17: refuses a mediaType that disagrees with the declared one', () => {
    expect(code(() => parseManifestDocument(bytes(manifest()), { where, declared: MediaType.OciIndex }))).toBe('INVALID_INPUT');
    expect(code(() => parseManifestDocument(bytes(manifest()), { where, declared: MediaType.DockerManifest }))).toBe('INVALID_INPUT');
  });

  it('A17: refuses an index declared type with a manifest body lacking mediaType', () => {
    const m = manifest();
    delete (m as Record<string, unknown>).mediaType;
    expect(code(() => parseManifestDocument(bytes(m), { where, declared: MediaType.OciIndex }))).toBe('INVALID_INPUT');
  });

  it('A19: refuses schema1 with a clear message', () => {
    const s1 = { schemaVersion: 1, name: 'x', tag: 'y', fsLayers: [], signatures: [] };
    let err: { code?: string; message?: string } = {};
    try {
      parseManifestDocument(bytes(s1), { where, declared: MediaType.Schema1Signed });
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.code).toBe('UNSUPPORTED');
    expect(err.message).toMatch(/schema1 unsupported/);
    expect(code(() => parseManifestDocument(bytes({ ...s1, mediaType: MediaType.Schema1 }), { where }))).toBe('UNSUPPORTED');
  });

  it('A18: refuses JSON over 4 MiB before parsing', () => {
    const big = Buffer.alloc(MAX_JSON_BYTES + 1, 0x20);
    expect(code(() => parseManifestDocument(big, { where }))).toBe('TOO_LARGE');
  });

  it('A18: deeply nested JSON is refused, not a crash', () => {
    const deep = Buffer.from('['.repeat(100_000) + ']'.repeat(100_000));
    expect(['INVALID_INPUT', 'TOO_LARGE']).toContain(code(() => parseManifestDocument(deep, { where })));
  });

  it.each([
    ['not JSON', Buffer.from('{nope')],
    ['an array', bytes([])],
    ['schemaVersion 3', bytes({ ...manifest(), schemaVersion: 3 })],
    ['a layer with a bad digest', bytes(manifest({ layers: [{ ...desc(MediaType.OciLayer), digest: 'sha256:../x' }] }))],
    ['a negative size', bytes(manifest({ layers: [desc(MediaType.OciLayer, { size: -1 })] }))],
    ['a fractional size', bytes(manifest({ layers: [desc(MediaType.OciLayer, { size: 1.5 })] }))],
    ['layers that are not an array', bytes(manifest({ layers: {} }))],
    ['non-string annotations', bytes(manifest({ annotations: { a: 1 } }))],
    ['an index entry without mediaType', bytes({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [{ digest: `sha256:${HEX}`, size: 1 }] })],
    ['a platform without os', bytes({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests: [desc(MediaType.OciManifest, { platform: { architecture: 'amd64' } as never })] })],
  ])('refuses %s', (_name, doc) => {
    expect(['INVALID_INPUT', 'INVALID_DIGEST']).toContain(code(() => parseManifestDocument(doc, { where })));
  });

  it('refuses an unknown manifest media type', () => {
    expect(code(() => parseManifestDocument(bytes({ schemaVersion: 2, mediaType: 'application/x-unknown' }), { where }))).toBe('UNSUPPORTED');
  });

  it('verifies embedded descriptor data against its digest', () => {
    const data = Buffer.from('{}');
    const good = { mediaType: MediaType.OciEmpty, digest: digestOf(data), size: 2, data: data.toString('base64') };
    expect(parseManifestDocument(bytes(manifest({ config: good })), { where }).kind).toBe('manifest');
    const bad = { ...good, data: Buffer.from('[]').toString('base64') };
    expect(code(() => parseManifestDocument(bytes(manifest({ config: bad })), { where }))).toBe('DIGEST_MISMATCH');
  });

  it('config needs rootfs of type layers with valid diff_ids', () => {
    const ok = { architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [`sha256:${HEX}`] } };
    expect(parseConfig(bytes(ok), where).rootfs.diff_ids).toHaveLength(1);
    expect(code(() => parseConfig(bytes({ ...ok, rootfs: { type: 'other', diff_ids: [] } }), where))).toBe('INVALID_INPUT');
    expect(code(() => parseConfig(bytes({ ...ok, rootfs: { type: 'layers', diff_ids: ['sha256:XYZ'] } }), where))).toBe('INVALID_DIGEST');
  });
});

describe('platforms', () => {
  const entry = (os: string, architecture: string, variant?: string, annotations?: Record<string, string>): Descriptor =>
    desc(MediaType.OciManifest, { platform: { os, architecture, ...(variant ? { variant } : {}) }, ...(annotations ? { annotations } : {}) });

  it('normalises architecture aliases', () => {
    expect(normalizePlatform({ os: 'linux', architecture: 'x86_64' })).toEqual({ os: 'linux', architecture: 'amd64' });
    expect(normalizePlatform({ os: 'linux', architecture: 'aarch64', variant: 'v8' })).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(normalizePlatform({ os: 'linux', architecture: 'armhf' })).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    expect(parsePlatform('arm64')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('aarch64')).toEqual({ os: 'linux', architecture: 'arm64' });
    expect(parsePlatform('armhf')).toEqual({ os: 'linux', architecture: 'arm', variant: 'v7' });
    // One word that is an OS means that OS on this host's architecture, as docker reads it.
    expect(parsePlatform('windows')).toEqual({ ...hostPlatform(), os: 'windows' });
    expect(parsePlatform('linux')).toEqual(hostPlatform());
    expect(code(() => parsePlatform('windoze'))).toBe('USAGE');
    expect(code(() => parsePlatform('linux//x'))).toBe('USAGE');
  });

  it('selects exact matches and never an attestation', () => {
    const att = entry('unknown', 'unknown', undefined, { 'vnd.docker.reference.type': 'attestation-manifest' });
    const amd = entry('linux', 'amd64');
    const arm = entry('linux', 'arm64', 'v8');
    expect(selectPlatforms([att, amd, arm], [parsePlatform('linux/arm64')], 'x')).toEqual([arm]);
    expect(selectPlatforms([att, amd, arm], [parsePlatform('linux/amd64'), parsePlatform('linux/arm64')], 'x')).toEqual([amd, arm]);
  });

  it('falls back from arm64 to arm/v7 and reports what is available otherwise', () => {
    const v7 = entry('linux', 'arm', 'v7');
    expect(selectPlatforms([entry('linux', 'amd64'), v7], [parsePlatform('linux/arm64')], 'x')).toEqual([v7]);
    let msg = '';
    try {
      selectPlatforms([entry('linux', 'amd64')], [parsePlatform('linux/s390x')], 'img');
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/no image for platform linux\/s390x \(available: linux\/amd64\)/);
  });
});

describe('hints that list names', () => {
  it('show the names most like the one asked for first, and say how many were left out', async () => {
    const { someNames } = await import('../src/util/list.js');
    const names = Array.from({ length: 10 }, (_, i) => `example.com/a${i}:1`).concat(['docker.io/library/alpine:3.20']);
    expect(someNames(names, 'alpine:3.21')).toBe('docker.io/library/alpine:3.20, ' + names.slice(0, 7).join(', ') + ' … and 3 more');
    expect(someNames(['a:1', 'b:1', 'a:1'], 'c')).toBe('a:1, b:1');
  });
});
