#!/usr/bin/env node
// Regenerates testdata/layout/ (an OCI image layout holding five small images)
// and testdata/expected.json. Node built-ins only; output is byte-identical on
// every run with the same Node build (see README.md for the caveat about the
// compressors bundled with different Node versions).
//
//   npm run testdata      (or: node testdata/generate.mjs)

import { createHash } from "node:crypto";
import { gzipSync, zstdCompressSync, constants as zc } from "node:zlib";
import { mkdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const LAYOUT = join(HERE, "layout");
const EXPECTED = join(HERE, "expected.json");

const REPO = "example.com/ferry/testdata";
const MTIME = 1700000000; // 2023-11-14T22:13:20Z
const CREATED = new Date(MTIME * 1000).toISOString().replace(".000Z", "Z");
const ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"];

const MT = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayer: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  inToto: "application/vnd.in-toto+json",
};

// ---------------------------------------------------------------- helpers

const enc = (s) => Buffer.from(s, "utf8");
const sha256 = (buf) => createHash("sha256").update(buf).digest("hex");
const digestOf = (buf) => `sha256:${sha256(buf)}`;
const json = (v) => enc(JSON.stringify(v));

/** Blob store: content-addressed, written at the end. */
const blobs = new Map();
function putBlob(buf) {
  const hex = sha256(buf);
  blobs.set(hex, buf);
  return { digest: `sha256:${hex}`, size: buf.length };
}

function gzip(buf) {
  const out = gzipSync(buf, { level: 6 });
  // RFC 1952 header: bytes 4..7 MTIME (node writes 0), byte 9 OS. zlib sets OS
  // from the build platform (3 = Unix, 10 = Windows); pin it to Unix so the
  // bytes do not depend on where the generator runs.
  out[9] = 3;
  return out;
}

function zstd(buf) {
  return zstdCompressSync(buf, {
    params: {
      [zc.ZSTD_c_compressionLevel]: 3,
      [zc.ZSTD_c_checksumFlag]: 1,
      [zc.ZSTD_c_contentSizeFlag]: 1,
    },
  });
}

// ---------------------------------------------------------------- tar writer

const BLOCK = 512;

/** Writes `value` as a NUL-terminated, zero-padded octal number filling `width` bytes. */
function octal(hdr, off, width, value) {
  const s = value.toString(8).padStart(width - 1, "0");
  if (s.length > width - 1) throw new Error(`tar: ${value} does not fit in ${width} octal bytes`);
  hdr.write(s, off, "ascii");
  hdr[off + width - 1] = 0;
}

/** One PAX record: "<len> <key>=<value>\n", where len counts the whole record. */
function paxRecord(key, value) {
  const body = Buffer.concat([enc(` ${key}=`), Buffer.isBuffer(value) ? value : enc(value), enc("\n")]);
  let len = body.length + 1;
  while (String(len).length + body.length !== len) len = String(len).length + body.length;
  return Buffer.concat([enc(String(len)), body]);
}

const TYPE = { file: "0", hardlink: "1", symlink: "2", dir: "5", pax: "x" };

function ustarHeader({ name, mode, uid = 0, gid = 0, size = 0, type, linkname = "" }) {
  const hdr = Buffer.alloc(BLOCK);
  const nameBytes = enc(name);
  const linkBytes = enc(linkname);
  // Anything longer is carried by a PAX record; the ustar field keeps a truncated copy.
  nameBytes.copy(hdr, 0, 0, Math.min(100, nameBytes.length));
  octal(hdr, 100, 8, mode);
  octal(hdr, 108, 8, uid);
  octal(hdr, 116, 8, gid);
  octal(hdr, 124, 12, size);
  octal(hdr, 136, 12, MTIME);
  hdr.fill(0x20, 148, 156); // checksum placeholder: eight spaces
  hdr.write(TYPE[type], 156, "ascii");
  linkBytes.copy(hdr, 157, 0, Math.min(100, linkBytes.length));
  hdr.write("ustar\0", 257, "ascii");
  hdr.write("00", 263, "ascii");
  // uname/gname (265, 297) left empty: numeric ids only.
  octal(hdr, 329, 8, 0); // devmajor
  octal(hdr, 337, 8, 0); // devminor
  let sum = 0;
  for (const b of hdr) sum += b;
  hdr.write(sum.toString(8).padStart(6, "0"), 148, "ascii");
  hdr[154] = 0;
  hdr[155] = 0x20;
  return hdr;
}

