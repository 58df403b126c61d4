import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import zlib from 'node:zlib';
import { END_OF_ARCHIVE, entryHeader, entryPadding, readTar } from '../../src/archive/tar.js';

/** One entry of a hand-built archive. */
export interface Entry {
  name: string;
  data?: Buffer | string;
  type?: 'file' | 'dir' | 'symlink' | 'hardlink';
  link?: string;
}

export const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
const hex = (d: string) => d.slice(7);

/** The bytes of a tar holding `entries` in order (optionally gzip or zstd compressed). */
export function tarBytes(entries: Entry[], compress?: 'gzip' | 'zstd'): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.from(e.data);
    parts.push(entryHeader(e.name, e.type && e.type !== 'file' ? 0 : data.length, { type: e.type ?? 'file', linkname: e.link }));
    if (!e.type || e.type === 'file') parts.push(data, entryPadding(data.length));
  }
  parts.push(END_OF_ARCHIVE);
  const tar = Buffer.concat(parts);
  if (compress === 'gzip') return zlib.gzipSync(tar);
  if (compress === 'zstd') return zlib.zstdCompressSync(tar);
  return tar;
}

export async function writeTar(path: string, entries: Entry[], compress?: 'gzip' | 'zstd'): Promise<void> {
  await writeFile(path, tarBytes(entries, compress));
}

/** A minimal layer: a tar holding one file. */
export function layerTar(name: string, content: string): Buffer {
  return tarBytes([{ name, data: content }]);
}

export interface BuiltImage {
  entries: Entry[];
  manifest: { digest: string; size: number; bytes: Buffer };
  config: { digest: string; bytes: Buffer };
  layers: Array<{ digest: string; size: number; diffId: string; mediaType: string }>;
}

export interface ImageSpec {
  /** Layer bytes as stored, with their media type and (optional) the diff_id to claim. */
  layers: Array<{ data: Buffer; mediaType?: string; diffId?: string }>;
  /** Override the config's diff_ids. */
  diffIds?: string[];
  tag?: string;
  name?: string;
}

/** An OCI archive (index.json + blobs/) of one image; entries can be edited before writing. */
export function ociImage(spec: ImageSpec): BuiltImage {
  const layers = spec.layers.map((l) => {
    const mediaType = l.mediaType ?? 'application/vnd.oci.image.layer.v1.tar';
    const plain = () => (mediaType.endsWith('gzip') ? zlib.gunzipSync(l.data) : mediaType.endsWith('zstd') ? zlib.zstdDecompressSync(l.data) : l.data);
    return { data: l.data, digest: sha(l.data), size: l.data.length, diffId: l.diffId ?? sha(plain()), mediaType };
  });
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: spec.diffIds ?? layers.map((l) => l.diffId) } }));
  const m = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha(config), size: config.length },
      layers: layers.map((l) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size })),
    }),
  );
  const annotations: Record<string, string> = { 'org.opencontainers.image.ref.name': spec.tag ?? 'latest' };
  if (spec.name) annotations['io.containerd.image.name'] = spec.name;
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: sha(m), size: m.length, annotations }] };
  const entries: Entry[] = [
    { name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' },
    ...layers.map((l) => ({ name: `blobs/sha256/${hex(l.digest)}`, data: l.data })),
    { name: `blobs/sha256/${hex(sha(config))}`, data: config },
    { name: `blobs/sha256/${hex(sha(m))}`, data: m },
    { name: 'index.json', data: JSON.stringify(index) },
  ];
  return { entries, manifest: { digest: sha(m), size: m.length, bytes: m }, config: { digest: sha(config), bytes: config }, layers };
}

export interface LegacySpec {
  /** Uncompressed layer tars, base first; a repeated Buffer becomes a layer.tar symlink. */
  layers: Buffer[];
  repoTag: string;
  diffIds?: string[];
  /** Override a Layers path in manifest.json (e.g. to escape). */
  layerPaths?: string[];
  configPath?: string;
}

