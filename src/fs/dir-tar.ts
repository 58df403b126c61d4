import { constants, type BigIntStats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { display } from './tar-format.js';
import { forEachLimited } from '../util/limit.js';
import { contentPadding, encodeEntry, END_OF_ARCHIVE, type OutEntry } from './tar-writer.js';

export interface DirTarOptions {
  /** Clamp every mtime to at most this (seconds since the epoch), for reproducible output. */
  sourceDateEpoch?: number;
  signal?: AbortSignal;
}

/** Linux dev_t -> major/minor (glibc's gnu_dev_major/minor). */
function devParts(rdev: bigint): { major: number; minor: number } {
  const major = Number(((rdev >> 8n) & 0xfffn) | ((rdev >> 32n) & ~0xfffn));
  const minor = Number((rdev & 0xffn) | ((rdev >> 12n) & ~0xffn));
  return { major, minor };
}

/**
 * Tars a directory deterministically: entries sorted by name bytes, parents first, names relative
 * to `dir` without a leading "./" (the directory itself is not an entry), uid/gid and modes kept,
 * user and group names left empty, mtimes in whole seconds (clamped to `sourceDateEpoch`).
 * Symlinks are stored, never followed; files with several links become tar hardlinks. Sockets
 * are skipped with a warning. Extended attributes cannot be read from Node and are not stored.
 */
export function tarDirectory(dir: string, o: DirTarOptions = {}): Readable {
  return Readable.from(walk(dir, o), { objectMode: false, highWaterMark: 1 << 20 });
}

async function* walk(dir: string, o: DirTarOptions): AsyncGenerator<Buffer> {
  const top = await lstat(dir).catch((e: NodeJS.ErrnoException) => {
    if (e.code === 'ENOENT') throw new FerryError('NOT_FOUND', `${dir}: no such directory`);
    throw e;
  });
  if (!top.isDirectory()) throw new FerryError('USAGE', `${dir} is not a directory`);
  const root = Buffer.from(dir);
  const links = new Map<string, string>();
  const clamp = (s: number) => (o.sourceDateEpoch !== undefined ? Math.min(s, o.sourceDateEpoch) : s);
  const pathOf = (rel: string) => (rel === '' ? root : Buffer.concat([root, Buffer.from(`/${rel}`, 'latin1')]));
  // Depth-first with an explicit stack, pushed in reverse order. A directory's entries are
  // lstat'ed together, and the small files at the top of the stack are read ahead (see LOOKAHEAD).
  const stack: Item[] = [];
  const children = async (rel: string): Promise<void> => {
    const names = (await readdir(pathOf(rel), { encoding: 'buffer' })).sort(Buffer.compare);
    const items = new Array<Item>(names.length);
    await forEachLimited([...names.keys()], LOOKAHEAD, async (i) => {
      const child = rel === '' ? names[i]!.toString('latin1') : `${rel}/${names[i]!.toString('latin1')}`;
      const path = pathOf(child);
      items[i] = { rel: child, path, st: await lstat(path, { bigint: true }) };
    });
    for (let i = items.length - 1; i >= 0; i--) stack.push(items[i]!);
  };
  const ahead = new Map<Item, Promise<Buffer>>();
  let aheadBytes = 0;
  const readAhead = () => {
    for (let i = stack.length - 1; i >= Math.max(0, stack.length - LOOKAHEAD); i--) {
      const item = stack[i]!;
      const { st } = item;
      // Files with several links may become tar hardlinks with no content: read when reached.
      if (ahead.has(item) || !st.isFile() || st.nlink > 1n || st.size > SMALL_FILE) continue;
      if (ahead.size >= LOOKAHEAD || aheadBytes + Number(st.size) > AHEAD_BYTES) return;
      const p = readWhole(item.path, Number(st.size));
      p.catch(() => {}); // reported when the file is reached
      ahead.set(item, p);
      aheadBytes += Number(st.size);
    }
  };
  await children('');
  while (stack.length > 0) {
    o.signal?.throwIfAborted();
    const item = stack.pop()!;
    readAhead();
    const { rel, path, st } = item;
    const base: OutEntry = {
      name: rel,
      type: 'file',
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: 0,
      mtime: clamp(Number(st.mtimeMs / 1000n)),
    };
    if (st.isDirectory()) {
      yield encodeEntry({ ...base, type: 'dir' });
      await children(rel);
    } else if (st.isSymbolicLink()) {
      const target = (await readlink(path, { encoding: 'buffer' })).toString('latin1');
      yield encodeEntry({ ...base, type: 'symlink', linkname: target });
    } else if (st.isFile()) {
      const key = `${st.dev}:${st.ino}`;
      const first = st.nlink > 1n ? links.get(key) : undefined;
      if (first !== undefined) {
        yield encodeEntry({ ...base, type: 'hardlink', linkname: first });
        continue;
      }
      if (st.nlink > 1n) links.set(key, rel);
      const size = Number(st.size);
      yield encodeEntry({ ...base, size });
      let n = 0;
      const early = ahead.get(item);
      if (early) {
        ahead.delete(item);
        aheadBytes -= size;
        const data = await early;
        n = data.length;
        if (n === size && size > 0) yield data;
      } else {
        const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
        try {
          for await (const chunk of fh.createReadStream({ highWaterMark: 1 << 20, autoClose: false, signal: o.signal })) {
            n += (chunk as Buffer).length;
            if (n > size) break;
            yield chunk as Buffer;
          }
        } finally {
          await fh.close();
        }
      }
      if (n !== size) throw changed(rel, size, n);
      const pad = contentPadding(size);
      if (pad) yield pad;
    } else if (st.isCharacterDevice() || st.isBlockDevice()) {
      const { major, minor } = devParts(st.rdev);
      yield encodeEntry({ ...base, type: st.isCharacterDevice() ? 'char' : 'block', devmajor: major, devminor: minor });
    } else if (st.isFIFO()) {
      yield encodeEntry({ ...base, type: 'fifo' });
    } else {
      warn(`skipping ${display(rel)}: sockets cannot be stored in a tar`);
    }
  }
  yield END_OF_ARCHIVE;
}

interface Item {
  rel: string;
  path: Buffer;
  st: BigIntStats;
}

/**
 * Each file costs several trips to libuv's thread pool (lstat, open, read, close), ~0.1 ms each
 * on a VM: one at a time, the disk mostly waits. Entries of a directory are lstat'ed this many at
 * once, and this many small files ahead of the one being written are read whole (within
 * AHEAD_BYTES).
 */
const LOOKAHEAD = 16;
const SMALL_FILE = 1 << 20;
const AHEAD_BYTES = 8 << 20;

/** A small file's content, read whole; one byte more than `size` if it grew since it was listed. */
async function readWhole(path: Buffer, size: number): Promise<Buffer> {
  const fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const buf = Buffer.allocUnsafe(size + 1);
    let n = 0;
    while (n < buf.length) {
      const want = buf.length - n;
      const { bytesRead } = await fh.read(buf, n, want, n);
      n += bytesRead;
      // A short read of a regular file is its end: no second read just to see 0 bytes.
      if (bytesRead < want) break;
    }
    return buf.subarray(0, n);
  } finally {
    await fh.close();
  }
}

function changed(rel: string, size: number, read: number): FerryError {
  return new FerryError('IO', `${display(rel)} changed while it was read (${size} bytes when listed, ${read}${read > size ? ' or more' : ''} read)`, { hint: 'import from a directory nothing else is writing to' });
}