function padded(buf) {
  const rem = buf.length % BLOCK;
  return rem === 0 ? [buf] : [buf, Buffer.alloc(BLOCK - rem)];
}

/**
 * entries: { name, type: file|dir|symlink|hardlink, mode, uid?, gid?, content?, linkname?, xattrs? }
 * Directory names carry a trailing "/".
 */
function tar(entries) {
  const parts = [];
  for (const e of entries) {
    const content = e.type === "file" ? (Buffer.isBuffer(e.content) ? e.content : enc(e.content ?? "")) : Buffer.alloc(0);
    const records = [];
    if (enc(e.name).length > 100) records.push(paxRecord("path", e.name));
    if (e.linkname && enc(e.linkname).length > 100) records.push(paxRecord("linkpath", e.linkname));
    for (const [k, v] of Object.entries(e.xattrs ?? {})) records.push(paxRecord(`SCHILY.xattr.${k}`, v));
    if (records.length > 0) {
      const data = Buffer.concat(records);
      const trimmed = e.name.replace(/\/$/, "");
      const slash = trimmed.lastIndexOf("/");
      const paxName = (slash < 0 ? "" : trimmed.slice(0, slash + 1)) + "PaxHeaders.0/" + trimmed.slice(slash + 1);
      parts.push(ustarHeader({ name: paxName.slice(0, 100), mode: 0o644, size: data.length, type: "pax" }));
      parts.push(...padded(data));
    }
    parts.push(ustarHeader({ ...e, size: content.length }));
    if (content.length > 0) parts.push(...padded(content));
  }
  parts.push(Buffer.alloc(BLOCK * 2));
  return Buffer.concat(parts);
}

const dir = (name, mode = 0o755) => ({ name, type: "dir", mode });
const file = (name, content, mode = 0o644, extra = {}) => ({ name, type: "file", mode, content, ...extra });
const symlink = (name, linkname) => ({ name, type: "symlink", mode: 0o777, linkname });
const hardlink = (name, linkname, mode = 0o644) => ({ name, type: "hardlink", mode, linkname });

// ---------------------------------------------------------------- image builders

/**
 * layers: [{ tar, compression: "gzip"|"zstd"|"none", mediaType, createdBy }]
 * Returns { manifest descriptor (no platform), config, manifestBytes }.
 */
function buildImage({ platform, layers, docker = false, manifestAnnotations }) {
  const layerDescs = [];
  const diffIds = [];
  for (const l of layers) {
    diffIds.push(digestOf(l.tar));
    const blob = l.compression === "gzip" ? gzip(l.tar) : l.compression === "zstd" ? zstd(l.tar) : l.tar;
    layerDescs.push({ mediaType: l.mediaType, ...putBlob(blob) });
  }
  const config = {
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.variant ? { variant: platform.variant } : {}),
    created: CREATED,
    config: { Env: ENV, Cmd: ["/bin/sh"] },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: layers.map((l) => ({ created: CREATED, created_by: l.createdBy })),
  };
  const configDesc = { mediaType: docker ? MT.dockerConfig : MT.ociConfig, ...putBlob(json(config)) };
  const mediaType = docker ? MT.dockerManifest : MT.ociManifest;
  const manifest = {
    schemaVersion: 2,
    mediaType,
    config: configDesc,
    layers: layerDescs,
    ...(manifestAnnotations ? { annotations: manifestAnnotations } : {}),
  };
  const desc = { mediaType, ...putBlob(json(manifest)) };
  return { desc, manifest, config };
}

const gzLayer = (entries, createdBy, mediaType = MT.ociLayerGzip) => ({
  tar: tar(entries),
  compression: "gzip",
  mediaType,
  createdBy,
});

const AMD64 = { architecture: "amd64", os: "linux" };

// ---------------------------------------------------------------- 1. layers

