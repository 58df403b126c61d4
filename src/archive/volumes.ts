import { createHash, randomUUID } from 'node:crypto';
import { readdir, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { FerryError } from '../errors.js';
import { deadTemps } from '../blob/resume-file.js';
import { fileSizeCap } from '../util/space.js';
import { warn } from '../log.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { ArchiveOutput, refuseExisting, type EntryOptions, type OutputOptions } from './output.js';
import { syncDir } from '../blob/publish.js';
import { BLOCK, entryBytes, END_OF_ARCHIVE } from './tar.js';
import type { EntryWriter } from './writer.js';

/**
 * Volumes: one archive cut into files no larger than a limit (FAT32's 4 GiB, say). Each volume is
 * a complete tar: it starts with `ferry-volume.json` (the set and its position), carries whole
 * entries where they fit and parts of the blobs that do not (`ferry-parts/...`), and ends with
 * `ferry-volume-end.json` listing the digest and size of everything inside it.
 */
export const VOLUME_HEADER = 'ferry-volume.json';
export const VOLUME_TRAILER = 'ferry-volume-end.json';
export const PARTS_DIR = 'ferry-parts';
export const MIN_VOLUME_SIZE = 64 * 1024;

export interface VolumeHeader {
  ferryVolume: 1;
  set: string;
  volume: number;
}

export interface VolumeEntry {
  name: string;
  size: number;
  digest: Digest;
  /** For a part of a blob split across volumes. */
  part?: { blob: Digest; blobSize: number; index: number; count: number };
}

export interface VolumeTrailer {
  ferryVolume: 1;
  set: string;
  volume: number;
  /** Set on the last volume: how many there are. */
  volumes?: number;
  entries: VolumeEntry[];
}

/** `ferry-parts/<alg>/<hex>/<blob size>/<k>-of-<n>`: the name says what the part belongs to. */
export function partName(blob: Digest, blobSize: number, index: number, count: number): string {
  const [alg, hex] = blob.split(':');
  return `${PARTS_DIR}/${alg}/${hex}/${blobSize}/${index}-of-${count}`;
}

export interface PartInfo {
  blob: Digest;
  blobSize: number;
  index: number;
  count: number;
}

export function parsePartName(name: string): PartInfo | undefined {
  const m = /^ferry-parts\/(sha256|sha512)\/([^/]+)\/(\d{1,16})\/(\d{1,6})-of-(\d{1,6})$/.exec(name);
  if (!m) return undefined;
  const index = Number(m[4]);
  const count = Number(m[5]);
  const blobSize = Number(m[3]);
  if (!(index >= 1 && index <= count) || !Number.isSafeInteger(blobSize)) return undefined;
  return { blob: parseDigest(`${m[1]}:${m[2]}`, name), blobSize, index, count };
}

/**
 * `4G`, `4GiB`, `700M`, `64k`, `1048576`: binary units. `32GB`, `500MB`: decimal, as media are sold
 * (and as GNU dd reads them): a stick sold as 32 GB holds 32e9 bytes, not 32 GiB.
 */
export function parseSize(text: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(?:([kmgt])(i?b)?|b)?$/i.exec(text.trim());
  if (!m) throw new FerryError('USAGE', `invalid size "${text}": use a number with an optional K, M, G or T suffix (binary; KB, MB, GB, TB: decimal), e.g. 4G`);
  const unit = (m[2] ?? '').toLowerCase() as '' | 'k' | 'm' | 'g' | 't';
  const power = { '': 0, k: 1, m: 2, g: 3, t: 4 }[unit];
  const decimal = m[3]?.toLowerCase() === 'b';
  return Math.floor(Number(m[1]) * (decimal ? 1000 : 1024) ** power);
}

/** `out.tar.zst` -> `out` and `.tar.zst`; `out` -> `out` and `.tar`. */
function volumeNaming(base: string): { stem: string; ext: string } {
  const m = /(\.tar(?:\.[a-z0-9]+)?|\.tgz|\.tzst)$/i.exec(basename(base));
  const ext = m ? m[1]! : '';
  return { stem: base.slice(0, base.length - ext.length), ext: ext || '.tar' };
}

/** `out.tar.zst` -> `out.003.tar.zst`; `out` -> `out.003.tar`. */
export function volumePath(base: string, n: number): string {
  const { stem, ext } = volumeNaming(base);
  return `${stem}.${String(n).padStart(3, '0')}${ext}`;
}

/**
 * The files beside `base` named as volumes of a set written to it (`out.001.tar`, `out.017.tar`,
 * …), whichever set they belong to, in volume order.
 */
export async function existingVolumes(base: string): Promise<string[]> {
  const { stem, ext } = volumeNaming(base);
  const dir = dirname(stem);
  const quote = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const pattern = new RegExp(`^${quote(basename(stem))}\\.(\\d{3,})${quote(ext)}$`);
  const names = await readdir(dir).catch(() => [] as string[]);
  const found = names.map((n) => ({ n, m: pattern.exec(n) })).filter((x) => x.m);
  found.sort((a, b) => Number(a.m![1]) - Number(b.m![1]) || a.n.localeCompare(b.n));
  return found.map((x) => join(dir, x.n));
}

/** Without --force, a set is not written over any volume of an earlier one, not only its first. */
async function refuseExistingSet(base: string, force: boolean | undefined): Promise<void> {
  await refuseExisting(volumePath(base, 1), force);
  if (force) return;
  const old = await existingVolumes(base);
  if (old.length === 0) return;
  const named = old.length > 3 ? `${old.slice(0, 3).join(', ')} and ${old.length - 3} more` : old.join(', ');
  throw new FerryError('USAGE', `${named} already exist${old.length === 1 ? 's' : ''} (volumes of an earlier set); refusing to write a set beside them`, {
    hint: 'pass --force to replace that set (its volumes the new one does not replace are removed), or choose another name',
  });
}

const jsonBlock = (doc: unknown) => Buffer.from(JSON.stringify(doc));
/** A worst-case JSON length for one trailer entry (digests have fixed length; sizes ≤ 16 digits). */
const entryEstimate = (name: string) => Buffer.byteLength(name) + 400;
const roundUp = (n: number) => Math.ceil(n / BLOCK) * BLOCK;

interface OpenVolume {
  n: number;
  out: ArchiveOutput;
  entries: VolumeEntry[];
  /** Trailer JSON estimate so far (without the fixed part). */
  estimate: number;
}

export interface VolumeWriterOptions extends OutputOptions {
  /** Largest volume file, in bytes. */
  volumeSize: number;
  /**
   * Puts the finished set in place instead of publishing each volume: each is then still its temp
   * file (`temp`), complete and fsynced. Once called, abort() leaves those files alone.
   */
  publish?: (set: string, files: Array<{ temp: string; dest: string }>) => Promise<void>;
}

/**
 * The set id of a set a killed run was writing into `base`: the same id makes the same bytes, so
 * the volumes it finished are kept instead of written again (see ResumingFile).
 */
async function deadSetId(base: string): Promise<string | undefined> {
  const first = (await deadTemps(volumePath(base, 1))).find((d) => d.plain);
  if (!first) return undefined;
  // Imported when needed: scan.ts imports this module.
  const { readVolumeHeader } = await import('./scan.js');
  const header = await readVolumeHeader(first.path).catch(() => undefined);
  return header?.volume === 1 ? header.set : undefined;
}

/** Refuses a volume size no volume can be written at (save and sync say it alike). */
export function checkVolumeSize(size: number): void {
  if (size < MIN_VOLUME_SIZE) {
    throw new FerryError('USAGE', `--volume-size ${size} is too small: a volume takes at least ${MIN_VOLUME_SIZE} bytes (64K)`, {
      hint: 'give --volume-size 64K or more (4G suits FAT32)',
    });
  }
}

/**
 * Writes entries into volumes smaller than `volumeSize` bytes. Every volume is a temp file until the
 * whole set is complete; then all are moved into place (so an interrupted save leaves nothing).
 */
export class VolumeWriter implements EntryWriter {
  readonly set: string;
  private cur?: OpenVolume;
  private readonly done: ArchiveOutput[] = [];
  private readonly capacity: number;
  /** Handed to `publish`: its files are no longer ours to remove. */
  private handedOver = false;

  constructor(private readonly base: string, private readonly o: VolumeWriterOptions, set?: string) {
    checkVolumeSize(o.volumeSize);
    this.set = set ?? randomUUID();
    // Below the size, not up to it: FAT32 takes files of 4 GiB - 1 byte at most, and `--volume-size
    // 4G` is what people write for it. Compression can grow incompressible data a little: a margin.
    this.capacity = o.compression === 'none' ? o.volumeSize - 1 : Math.floor(o.volumeSize * 0.995) - 4096;
  }

  static async create(base: string, o: VolumeWriterOptions): Promise<VolumeWriter> {
    if (base === '-') throw new FerryError('USAGE', 'volumes need a file name: -o NAME.tar, not -o -');
    await refuseExistingSet(base, o.force);
    // FAT32 holds no file of 4 GiB: a set cut larger would fail there at its first full volume.
    const cap = await fileSizeCap(volumePath(base, 1));
    if (cap && o.volumeSize > cap.bytes) {
      throw new FerryError('USAGE', `--volume-size ${o.volumeSize} is larger than ${cap.mount} (${cap.fs}) can hold in one file: at most ${cap.bytes} bytes`, { hint: 'give --volume-size 4G or less' });
    }
    return new VolumeWriter(base, o, o.measure ? undefined : await deadSetId(base));
  }

  private trailerBytes(estimate: number): number {
    return BLOCK + roundUp(200 + estimate) + END_OF_ARCHIVE.length;
  }

  /** Bytes of entry data that still fit in the open volume, if it also lists `name`. */
  private room(v: OpenVolume | undefined, name: string): number {
    if (!v) return 0;
    const left = this.capacity - v.out.bytes - this.trailerBytes(v.estimate + entryEstimate(name)) - entryBytes(name, 0);
    return Math.max(0, Math.floor(left / BLOCK) * BLOCK);
  }

  private emptyRoom(name: string): number {
    const header = roundUp(JSON.stringify({ ferryVolume: 1, set: this.set, volume: 99999 }).length) + BLOCK;
    const left = this.capacity - header - this.trailerBytes(entryEstimate(name)) - entryBytes(name, 0);
    return Math.floor(left / BLOCK) * BLOCK;
  }

  private async open(): Promise<OpenVolume> {
    const n = this.done.length + (this.cur ? 1 : 0) + 1;
    if (this.cur) await this.close(false);
    const out = await ArchiveOutput.toFile(volumePath(this.base, n), this.o);
    const header: VolumeHeader = { ferryVolume: 1, set: this.set, volume: n };
    await out.bytesEntry(VOLUME_HEADER, jsonBlock(header));
    this.cur = { n, out, entries: [], estimate: 0 };
    return this.cur;
  }

  private async close(last: boolean): Promise<void> {
    const v = this.cur!;
    const trailer: VolumeTrailer = { ferryVolume: 1, set: this.set, volume: v.n, ...(last ? { volumes: v.n } : {}), entries: v.entries };
    await v.out.bytesEntry(VOLUME_TRAILER, jsonBlock(trailer));
    await v.out.finish({ defer: true });
    this.done.push(v.out);
    this.cur = undefined;
  }

  private async volumeFor(name: string, size: number): Promise<OpenVolume> {
    if (this.cur && this.room(this.cur, name) >= size) return this.cur;
    const v = await this.open();
    if (this.room(v, name) < size) throw new FerryError('USAGE', `--volume-size ${this.o.volumeSize} is too small for entry ${name}`);
    return v;
  }

  async bytes(name: string, data: Buffer): Promise<void> {
    const v = await this.volumeFor(name, data.length);
    await v.out.bytesEntry(name, data);
    this.record(v, { name, size: data.length, digest: `sha256:${createHash('sha256').update(data).digest('hex')}` as Digest });
  }

  async dir(name: string): Promise<void> {
    // Directories are implied by the entries' paths; volumes carry files only.
    void name;
  }

  private record(v: OpenVolume, e: VolumeEntry): void {
    v.entries.push(e);
    v.estimate += entryEstimate(e.name);
  }

  async file(name: string, size: number, body: AsyncIterable<Buffer>, o: EntryOptions = {}): Promise<void> {
    const blob = /^blobs\/(sha256|sha512)\/([a-f0-9]+)$/.exec(name);
    if (size <= this.emptyRoom(name) || !blob) {
      const v = await this.volumeFor(name, size);
      // A blob's name is its digest (verified upstream); anything else is hashed on the way.
      const h = blob ? undefined : createHash('sha256');
      async function* hashed(): AsyncGenerator<Buffer> {
        for await (const c of body) {
          h?.update(c);
          yield c;
        }
      }
      await v.out.entry(name, size, hashed(), o);
      const digest = blob ? parseDigest(`${blob[1]}:${blob[2]}`, name) : (`sha256:${h!.digest('hex')}` as Digest);
      this.record(v, { name, size, digest });
      return;
    }
    // Larger than a volume: parts, the first filling what is left of the open volume.
    const digest = parseDigest(`${blob[1]}:${blob[2]}`, name);
    const probe = partName(digest, size, 999999, 999999);
    const sizes: number[] = [];
    let left = size;
    const first = this.room(this.cur, probe);
    const useOpen = first >= Math.min(left, 1 << 16);
    if (useOpen) {
      sizes.push(Math.min(first, left));
      left -= sizes[0]!;
    }
    const full = this.emptyRoom(probe);
    while (left > 0) {
      sizes.push(Math.min(full, left));
      left -= sizes.at(-1)!;
    }
    const it = chunks(body);
    for (let i = 0; i < sizes.length; i++) {
      const pname = partName(digest, size, i + 1, sizes.length);
      const v = i === 0 && useOpen ? this.cur! : await this.open();
      const h = createHash('sha256');
      const want = sizes[i]!;
      async function* part(): AsyncGenerator<Buffer> {
        let got = 0;
        while (got < want) {
          const c = await it.next(want - got);
          if (!c) return;
          got += c.length;
          h.update(c);
          yield c;
        }
      }
      await v.out.entry(pname, want, part(), o);
      this.record(v, { name: pname, size: want, digest: `sha256:${h.digest('hex')}` as Digest, part: { blob: digest, blobSize: size, index: i + 1, count: sizes.length } });
    }
    if (await it.next(1)) throw new FerryError('INTERNAL', `blob ${digest}: more than the declared ${size} bytes`);
  }

  async finish(): Promise<string[]> {
    if (!this.cur) await this.open();
    await this.close(true);
    if (this.o.publish && !this.o.measure) {
      this.handedOver = true;
      await this.o.publish(this.set, this.done.map((out) => ({ temp: out.pending!, dest: out.where })));
      return this.done.map((out) => out.where);
    }
    // Every name is checked before any volume appears, so a clash leaves no partial set.
    for (const out of this.done) await refuseExisting(out.where, this.o.force);
    const paths: string[] = [];
    for (const out of this.done) {
      await out.publish();
      paths.push(out.where);
    }
    if (this.o.force && !this.o.measure) await this.removeStale(paths);
    return paths;
  }

  /**
   * An earlier set written to the same name with more volumes: its later volumes would stay beside
   * the new set, and verify or load of `NAME.*.tar` would then mix the two. Removed only once the
   * whole new set is in place, so a failed save leaves the old set as it was.
   */
  private async removeStale(written: string[]): Promise<void> {
    const ours = new Set(written.map((p) => basename(p)));
    const stale = (await existingVolumes(this.base)).filter((p) => !ours.has(basename(p)));
    for (const p of stale) {
      try {
        await unlink(p);
        warn(`removed stale volume ${p} of the previous set`);
      } catch (e) {
        warn(`could not remove stale volume ${p} of the previous set (${(e as NodeJS.ErrnoException).code ?? e}); remove it before verify or load of the set`);
      }
    }
    if (stale.length) await syncDir(dirname(written[0]!));
  }

  async abort(): Promise<void> {
    if (this.handedOver) return;
    const all = [...this.done, ...(this.cur ? [this.cur.out] : [])];
    this.cur = undefined;
    for (const out of all) await out.abort();
  }
}

/** Hands out a stream's bytes in pieces of at most `max`, splitting chunks where needed. */
function chunks(body: AsyncIterable<Buffer>): { next(max: number): Promise<Buffer | undefined> } {
  const it = body[Symbol.asyncIterator]();
  let held: Buffer | undefined;
  return {
    async next(max: number) {
      if (!held || held.length === 0) {
        const r = await it.next();
        if (r.done) return undefined;
        held = r.value;
      }
      const out = held.subarray(0, max);
      held = held.subarray(out.length);
      return out;
    },
  };
}

/**
 * An archive file without index.json or manifest.json. A volume of a set is one: say so, and that
 * the whole set is what to give, rather than call it "not an image archive".
 */
export function notAnImageArchive(where: string, isVolume: boolean): FerryError {
  if (isVolume) {
    return new FerryError('INVALID_INPUT', `${where} is one volume of a ferry volume set, not a whole archive`, {
      hint: 'give every volume of the set (load -i and verify: each file; copy, inspect and push --from: a pattern such as NAME.*.tar)',
    });
  }
  return new FerryError('INVALID_INPUT', `${where}: not an image archive (it has neither index.json nor manifest.json)`);
}

/** `app.003.tar.zst` -> stem `app`, digits `003`, ext `.tar.zst`; undefined for a name not numbered as a volume. */
export function numberedVolume(path: string): { stem: string; digits: string; ext: string } | undefined {
  const m = /\.(\d{3,})(\.tar(?:\.[a-z0-9]+)?|\.tgz|\.tzst)$/i.exec(path);
  return m ? { stem: path.slice(0, m.index), digits: m[1]!, ext: m[2]! } : undefined;
}

/** The file name volume `n` has when named like `path` (`app.003.tar` -> `app.001.tar`), if it is. */
export function siblingVolume(path: string, n: number): string | undefined {
  const v = numberedVolume(path);
  return v ? `${v.stem}.${String(n).padStart(v.digits.length, '0')}${v.ext}` : undefined;
}

/** `1, 2, 3, 5` -> `1-3, 5`. */
export function listNumbers(ns: number[]): string {
  const parts: string[] = [];
  for (let i = 0; i < ns.length; ) {
    let j = i;
    while (j + 1 < ns.length && ns[j + 1] === ns[j]! + 1) j++;
    parts.push(j > i + 1 ? `${ns[i]}-${ns[j]}` : ns.slice(i, j + 1).join(', '));
    i = j + 1;
  }
  return parts.join(', ');
}

/** Where a volume set's files are named in messages: "volume 3 of 5 (out.003.tar)". */
export function describeVolume(n: number, total: number | undefined, path: string): string {
  return `volume ${n}${total ? ` of ${total}` : ''} (${basename(path)})`;
}
