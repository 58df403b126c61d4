import { FerryError } from '../errors.js';
import { classify, linkTargetParts, MAX_DEPTH, MAX_PATH_BYTES } from './paths.js';
import { display, type Xattr } from './tar-format.js';
import type { TarEntry } from './tar-reader.js';

/**
 * The root filesystem as layers build it up, kept as metadata only: a tree of nodes keyed by
 * name. A regular file points at an inode that records where its content lives (layer index,
 * entry ordinal); hardlinks share the inode, so a link keeps its content when a later layer
 * deletes or replaces the path it was linked to (catalogue A8).
 */

export type Kind = 'dir' | 'file' | 'symlink' | 'char' | 'block' | 'fifo';

export interface Meta {
  mode: number;
  uid: number;
  gid: number;
  mtime: number;
  mtimePax?: string;
  uname: string;
  gname: string;
  xattrs?: Xattr[];
}

export interface Inode {
  layer: number;
  ordinal: number;
  size: number;
  meta: Meta;
  /** The entry's name in its layer (checked again when the content is read). */
  name: string;
  /** The first path (in tree order) that reaches this inode in the final tree: it carries the content. */
  path?: string;
  /** Further paths to the same inode, written as hardlinks to `path`. */
  links?: string[];
}

export class Node {
  children: Map<string, Node> | undefined;
  inode: Inode | undefined = undefined;
  linkname: string | undefined = undefined;
  devmajor = 0;
  devminor = 0;
  constructor(
    public kind: Kind,
    public meta: Meta,
  ) {
    this.children = kind === 'dir' ? new Map() : undefined;
  }
}

/** Most entries one image may have in total (metadata is held in memory). */
export const MAX_ENTRIES = 4_000_000;
/** Symlinks followed while resolving one path (Linux's limit). */
const MAX_SYMLINK_HOPS = 40;

const invalid = (m: string, hint?: string) => new FerryError('INVALID_INPUT', m, { hint });

/** Entries mostly share their metadata (same owner, mode, time): one object per distinct value. */
const metaCache = new Map<string, Meta>();

function metaOf(e: TarEntry): Meta {
  const mode = e.mode & 0o7777;
  if (e.mtimePax !== undefined || e.xattrs !== undefined) {
    return { mode, uid: e.uid, gid: e.gid, mtime: e.mtime, mtimePax: e.mtimePax, uname: e.uname, gname: e.gname, xattrs: e.xattrs };
  }
  const key = `${mode}|${e.uid}|${e.gid}|${e.mtime}|${e.uname}|${e.gname}`;
  let m = metaCache.get(key);
  if (!m) {
    if (metaCache.size > 4096) metaCache.clear();
    m = Object.freeze({ mode, uid: e.uid, gid: e.gid, mtime: e.mtime, mtimePax: undefined, uname: e.uname, gname: e.gname, xattrs: undefined });
    metaCache.set(key, m);
  }
  return m;
}

/** A directory created because an entry needed it: root-owned 0755, like MkdirAll in Docker and umoci. */
function implicitDir(mtime: number): Meta {
  return { mode: 0o755, uid: 0, gid: 0, mtime, mtimePax: undefined, uname: '', gname: '', xattrs: undefined };
}

export interface Planned {
  /** Everything but regular files, parents before children, siblings in byte order. */
  meta: Array<{ path: string; node: Node }>;
  /** Per layer: entry ordinal -> the inode whose content that entry carries. */
  carriers: Array<Map<number, Inode>>;
  files: number;
}

export class Tree {
  readonly root = new Node('dir', implicitDir(0));
  /** Set when a layer had an entry for the root directory itself. */
  rootExplicit = false;
  private count = 0;

  /**
   * Applies one layer, given all its entries in archive order: whiteouts and opaque markers
   * first, against the lower layers only, then every entry in order (the last of duplicates wins).
   */
  applyLayer(entries: TarEntry[], layer: number, where: string): void {
    const kept: Array<{ e: TarEntry; parts: string[] }> = [];
    const deletions: Array<() => void> = [];
    for (const e of entries) {
      const c = classify(e.name, where);
      if (c.kind === 'aufs') continue;
      if (c.kind === 'whiteout') deletions.push(() => this.whiteout(c.dir, c.target, where, e));
      else if (c.kind === 'opaque') deletions.push(() => this.opaque(c.dir, where, e));
      else kept.push({ e, parts: c.parts });
    }
    for (const d of deletions) d();
    for (const { e, parts } of kept) this.apply(e, parts, layer, where);
  }