// vfs_cap_data revision 2, effective flag set, permitted = CAP_NET_BIND_SERVICE (bit 10).
const CAPABILITY = Buffer.from([
  0x01, 0x00, 0x00, 0x02, // magic_etc = VFS_CAP_REVISION_2 | VFS_CAP_FLAGS_EFFECTIVE
  0x00, 0x04, 0x00, 0x00, // data[0].permitted
  0x00, 0x00, 0x00, 0x00, // data[0].inheritable
  0x00, 0x00, 0x00, 0x00, // data[1].permitted
  0x00, 0x00, 0x00, 0x00, // data[1].inheritable
]);
const LONG_NAME = "usr/share/" + "long-path-".repeat(13) + "012345.txt"; // 150 bytes
if (LONG_NAME.length !== 150) throw new Error(`LONG_NAME is ${LONG_NAME.length} bytes`);

const TOOL_V1 = "#!/bin/sh\necho ferry tool v1\n";
const TOOL_V2 = "#!/bin/sh\necho ferry tool v2 (overwritten in layer 3)\n";
const PASSWD = "root:x:0:0:root:/root:/bin/sh\nferry:x:1000:1000:ferry:/home/ferry:/bin/sh\n";

const L1 = [
  dir("etc/"),
  file("etc/hostname", "ferry\n"),
  file("etc/passwd", PASSWD),
  dir("bin/"),
  file("bin/tool", TOOL_V1, 0o755),
  hardlink("bin/tool-link", "bin/tool", 0o755),
  symlink("bin/sh", "tool"),
  file("bin/suid", "#!/bin/sh\necho suid\n", 0o4755),
  symlink("lib", "/usr/lib"),
  dir("usr/"),
  dir("usr/share/"),
  file("usr/share/original.txt", "original\n"),
  file("usr/share/cap", "has a security.capability xattr\n", 0o755, { xattrs: { "security.capability": CAPABILITY } }),
  file(LONG_NAME, "long path\n"),
  dir("opt/"),
  dir("opt/data/"),
  file("opt/data/a.txt", "a\n"),
  file("opt/data/b.txt", "b (owned by 1000:1000)\n", 0o644, { uid: 1000, gid: 1000 }),
  dir("var/"),
  dir("var/lib/"),
  file("var/lib/keep.txt", "keep\n"),
];
const L2 = [
  dir("etc/"),
  file("etc/.wh.hostname", ""),
  dir("opt/"),
  dir("opt/data/"),
  file("opt/data/.wh..wh..opq", ""),
  file("opt/data/c.txt", "c\n"),
  dir("usr/"),
  dir("usr/share/"),
  file("usr/share/linked.txt", "linked\n"),
  hardlink("usr/share/linked2.txt", "usr/share/linked.txt"),
];
const L3 = [
  dir("var/"),
  file("var/.wh.lib", ""),
  file("var/lib", "var/lib is a regular file now\n"),
  dir("etc/"),
  dir("etc/hostname/"),
  file("etc/hostname/inner", "inner\n"),
  dir("bin/"),
  file("bin/tool", TOOL_V2, 0o755),
];

const layersImg = buildImage({
  platform: AMD64,
  layers: [
    gzLayer(L1, "ferry testdata: layer 1 (base tree: hardlink, symlinks, suid, xattr, PAX path, uid 1000)"),
    gzLayer(L2, "ferry testdata: layer 2 (whiteout etc/hostname, opaque opt/data, new hardlink pair)"),
    gzLayer(L3, "ferry testdata: layer 3 (dir var/lib -> file, etc/hostname -> dir, overwrite bin/tool)"),
  ],
});

