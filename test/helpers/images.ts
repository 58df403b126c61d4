import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import type { Descriptor } from '../../src/oci/manifest.js';
import type { Digest } from '../../src/oci/digest.js';

const sha = (b: Buffer | string) => `sha256:${createHash('sha256').update(b).digest('hex')}` as Digest;

async function putBlob(dir: string, body: Buffer | string): Promise<{ digest: Digest; size: number }> {
  const digest = sha(body);
  await writeFile(join(dir, 'blobs', 'sha256', digest.slice(7)), body);
  return { digest, size: Buffer.byteLength(body) };
}

/** Streams `size` pseudo-random bytes into a blob without holding them in memory. */
async function putRandomBlob(dir: string, size: number): Promise<{ digest: Digest; size: number }> {
  const tmp = join(dir, 'blobs', 'sha256', 'incoming');
  const out = createWriteStream(tmp);
  const h = createHash('sha256');
  const block = randomBytes(1 << 20);
  for (let left = size, i = 0; left > 0; i++) {
    block.writeUInt32LE(i, 0);
    const piece = block.subarray(0, Math.min(left, block.length));
    h.update(piece);
    if (!out.write(piece)) await once(out, 'drain');
    left -= piece.length;
  }
  out.end();
  await once(out, 'finish');
  const digest = `sha256:${h.digest('hex')}` as Digest;
  const { rename } = await import('node:fs/promises');
  await rename(tmp, join(dir, 'blobs', 'sha256', digest.slice(7)));
  return { digest, size };
}

export interface MadeImage {
  manifest: Descriptor;
  layers: Descriptor[];
  config: Descriptor;
}

/**
 * Writes a minimal single-manifest OCI layout with uncompressed layers (the content need not be
 * a tar for the copy engine; diff_id = layer digest keeps verify consistent).
 */
export async function makeLayout(dir: string, images: Array<{ tag: string; layers: Array<Buffer | number> }>): Promise<MadeImage[]> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const made: MadeImage[] = [];
  const entries: Descriptor[] = [];
  for (const img of images) {
    const layers: Descriptor[] = [];
    for (const l of img.layers) {
      const b = typeof l === 'number' ? await putRandomBlob(dir, l) : await putBlob(dir, l);
      layers.push({ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...b });
    }
    const cfg = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => l.digest) } });
    const config: Descriptor = { mediaType: 'application/vnd.oci.image.config.v1+json', ...(await putBlob(dir, cfg)) };
    const m = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config, layers });
    const manifest: Descriptor = { mediaType: 'application/vnd.oci.image.manifest.v1+json', ...(await putBlob(dir, m)) };
    entries.push({ ...manifest, annotations: { 'org.opencontainers.image.ref.name': img.tag } });
    made.push({ manifest, layers, config });
  }
  await writeFile(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: entries }));
  return made;
}

/** Adds a chain of `depth` nested indexes above `leaf`, tagged `tag`. */
export async function nestIndexes(dir: string, leaf: Descriptor, depth: number, tag: string): Promise<Descriptor> {
  let child = leaf;
  for (let i = 0; i < depth; i++) {
    const body = JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [child] });
    child = { mediaType: 'application/vnd.oci.image.index.v1+json', ...(await putBlob(dir, body)) };
  }
  const index = { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [{ ...child, annotations: { 'org.opencontainers.image.ref.name': tag } }] };
  await writeFile(join(dir, 'index.json'), JSON.stringify(index));
  return child;
}
