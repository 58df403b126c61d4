import { constants } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { warn } from '../log.js';
import { display } from './tar-format.js';
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
  // Depth-first with an explicit stack of relative names (binary strings), pushed in reverse order.
  const stack: string[] = [];
  const children = async (rel: string): Promise<void> => {
    const at = rel === '' ? root : Buffer.concat([root, Buffer.from(`/${rel}`, 'latin1')]);
    const names = (await readdir(at, { encoding: 'buffer' })).sort(Buffer.compare);
    for (let i = names.length - 1; i >= 0; i--) {
      const n = names[i]!.toString('latin1');
      stack.push(rel === '' ? n : `${rel}/${n}`);
    }
  };
  await children('');
  while (stack.length > 0) {
    o.signal?.throwIfAborted();
    const rel = stack.pop()!;
    const path = Buffer.concat([root, Buffer.from(`/${rel}`, 'latin1')]);
    const st = await lstat(path, { bigint: true });
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
      if (n !== size) throw new FerryError('IO', `${display(rel)} changed while it was read (${size} bytes when listed, ${n} read)`, { hint: 'import from a directory nothing else is writing to' });
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
