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
import type { Inode, Meta, Node } from './tree.js';
import { Background, forEachLimited } from '../util/limit.js';
import { mkdirs } from '../util/mkdirs.js';

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
  const { created, root, setgid } = await prepare(o.dir);
  const rootBuf = Buffer.from(root);
  const at = (rel: string) => (rel === '' ? rootBuf : Buffer.concat([rootBuf, Buffer.from(`/${rel}`, 'latin1')]));
  const isRoot = process.getuid?.() === 0;
  // New files and directories already belong to this process; in a setgid root they take its group.
  const own = { uid: process.getuid?.(), gid: setgid ? undefined : process.getgid?.() };
  // Read once, before anything is written (reading it sets it for an instant).
  const umask = process.umask();
  const noSetuid = o.noSetuid;
  let entries = 0;
  let bytes = 0;
  let withXattrs = 0;
  let skipped = 0;
  let fh: FileHandle | undefined;
  let small: { buf: Buffer; have: number } | undefined;
  const jobs = new Background(FILES_IN_FLIGHT, BYTES_IN_FLIGHT);
  const setMeta = async (p: Buffer, meta: Meta, h?: FileHandle, modeSet = false) => {
    const t = timeOf(meta);
    if (meta.xattrs) withXattrs++;
    const chownNeeded = isRoot && (meta.uid !== own.uid || meta.gid !== own.gid);
    if (h) {
      if (chownNeeded) await h.chown(meta.uid, meta.gid);
      if (!modeSet) await h.chmod(outMode(meta, noSetuid));
      await h.utimes(t, t);
      return;
    }
    if (chownNeeded) await chown(p, meta.uid, meta.gid);
    await chmod(p, outMode(meta, noSetuid));
    await utimes(p, t, t);
  };
  const linkTo = async (inode: Inode) => {
    for (const p of inode.links ?? []) {
      await link(at(inode.path!), at(p));
      entries++;
    }
  };
  const writeSmall = async (inode: Inode, buf: Buffer) => {
    const mode = outMode(inode.meta, noSetuid) & 0o7777;
    // Created with its final mode when the umask keeps it, saving a chmod; never with setuid,
    // setgid or sticky bits before the content is complete.
    const modeSet = (mode & 0o7000) === 0 && (mode & ~umask) === mode;
    const h = await open(at(inode.path!), CREATE_FLAGS, modeSet ? mode : 0o600);
    try {
      let off = 0;
      while (off < buf.length) off += (await h.write(buf, off, buf.length - off)).bytesWritten;
      await setMeta(at(inode.path!), inode.meta, h, modeSet);
    } finally {
      await h.close();
    }
    await linkTo(inode);
  };
  try {
    const dirs = s.plan.meta.filter((i) => i.node.kind === 'dir');
    const late = s.plan.meta.filter((i) => i.node.kind !== 'dir');
    const levels = byDepth(dirs);
    for (const level of levels) {
      await forEachLimited(level, FILES_IN_FLIGHT, async ({ path }) => {
        await mkdir(at(path), { mode: 0o700 });
        entries++;
      });
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
            jobs.check();
            entries++;
            bytes += inode.size;
            if (inode.size <= SMALL_FILE) small = { buf: Buffer.allocUnsafe(inode.size), have: 0 };
            else fh = await open(at(inode.path!), CREATE_FLAGS, 0o600);
          },
          data: async (chunk) => {
            // Small files are written slowly and V8 sees little allocation: free their buffers.
            streamed(chunk.length);
            if (small) {
              if (small.have + chunk.length > small.buf.length) throw new FerryError('INTEGRITY', `${o.dir}: more content than the ${small.buf.length} bytes announced for a file`);
              small.have += chunk.copy(small.buf, small.have);
              return;
            }
            let off = 0;
            while (off < chunk.length) off += (await fh!.write(chunk, off, chunk.length - off)).bytesWritten;
          },
          end: async (inode) => {
            if (small) {
              const { buf, have } = small;
              small = undefined;
              if (have !== buf.length) throw new FerryError('INTEGRITY', `${o.dir}: ${display(inode.path!)} ended after ${have} of its ${buf.length} bytes`);
              await jobs.add(buf.length, () => writeSmall(inode, buf));
              return;
            }
            const h = fh!;
            fh = undefined;
            await jobs.add(0, async () => {
              try {
                await setMeta(at(inode.path!), inode.meta, h);
              } finally {
                await h.close();
              }
              await linkTo(inode);
            });
          },
        },
        o.signal,
      );
    }
    await jobs.finish();
    await forEachLimited(late, FILES_IN_FLIGHT, async ({ path, node }) => {
      o.signal?.throwIfAborted();
      const p = at(path);
      if (node.kind === 'symlink') {
        await symlink(Buffer.from(node.linkname!, 'latin1'), p);
        if (isRoot) await lchown(p, node.meta.uid, node.meta.gid);
        const t = timeOf(node.meta);
        await lutimes(p, t, t);
        entries++;
      } else if (await makeSpecial(p, path, node, { devices: o.devices, isRoot })) {
        await setMeta(p, node.meta);
        entries++;
      } else skipped++;
    });
    // Deepest first: a parent's mode may forbid reaching its children, and setting a child's
    // times would change its parent's.
    for (const level of levels.reverse()) await forEachLimited(level, FILES_IN_FLIGHT, ({ path, node }) => setMeta(at(path), node.meta));
    if (s.tree.rootExplicit) await setMeta(rootBuf, s.tree.root.meta);
  } catch (e) {
    await jobs.settle();
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

/** A file's time for utimes: Node reads a negative number as "now", a Date before 1970 as what it is. */
function timeOf(meta: Meta): number | Date {
  const t = meta.mtimePax !== undefined ? Number(meta.mtimePax) : meta.mtime;
  return t < 0 ? new Date(t * 1000) : t;
}

/**
 * Creating a file takes four or more trips to the thread pool (open, write, utimes, close), each
 * ~0.1 ms on this VM: one file at a time, 22k small files took 20 s of mostly idle waiting. Files
 * up to SMALL_FILE are read whole and written in the background, FILES_IN_FLIGHT at once.
 */
const SMALL_FILE = 1 << 20;
const FILES_IN_FLIGHT = 16;
const BYTES_IN_FLIGHT = 8 << 20;

/** Directories grouped by depth, shallowest first: each group's parents exist once the one before is made. */
function byDepth<T extends { path: string }>(items: T[]): T[][] {
  const levels: T[][] = [];
  for (const item of items) {
    let depth = 0;
    for (let i = item.path.indexOf('/'); i !== -1; i = item.path.indexOf('/', i + 1)) depth++;
    (levels[depth] ??= []).push(item);
  }
  return levels.filter((l) => l !== undefined);
}

/** The target must not exist, or be an empty directory. Returns its real path. */
async function prepare(dir: string): Promise<{ created: boolean; root: string; setgid: boolean }> {
  const st = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') return undefined;
    throw e;
  });
  if (!st) await mkdirs(dir, 0o755);
  const root = await realpath(dir);
  const rootStat = await lstat(root);
  if (st && !rootStat.isDirectory()) throw new FerryError('USAGE', `${dir} exists and is not a directory`);
  if (st && (await readdir(root)).length > 0) {
    throw new FerryError('USAGE', `${dir} is not empty`, { hint: 'export into a new or empty directory, so that nothing already there can redirect what is written' });
  }
  return { created: !st, root, setgid: (rootStat.mode & 0o2000) !== 0 };
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