  /**
   * Takes the first layer (over an empty tree: import, and export's bottom layer) entry by entry
   * as it streams past, so its entries need not be held. Whiteouts and opaque markers are checked
   * but hide nothing: below the first layer there is nothing, which is also why archive order
   * gives the same tree as applyLayer. The first refusal is kept rather than thrown, so the input
   * is still read to its end (and its digest checked) first; `check()` throws it.
   */
  baseLayerFeed(where: string): { add(e: TarEntry): void; check(): void } {
    let refused: unknown;
    return {
      add: (e) => {
        if (refused !== undefined) return;
        try {
          const c = classify(e.name, where);
          if (c.kind === 'entry') this.apply(e, c.parts, 0, where);
        } catch (err) {
          refused = err;
        }
      },
      check: () => {
        if (refused !== undefined) throw refused;
      },
    };
  }

  private bump(where: string): void {
    if (++this.count > MAX_ENTRIES) throw new FerryError('TOO_LARGE', `${where}: the image has more than ${MAX_ENTRIES} filesystem entries, exceeds limit`);
  }

  /**
   * Walks to the directory `parts` names, following symlinks as a chroot would: absolute targets
   * start again at the root and `..` never climbs above it. With `create`, missing directories
   * are made; without it, a missing or non-directory component gives undefined.
   */
  private walkDir(parts: string[], end: number, o: { create?: number; where: string; entry: TarEntry }): Node | undefined {
    const stack: Node[] = [this.root];
    let pending: string[] | undefined; // symlink target components still to walk, reversed
    let i = 0;
    let hops = 0;
    for (;;) {
      let p: string;
      if (pending !== undefined && pending.length > 0) p = pending.pop()!;
      else if (i < end) p = parts[i++]!;
      else break;
      if (p === '' || p === '.') continue;
      if (p === '..') {
        if (stack.length > 1) stack.pop();
        continue;
      }
      const cur = stack[stack.length - 1]!;
      let child = cur.children!.get(p);
      if (!child) {
        if (o.create === undefined) return undefined;
        this.bump(o.where);
        child = new Node('dir', implicitDir(o.create));
        cur.children!.set(p, child);
      }
      if (child.kind === 'symlink') {
        if (++hops > MAX_SYMLINK_HOPS) {
          throw invalid(`${o.where}: too many levels of symbolic links resolving the parent of ${display(o.entry.name)}`);
        }
        const target = child.linkname!;
        if (target.startsWith('/')) stack.length = 1;
        const tparts = target.split('/');
        pending ??= [];
        for (let k = tparts.length - 1; k >= 0; k--) pending.push(tparts[k]!);
        continue;
      }
      if (child.kind !== 'dir') {
        if (o.create === undefined) return undefined;
        throw invalid(`${o.where}: cannot create ${display(o.entry.name)}: a parent is a ${child.kind}, not a directory`);
      }
      stack.push(child);
      if (stack.length > MAX_DEPTH) {
        throw new FerryError('TOO_LARGE', `${o.where}: resolving ${display(o.entry.name)} goes ${stack.length} directories deep, exceeds limit of ${MAX_DEPTH}`);
      }
    }
    return stack[stack.length - 1]!;
  }

  /** `dir/.wh.name`: removes `name` (never following it if it is a symlink) and its subtree. */
  private whiteout(dir: string[], target: string, where: string, e: TarEntry): void {
    this.walkDir(dir, dir.length, { where, entry: e })?.children!.delete(target);
  }

  /** `dir/.wh..wh..opq`: hides every lower child of `dir`. A lower non-directory has none. */
  private opaque(dir: string[], where: string, e: TarEntry): void {
    if (dir.length === 0) return this.root.children!.clear();
    const parent = this.walkDir(dir, dir.length - 1, { where, entry: e });
    const node = parent?.children!.get(dir[dir.length - 1]!);
    if (node?.kind === 'dir') node.children!.clear();
  }

