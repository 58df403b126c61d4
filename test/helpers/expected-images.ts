import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TESTDATA } from './fs.js';

export const TAGS = ['layers', 'multi', 'docker', 'plain', 'zstd'] as const;
export type Tag = (typeof TAGS)[number];

export interface LayerInfo {
  mediaType: string;
  digest: string;
  size: number;
  diffId?: string;
}

export interface FlatEntry {
  path: string;
  type: 'dir' | 'file' | 'symlink';
  mode?: string;
  uid?: number;
  gid?: number;
  size?: number;
  sha256?: string;
  target?: string;
  hardlinkOf?: string;
  xattrs?: Record<string, string>;
}

export interface PlatformImage {
  manifest: string;
  config: string;
  layers: LayerInfo[];
  etcArch: string;
}

export interface ImageInfo {
  name: string;
  digest: string;
  mediaType: string;
  size: number;
  platform?: string;
  manifest?: string;
  config?: string;
  layers?: LayerInfo[];
  flattenedPaths?: string[];
  flattened?: FlatEntry[];
  platforms?: Record<string, PlatformImage>;
  attestation?: { manifest: string; referenceDigest: string; layers: LayerInfo[] };
}

/** testdata/expected.json's per-tag records. */
export async function testdataImages(): Promise<Record<Tag, ImageInfo>> {
  const doc = JSON.parse(await readFile(join(TESTDATA, '..', 'expected.json'), 'utf8')) as { images: Record<Tag, ImageInfo> };
  return doc.images;
}

export function sha256(data: Uint8Array | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function shortHex(digest: string): string {
  return digest.slice(digest.indexOf(':') + 1, digest.indexOf(':') + 13);
}

export function blobFile(layout: string, digest: string): string {
  const [alg, hex] = digest.split(':');
  return join(layout, 'blobs', alg!, hex!);
}

/** The digests of every blob file in a layout. */
export async function blobDigests(layout: string): Promise<string[]> {
  const out: string[] = [];
  for (const alg of await readdir(join(layout, 'blobs')).catch(() => [] as string[])) {
    for (const name of await readdir(join(layout, 'blobs', alg))) out.push(`${alg}:${name}`);
  }
  return out.sort();
}

export interface IndexEntry {
  mediaType: string;
  digest: string;
  size: number;
  annotations?: Record<string, string>;
}

export async function indexEntries(layout: string): Promise<IndexEntry[]> {
  const doc = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8')) as { manifests: IndexEntry[] };
  return doc.manifests;
}

export interface ToolResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs an external program; never throws on a non-zero exit. */
export function runTool(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<ToolResult> {
  const child = spawn(cmd, args, { cwd: opts.cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let stderr = '';
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(out), stderr }));
  });
}

/** Like runTool, but a non-zero exit is an error that carries the program's stderr. */
export async function mustRun(cmd: string, args: string[], opts: { cwd?: string } = {}): Promise<ToolResult> {
  const r = await runTool(cmd, args, opts);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.code}:\n${r.stderr}`);
  return r;
}
