import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir, readFile, readlink } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { readTar } from '../../src/archive/tar.js';
import { decompress } from '../../src/blob/compression.js';
import { parseTarStream, type TarEntry } from '../../src/fs/tar-reader.js';

/** One member of an archive, with its content's SHA-256 (hex) for files. */
export interface Listed {
  name: string;
  type: TarEntry['type'];
  mode: number;
  uid: number;
  gid: number;
  size: number;
  linkname: string;
  sha256?: string;
  xattrs?: Record<string, string>;
  devmajor: number;
  devminor: number;
}

/** Reads a (plain, gzip or zstd) tar file with ferry's reader; content is hashed, not kept. */
export async function listTar(path: string): Promise<Listed[]> {
  const out: Listed[] = [];
  let h = createHash('sha256');
  const { stream } = await decompress(createReadStream(path));
  await parseTarStream(stream, {
    entry: (e) => {
      h = createHash('sha256');
      const x: Listed = { name: e.name, type: e.type, mode: e.mode, uid: e.uid, gid: e.gid, size: e.size, linkname: e.linkname, devmajor: e.devmajor, devminor: e.devminor };
      if (e.xattrs) x.xattrs = Object.fromEntries(e.xattrs.map((a) => [a.name, a.value.toString('base64')]));
      out.push(x);
    },
    data: (c) => void h.update(c),
    entryEnd: (e) => {
      if (e.type === 'file') out[out.length - 1]!.sha256 = h.digest('hex');
    },
  });
  return out;
}

/** The comparable shape of one filesystem entry (what umoci, tar and ferry must agree on). */
export interface TreeEntry {
  path: string;
  type: 'dir' | 'file' | 'symlink' | 'char' | 'block' | 'fifo';
  mode: string;
  uid: number;
  gid: number;
  target?: string;
  sha256?: string;
  /** For files with several names: every name of the inode, sorted. */
  links?: string[];
}

/** A directory tree as TreeEntry records, sorted by path; symlinks are never followed. */
export async function scanTree(root: string): Promise<TreeEntry[]> {
  const out: TreeEntry[] = [];
  const inodes = new Map<string, string[]>();
  for (const e of await readdir(root, { recursive: true, withFileTypes: true })) {
    const full = join(e.parentPath, e.name);
    const path = relative(root, full);
    const st = await lstat(full);
    const t: TreeEntry = {
      path,
      type: st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isCharacterDevice() ? 'char' : st.isBlockDevice() ? 'block' : 'fifo',
      mode: (st.mode & 0o7777).toString(8).padStart(4, '0'),
      uid: st.uid,
      gid: st.gid,
    };
    if (t.type === 'symlink') {
      t.target = await readlink(full);
      delete (t as Partial<TreeEntry>).mode;
    }
    if (t.type === 'file') {
      t.sha256 = createHash('sha256').update(await readFile(full)).digest('hex');
      if (st.nlink > 1) {
        const key = `${st.dev}:${st.ino}`;
        inodes.set(key, [...(inodes.get(key) ?? []), path]);
        (t as TreeEntry & { inode?: string }).inode = key;
      }
    }
    out.push(t);
  }
  for (const t of out as Array<TreeEntry & { inode?: string }>) {
    if (t.inode) {
      t.links = inodes.get(t.inode)!.sort();
      delete t.inode;
    }
  }
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** The same records from a tar listing: hardlinks take their target's content and link group. */
export function treeFromTar(entries: Listed[]): TreeEntry[] {
  const byName = new Map<string, TreeEntry>();
  const groups = new Map<string, string[]>();
  const clean = (n: string) => Buffer.from(n.replace(/^\.\//, '').replace(/\/$/, ''), 'latin1').toString('utf8');
  for (const e of entries) {
    const path = clean(e.name);
    if (path === '' || path === '.') continue;
    const t: TreeEntry = { path, type: e.type === 'hardlink' ? 'file' : e.type, mode: (e.mode & 0o7777).toString(8).padStart(4, '0'), uid: e.uid, gid: e.gid };
    if (e.type === 'symlink') {
      t.target = Buffer.from(e.linkname, 'latin1').toString('utf8');
      delete (t as Partial<TreeEntry>).mode;
    }
    if (e.type === 'file') t.sha256 = e.sha256;
    if (e.type === 'hardlink') {
      const target = byName.get(clean(e.linkname))!;
      t.sha256 = target.sha256;
      t.mode = target.mode;
      t.uid = target.uid;
      t.gid = target.gid;
      const g = groups.get(target.path) ?? [target.path];
      g.push(path);
      groups.set(target.path, g);
    }
    byName.set(path, t);
  }
  for (const names of groups.values()) for (const n of names) byName.get(n)!.links = [...names].sort();
  return [...byName.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

/** One member's bytes from a plain tar file, read with ferry's archive reader. */
export async function tarFile(file: string, name: string): Promise<Buffer> {
  for await (const e of readTar(Readable.from([await readFile(file)]), { where: file })) {
    if (e.name === name) {
      const parts: Buffer[] = [];
      for await (const c of e.body()) parts.push(c as Buffer);
      return Buffer.concat(parts);
    }
  }
  throw new Error(`${name} not in ${file}`);
}