// Expected root filesystem after applying the three layers in order.
const fileEntry = (path, content, mode, extra = {}) => {
  const b = enc(content);
  return { path, type: "file", mode: `0${mode.toString(8)}`, uid: 0, gid: 0, size: b.length, sha256: sha256(b), ...extra };
};
const dirEntry = (path) => ({ path, type: "dir", mode: "0755", uid: 0, gid: 0 });
const linkEntry = (path, target) => ({ path, type: "symlink", target });
const flattened = [
  dirEntry("bin"),
  linkEntry("bin/sh", "tool"),
  fileEntry("bin/suid", "#!/bin/sh\necho suid\n", 0o4755),
  fileEntry("bin/tool", TOOL_V2, 0o755),
  fileEntry("bin/tool-link", TOOL_V1, 0o755, {
    note: "hardlink to the layer-1 bin/tool; layer 3 replaced bin/tool, so this keeps the OLD content",
  }),
  dirEntry("etc"),
  dirEntry("etc/hostname"),
  fileEntry("etc/hostname/inner", "inner\n", 0o644),
  fileEntry("etc/passwd", PASSWD, 0o644),
  linkEntry("lib", "/usr/lib"),
  dirEntry("opt"),
  dirEntry("opt/data"),
  fileEntry("opt/data/c.txt", "c\n", 0o644),
  dirEntry("usr"),
  dirEntry("usr/share"),
  fileEntry("usr/share/cap", "has a security.capability xattr\n", 0o755, {
    xattrs: { "security.capability": CAPABILITY.toString("base64") },
  }),
  fileEntry("usr/share/linked.txt", "linked\n", 0o644),
  fileEntry("usr/share/linked2.txt", "linked\n", 0o644, { hardlinkOf: "usr/share/linked.txt" }),
  fileEntry(LONG_NAME, "long path\n", 0o644),
  fileEntry("usr/share/original.txt", "original\n", 0o644),
  dirEntry("var"),
  fileEntry("var/lib", "var/lib is a regular file now\n", 0o644),
].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));

// ---------------------------------------------------------------- 2. multi

function archImage(platform) {
  const name = platform.variant ? `${platform.architecture}/${platform.variant}` : platform.architecture;
  return buildImage({
    platform,
    layers: [gzLayer([dir("etc/"), file("etc/arch", `${platform.architecture}\n`)], `ferry testdata: etc/arch for ${name}`)],
  });
}
const ARM64 = { architecture: "arm64", os: "linux", variant: "v8" };
const multiAmd64 = archImage(AMD64);
const multiArm64 = archImage(ARM64);

const statement = {
  _type: "https://in-toto.io/Statement/v0.1",
  predicateType: "https://slsa.dev/provenance/v0.2",
  subject: [
    {
      name: `pkg:docker/${REPO}@multi?platform=linux%2Famd64`,
      digest: { sha256: multiAmd64.desc.digest.slice("sha256:".length) },
    },
  ],
  predicate: { builder: { id: "ferry-testdata" }, buildType: "https://example.com/ferry/testdata" },
};
const attConfigDesc = {
  mediaType: MT.ociConfig,
  ...putBlob(json({ architecture: "unknown", os: "unknown", rootfs: { type: "layers", diff_ids: [] } })),
};
const attManifest = {
  schemaVersion: 2,
  mediaType: MT.ociManifest,
  config: attConfigDesc,
  layers: [
    {
      mediaType: MT.inToto,
      ...putBlob(json(statement)),
      annotations: { "in-toto.io/predicate-type": statement.predicateType },
    },
  ],
};
const attDesc = { mediaType: MT.ociManifest, ...putBlob(json(attManifest)) };

const multiIndex = {
  schemaVersion: 2,
  mediaType: MT.ociIndex,
  manifests: [
    { ...multiAmd64.desc, platform: AMD64 },
    { ...multiArm64.desc, platform: ARM64 },
    {
      ...attDesc,
      annotations: {
        "vnd.docker.reference.digest": multiAmd64.desc.digest,
        "vnd.docker.reference.type": "attestation-manifest",
      },
      platform: { architecture: "unknown", os: "unknown" },
    },
  ],
};
const multiDesc = { mediaType: MT.ociIndex, ...putBlob(json(multiIndex)) };

// ---------------------------------------------------------------- 3. docker

const dockerImg = buildImage({
  platform: AMD64,
  docker: true,
  layers: [
    gzLayer(
      [dir("etc/"), file("etc/os-release", 'NAME="ferry"\nID=ferry\n'), dir("bin/"), file("bin/hello", "#!/bin/sh\necho hello\n", 0o755)],
      "ferry testdata: docker layer 1",
      MT.dockerLayerGzip,
    ),
    gzLayer([dir("app/"), file("app/main.txt", "docker schema2 layer 2\n")], "ferry testdata: docker layer 2", MT.dockerLayerGzip),
  ],
});

// ---------------------------------------------------------------- 4. plain

