import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { link, lchown, lstat, lutimes, mkdir, open, readdir, realpath, rm, symlink, chmod, chown, utimes, type FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { streamed } from '../util/memory.js';
import type { ExportDirOptions } from './export.js';
import { outMode, streamCarriers, type Scanned } from './flatten.js';
import { display } from './tar-format.js';
import type { Meta, Node } from './tree.js';

const run = promisify(execFile);
const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/**
 * Writes a planned tree under `dir` without ever leaving it. The directory must be new or empty;
 * every path comes from the tree model (cleaned, no `..`, no symlink among its parents, because
 * symlinks met while applying layers were resolved inside the root). Directories are created
 * with mkdir (which fails if anything is there), files with O_CREAT|O_EXCL|O_NOFOLLOW, and
 * symlinks only at the very end, so no write can pass through one. Device nodes are skipped
 * with a warning unless running as root with `devices`; FIFOs likewise unless `devices`.
 */
export async function extractPlan(s: Scanned, o: ExportDirOptions): Promise<{ entries: number; bytes: number }> {
  const { created, root } = await prepare(o.dir);
  const rootBuf = Buffer.from(root);
  const at = (rel: string) => (rel === '' ? rootBuf : Buffer.concat([rootBuf, Buffer.from(`/${rel}`, 'latin1')]));
  const isRoot = process.getuid?.() === 0;
  const noSetuid = o.noSetuid;
  let entries = 0;
  let bytes = 0;
  let withXattrs = 0;
  let skipped = 0;
  let fh: FileHandle | undefined;
  const setMeta = async (p: Buffer, meta: Meta, h?: FileHandle) => {
    const t = meta.mtimePax !== undefined ? Number(meta.mtimePax) : meta.mtime;
    if (meta.xattrs) withXattrs++;
    if (h) {
      if (isRoot) await h.chown(meta.uid, meta.gid);
      await h.chmod(outMode(meta, noSetuid));
      await h.utimes(t, t);
      return;
    }
    if (isRoot) await chown(p, meta.uid, meta.gid);
    await chmod(p, outMode(meta, noSetuid));
    await utimes(p, t, t);
  };
  try {
    const dirs: Array<{ path: string; node: Node }> = [];
    const late: Array<{ path: string; node: Node }> = [];
    for (const item of s.plan.meta) {
      if (item.node.kind === 'dir') {
        await mkdir(at(item.path), { mode: 0o700 });
        dirs.push(item);
        entries++;
      } else late.push(item);
    }
    for (const layer of s.image.layers) {
      const carriers = s.plan.carriers[layer.index]!;
      if (carriers.size === 0) continue;
      await streamCarriers(
        s.source,
        layer,
        carriers,
        {
          start: async (inode) => {
            fh = await open(at(inode.path!), CREATE_FLAGS, 0o600);
            entries++;
            bytes += inode.size;
          },
          data: async (chunk) => {
            // Small files are written slowly and V8 sees little allocation: free their buffers.
            streamed(chunk.length);
            let off = 0;
            while (off < chunk.length) off += (await fh!.write(chunk, off, chunk.length - off)).bytesWritten;
          },
          end: async (inode) => {
            const h = fh!;
            fh = undefined;
            await setMeta(at(inode.path!), inode.meta, h);
            await h.close();
            for (const p of inode.links ?? []) {
              await link(at(inode.path!), at(p));
              entries++;
            }
          },
        },
        o.signal,
      );
    }
    for (const { path, node } of late) {
      o.signal?.throwIfAborted();
      const p = at(path);
      if (node.kind === 'symlink') {
        await symlink(Buffer.from(node.linkname!, 'latin1'), p);
        if (isRoot) await lchown(p, node.meta.uid, node.meta.gid);
        const t = node.meta.mtimePax !== undefined ? Number(node.meta.mtimePax) : node.meta.mtime;
        await lutimes(p, t, t);
        entries++;
      } else if (await makeSpecial(p, path, node, { devices: o.devices, isRoot })) {
        await setMeta(p, node.meta);
        entries++;
      } else skipped++;
    }
    for (const { path, node } of dirs.reverse()) await setMeta(at(path), node.meta);
    if (s.tree.rootExplicit) await setMeta(rootBuf, s.tree.root.meta);
  } catch (e) {
    await fh?.close().catch(() => {});
    if (created) await rm(root, { recursive: true, force: true });
    else for (const name of await readdir(root).catch(() => [] as string[])) await rm(`${root}/${name}`, { recursive: true, force: true });
    throw e;
  }
  if (skipped) {
    warn(`skipped ${skipped} device node(s)/FIFO(s) under ${o.dir} (${o.devices ? 'device nodes need root' : 'pass --devices to create them; device nodes need root'}); the tar output (-o) keeps them`);
  }
  if (withXattrs) warn(`${withXattrs} entr${withXattrs === 1 ? 'y has' : 'ies have'} extended attributes that were not restored under ${o.dir} (Node.js has no xattr API); the tar output (-o) keeps them`);
  return { entries, bytes };
}

/** The target must not exist, or be an empty directory. Returns its real path. */
async function prepare(dir: string): Promise<{ created: boolean; root: string }> {
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) {
    await mkdir(dir, { recursive: true, mode: 0o755 });
    return { created: true, root: await realpath(dir) };
  }
  const root = await realpath(dir);
  if (!(await lstat(root)).isDirectory()) throw new FerryError('USAGE', `${dir} exists and is not a directory`);
  if ((await readdir(root)).length > 0) {
    throw new FerryError('USAGE', `${dir} is not empty`, { hint: 'export into a new or empty directory, so that nothing already there can redirect what is written' });
  }
  return { created: false, root };
}

/** Device nodes (root and --devices) and FIFOs (--devices) through mknod(1): Node has no mknod. */
async function makeSpecial(p: Buffer, path: string, node: Node, o: { devices?: boolean; isRoot: boolean }): Promise<boolean> {
  const isDevice = node.kind === 'char' || node.kind === 'block';
  if (!o.devices || (isDevice && !o.isRoot)) return false;
  const text = p.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(p)) {
    warn(`cannot create ${display(path)}: its name is not valid UTF-8`);
    return false;
  }
  const args = isDevice ? [text, node.kind === 'char' ? 'c' : 'b', String(node.devmajor ?? 0), String(node.devminor ?? 0)] : [text, 'p'];
  try {
    await run('mknod', ['-m', '600', ...args]);
  } catch (e) {
    throw new FerryError('IO', `mknod ${display(path)} failed: ${(e as Error).message.trim()}`, { cause: e });
  }
  return true;
}