/**
 * A docker-save archive in the legacy (Docker ≤ 24) layout of SPEC-NOTES §4.2: manifest.json,
 * repositories, `<image-id>.json`, and per layer `<v1-id>/{VERSION,json,layer.tar}`; a layer whose
 * content recurs is a symlink `../<first v1-id>/layer.tar`.
 */
export function legacyArchive(spec: LegacySpec): { entries: Entry[]; configDigest: string; diffIds: string[] } {
  const diffIds = spec.layers.map((l) => sha(l));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', config: {}, rootfs: { type: 'layers', diff_ids: spec.diffIds ?? diffIds } }));
  const imageId = hex(sha(config));
  const entries: Entry[] = [];
  const firstDir = new Map<string, string>();
  const paths: string[] = [];
  let parent = '';
  spec.layers.forEach((l, i) => {
    // Synthetic v1 ids, chain-derived as docker makes them.
    const v1 = hex(sha(`${parent} ${diffIds[i]}`));
    parent = v1;
    entries.push({ name: `${v1}/`, type: 'dir' });
    entries.push({ name: `${v1}/VERSION`, data: '1.0' });
    entries.push({ name: `${v1}/json`, data: JSON.stringify({ id: v1, created: '1970-01-01T00:00:00Z' }) });
    const seen = firstDir.get(diffIds[i]!);
    if (seen) entries.push({ name: `${v1}/layer.tar`, type: 'symlink', link: `../${seen}/layer.tar` });
    else {
      entries.push({ name: `${v1}/layer.tar`, data: l });
      firstDir.set(diffIds[i]!, v1);
    }
    paths.push(`${v1}/layer.tar`);
  });
  const [repo, tag] = [spec.repoTag.slice(0, spec.repoTag.lastIndexOf(':')), spec.repoTag.slice(spec.repoTag.lastIndexOf(':') + 1)];
  entries.push({ name: `${imageId}.json`, data: config });
  entries.push({ name: 'manifest.json', data: JSON.stringify([{ Config: spec.configPath ?? `${imageId}.json`, RepoTags: [spec.repoTag], Layers: spec.layerPaths ?? paths }]) });
  entries.push({ name: 'repositories', data: JSON.stringify({ [repo]: { [tag]: parent } }) });
  return { entries, configDigest: sha(config), diffIds };
}

/**
 * Damages the whole blob `digest` (an entry `blobs/sha256/HEX`, not a part) of an uncompressed tar
 * volume: flips a byte in the middle of its data, or with `resize` writes the volume again with
 * the entry that many bytes longer. Fails the test if the volume lacks it.
 */
export async function damageBlobEntry(file: string, digest: string, resize = 0): Promise<void> {
  const name = `blobs/sha256/${hex(digest)}`;
  const b = await readFile(file);
  const entries: Entry[] = [];
  let found = false;
  for await (const e of readTar(Readable.from([b]), { where: file })) {
    if (e.type === 'dir') continue;
    if (e.name !== name) {
      if (resize) entries.push({ name: e.name, data: Buffer.concat(await e.body().toArray()) });
      continue;
    }
    found = true;
    if (!resize) b[e.offset + (e.size >> 1)]! ^= 0xff;
    else entries.push({ name, data: Buffer.concat([...(await e.body().toArray()), Buffer.alloc(resize)]) });
  }
  if (!found) throw new Error(`${file} holds no entry ${name}`);
  if (resize) await writeTar(file, entries);
  else await writeFile(file, b);
}

/** The digests of the whole blobs (entries `blobs/sha256/HEX`, not parts) an uncompressed tar volume holds. */
export async function wholeBlobs(file: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of readTar(Readable.from([await readFile(file)]), { where: file })) {
    const m = /^blobs\/sha256\/([0-9a-f]{64})$/.exec(e.name);
    if (m && e.type === 'file') out.push(`sha256:${m[1]}`);
  }
  return out;
}
