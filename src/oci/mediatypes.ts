export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  OciLayer: 'application/vnd.oci.image.layer.v1.tar',
  OciLayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  OciLayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  OciEmpty: 'application/vnd.oci.empty.v1+json',
  OciLayoutHeader: 'application/vnd.oci.layout.header.v1+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayer: 'application/vnd.docker.image.rootfs.diff.tar',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  DockerLayerZstd: 'application/vnd.docker.image.rootfs.diff.tar.zstd',
  DockerForeignLayerGzip: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  DockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar',
  Schema1: 'application/vnd.docker.distribution.manifest.v1+json',
  Schema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
  OciArtifactManifest: 'application/vnd.oci.artifact.manifest.v1+json',
} as const;

const INDEX_TYPES = new Set<string>([MediaType.OciIndex, MediaType.DockerList]);
const MANIFEST_TYPES = new Set<string>([MediaType.OciManifest, MediaType.DockerManifest]);
const SCHEMA1_TYPES = new Set<string>([MediaType.Schema1, MediaType.Schema1Signed]);

export const isIndexType = (t: string | undefined): boolean => t !== undefined && INDEX_TYPES.has(t);
export const isManifestType = (t: string | undefined): boolean => t !== undefined && MANIFEST_TYPES.has(t);
export const isSchema1Type = (t: string | undefined): boolean => t !== undefined && SCHEMA1_TYPES.has(t);
/** Anything the copy engine must parse to find children. */
export const isManifestLike = (t: string | undefined): boolean => isIndexType(t) || isManifestType(t);

/** The Accept header for manifest requests: every type ferry can parse, never schema1. */
export const MANIFEST_ACCEPT = [MediaType.OciIndex, MediaType.OciManifest, MediaType.DockerList, MediaType.DockerManifest].join(', ');

export type LayerCompression = 'none' | 'gzip' | 'zstd' | 'unknown';

/** Compression a layer media type declares; bytes are still sniffed before decoding. */
export function layerCompression(mediaType: string): LayerCompression {
  if (mediaType.endsWith('+gzip') || mediaType.endsWith('.tar.gzip')) return 'gzip';
  if (mediaType.endsWith('+zstd') || mediaType.endsWith('.tar.zstd')) return 'zstd';
  if (mediaType.endsWith('.tar') || mediaType === MediaType.DockerLayer) return 'none';
  return 'unknown';
}

export function isLayerType(mediaType: string): boolean {
  return mediaType.startsWith('application/vnd.oci.image.layer.') || mediaType.startsWith('application/vnd.docker.image.rootfs.');
}

/**
 * A foreign (Windows base) or non-distributable layer: its descriptor names `urls` to download it
 * from, and registries need not hold it. ferry never downloads it (the URLs are outside any
 * registry's origin and trust) and never requires it: copies carry the manifest and leave the
 * blob behind, as docker and skopeo do, and a missing one is not a defect.
 */
export function isForeignLayer(d: { mediaType: string; urls?: string[] }): boolean {
  return (d.urls?.length ?? 0) > 0 && /\.foreign\.|\.nondistributable\./.test(d.mediaType);
}