  private apply(e: TarEntry, parts: string[], layer: number, where: string): void {
    const meta = metaOf(e);
    if (parts.length === 0) {
      // A6 / CVE-2021-29136: "." or "/" as anything but a directory would replace the root.
      if (e.type !== 'dir') throw invalid(`${where}: entry ${display(e.name)} would replace the root directory with a ${e.type}`, 'this layer is malformed or malicious');
      this.root.meta = meta;
      this.rootExplicit = true;
      return;
    }
    // A hardlink's target is found before anything at the link's own path is replaced.
    const target = e.type === 'hardlink' ? this.linkTarget(e, where) : undefined;
    const dir = this.walkDir(parts, parts.length - 1, { create: e.mtime, where, entry: e })!;
    const name = parts[parts.length - 1]!;
    const existing = dir.children!.get(name);
    if (e.type === 'dir' && existing?.kind === 'dir') {
      existing.meta = meta; // directory over directory: metadata only, children stay
      return;
    }
    if (!existing) this.bump(where);
    let node: Node;
    switch (e.type) {
      case 'dir':
      case 'char':
      case 'block':
      case 'fifo':
        node = new Node(e.type, meta);
        if (e.type === 'char' || e.type === 'block') {
          node.devmajor = e.devmajor;
          node.devminor = e.devminor;
        }
        break;
      case 'symlink':
        if (e.linkname.length > MAX_PATH_BYTES) {
          throw new FerryError('TOO_LARGE', `${where}: symlink ${display(e.name)} has a target of ${e.linkname.length} bytes, exceeds limit of ${MAX_PATH_BYTES}`);
        }
        node = new Node('symlink', meta);
        node.linkname = e.linkname;
        break;
      case 'file':
        node = new Node('file', meta);
        node.inode = { layer, ordinal: e.ordinal, size: e.size, meta, name: e.name };
        break;
      case 'hardlink': {
        const t = target!;
        node = new Node(t.kind, t.meta);
        node.inode = t.inode;
        node.linkname = t.linkname;
        node.devmajor = t.devmajor;
        node.devminor = t.devminor;
        break;
      }
    }
    dir.children!.set(name, node);
  }

  /** Resolves a hardlink's target in the current tree (catalogue A7). */
  private linkTarget(e: TarEntry, where: string): Node {
    const parts = linkTargetParts(e.linkname, e.name, where);
    const dir = this.walkDir(parts, parts.length - 1, { where, entry: e });
    const t = dir?.children!.get(parts[parts.length - 1]!);
    if (!t) {
      throw invalid(`${where}: hardlink ${display(e.name)} points at ${display(e.linkname)}, which does not exist`, 'a hardlink must name a file that an earlier entry or a lower layer created');
    }
    if (t.kind === 'dir') throw invalid(`${where}: hardlink ${display(e.name)} points at the directory ${display(e.linkname)}`);
    return t;
  }

  /**
   * Lists the final tree: non-file entries in order, and for each surviving inode its paths in
   * tree order, indexed by the layer entry that carries its content.
   */
  plan(layers: number): Planned {
    const out: Planned = { meta: [], carriers: Array.from({ length: layers }, () => new Map()), files: 0 };
    const paths: string[] = [];
    const nodes: Node[] = [];
    const pushChildren = (prefix: string, n: Node) => {
      const names = [...n.children!.keys()].sort(); // code-unit order = byte order for binary strings
      for (let i = names.length - 1; i >= 0; i--) {
        paths.push(prefix === '' ? names[i]! : `${prefix}/${names[i]!}`);
        nodes.push(n.children!.get(names[i]!)!);
      }
    };
    pushChildren('', this.root);
    while (nodes.length > 0) {
      const path = paths.pop()!;
      const node = nodes.pop()!;
      if (node.kind === 'file') {
        const inode = node.inode!;
        if (inode.path === undefined) {
          inode.path = path;
          out.carriers[inode.layer]!.set(inode.ordinal, inode);
          out.files++;
        } else (inode.links ??= []).push(path);
        continue;
      }
      out.meta.push({ path, node });
      if (node.kind === 'dir') pushChildren(path, node);
    }
    return out;
  }
}
