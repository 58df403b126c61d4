import { BLOCK, encodeHeader, padding, paxFor, type HeaderFields, type Xattr } from './tar-format.js';

export type OutType = 'file' | 'hardlink' | 'symlink' | 'char' | 'block' | 'dir' | 'fifo';

const TYPEFLAG: Record<OutType, string> = { file: '0', hardlink: '1', symlink: '2', char: '3', block: '4', dir: '5', fifo: '6' };

/** What the writer needs to describe one member. `name` has no trailing slash; directories get one. */
export interface OutEntry {
  name: string;
  type: OutType;
  mode: number;
  uid: number;
  gid: number;
  /** Content bytes that follow (regular files only). */
  size: number;
  mtime: number;
  mtimePax?: string;
  linkname?: string;
  uname?: string;
  gname?: string;
  devmajor?: number;
  devminor?: number;
  xattrs?: Xattr[];
}

export const END_OF_ARCHIVE = Buffer.alloc(2 * BLOCK);
const PAD = Buffer.alloc(BLOCK);

/**
 * The header block(s) of one member: a PAX extended header first when a field does not fit
 * ustar (long or non-ASCII names and link targets, big numbers, sub-second mtimes, xattrs, which
 * are written as SCHILY.xattr.*), then the ustar header. Deterministic: same entry, same bytes.
 */
export function encodeEntry(e: OutEntry): Buffer {
  const name = e.type === 'dir' && e.name !== '' ? `${e.name}/` : e.type === 'dir' ? './' : e.name;
  const fields: HeaderFields = {
    name,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    size: e.type === 'file' ? e.size : 0,
    mtime: e.mtime,
    typeflag: TYPEFLAG[e.type],
    linkname: e.linkname,
    uname: e.uname,
    gname: e.gname,
    devmajor: e.type === 'char' || e.type === 'block' ? e.devmajor : 0,
    devminor: e.type === 'char' || e.type === 'block' ? e.devminor : 0,
  };
  const header = encodeHeader(fields);
  const records = paxFor({ ...fields, mtimePax: e.mtimePax, xattrs: e.xattrs });
  if (records.length === 0) return header;
  const body = Buffer.concat(records);
  const paxHeader = encodeHeader({
    name: paxName(name),
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: Math.max(0, Math.min(e.mtime, 0o77777777777)),
    typeflag: 'x',
  });
  const pad = padding(body.length);
  return Buffer.concat([paxHeader, body, ...(pad ? [PAD.subarray(0, pad)] : []), header]);
}

/** Zero bytes that complete a member's content to a whole block. */
export function contentPadding(size: number): Buffer | undefined {
  const n = padding(size);
  return n ? PAD.subarray(0, n) : undefined;
}

/** "dir/PaxHeaders/base", ASCII only, at most 100 bytes (the name only matters to ancient readers). */
function paxName(name: string): string {
  const trimmed = name.replace(/\/+$/, '');
  const slash = trimmed.lastIndexOf('/');
  const dir = slash < 0 ? '' : trimmed.slice(0, slash + 1);
  const base = trimmed.slice(slash + 1);
  // eslint-disable-next-line no-control-regex
  const safe = (s: string) => s.replace(/[^\x20-\x7e]/g, '_');
  const full = safe(`${dir}PaxHeaders/${base}`);
  return full.length <= 100 ? full : safe(`PaxHeaders/${base}`).slice(0, 100);
}