const plainImg = buildImage({
  platform: AMD64,
  layers: [
    {
      tar: tar([dir("etc/"), file("etc/plain.txt", "uncompressed layer: digest == diff_id\n")]),
      compression: "none",
      mediaType: MT.ociLayer,
      createdBy: "ferry testdata: uncompressed layer",
    },
  ],
});

// ---------------------------------------------------------------- 5. zstd

const zstdImg = buildImage({
  platform: AMD64,
  layers: [
    {
      tar: tar([dir("etc/"), file("etc/zstd.txt", "zstd-compressed layer\n")]),
      compression: "zstd",
      mediaType: MT.ociLayerZstd,
      createdBy: "ferry testdata: zstd layer",
    },
  ],
});

// ---------------------------------------------------------------- layout + expected.json

const roots = [
  ["layers", layersImg.desc],
  ["multi", multiDesc],
  ["docker", dockerImg.desc],
  ["plain", plainImg.desc],
  ["zstd", zstdImg.desc],
];

const index = {
  schemaVersion: 2,
  mediaType: MT.ociIndex,
  manifests: roots.map(([tag, desc]) => ({
    ...desc,
    annotations: {
      "io.containerd.image.name": `${REPO}:${tag}`,
      "org.opencontainers.image.ref.name": tag,
    },
  })),
};

const layerSummary = (img) =>
  img.manifest.layers.map((l, i) => ({ mediaType: l.mediaType, digest: l.digest, size: l.size, diffId: img.config.rootfs.diff_ids[i] }));
const imageSummary = (img) => ({
  manifest: img.desc.digest,
  config: img.manifest.config.digest,
  layers: layerSummary(img),
});

const expected = {
  repository: REPO,
  images: {
    layers: {
      name: `${REPO}:layers`,
      digest: layersImg.desc.digest,
      mediaType: layersImg.desc.mediaType,
      size: layersImg.desc.size,
      platform: "linux/amd64",
      ...imageSummary(layersImg),
      flattenedPaths: flattened.map((e) => e.path),
      flattened,
    },
    multi: {
      name: `${REPO}:multi`,
      digest: multiDesc.digest,
      mediaType: multiDesc.mediaType,
      size: multiDesc.size,
      platforms: {
        "linux/amd64": { ...imageSummary(multiAmd64), etcArch: "amd64\n" },
        "linux/arm64/v8": { ...imageSummary(multiArm64), etcArch: "arm64\n" },
      },
      attestation: {
        manifest: attDesc.digest,
        referenceDigest: multiAmd64.desc.digest,
        layers: attManifest.layers.map(({ mediaType, digest, size }) => ({ mediaType, digest, size })),
      },
    },
    docker: {
      name: `${REPO}:docker`,
      digest: dockerImg.desc.digest,
      mediaType: dockerImg.desc.mediaType,
      size: dockerImg.desc.size,
      platform: "linux/amd64",
      ...imageSummary(dockerImg),
    },
    plain: {
      name: `${REPO}:plain`,
      digest: plainImg.desc.digest,
      mediaType: plainImg.desc.mediaType,
      size: plainImg.desc.size,
      platform: "linux/amd64",
      ...imageSummary(plainImg),
    },
    zstd: {
      name: `${REPO}:zstd`,
      digest: zstdImg.desc.digest,
      mediaType: zstdImg.desc.mediaType,
      size: zstdImg.desc.size,
      platform: "linux/amd64",
      ...imageSummary(zstdImg),
    },
  },
};

await rm(LAYOUT, { recursive: true, force: true });
await mkdir(join(LAYOUT, "blobs", "sha256"), { recursive: true });
await writeFile(join(LAYOUT, "oci-layout"), json({ imageLayoutVersion: "1.0.0" }));
await writeFile(join(LAYOUT, "index.json"), json(index));
for (const hex of [...blobs.keys()].sort()) {
  await writeFile(join(LAYOUT, "blobs", "sha256", hex), blobs.get(hex));
}
await writeFile(EXPECTED, JSON.stringify(expected, null, 2) + "\n");

let total = 0;
for (const b of blobs.values()) total += b.length;
console.log(`testdata/layout: ${blobs.size} blobs, ${total} bytes of blob data`);
for (const [tag, desc] of roots) console.log(`  ${REPO}:${tag}  ${desc.digest}  ${desc.mediaType}`);
