import { createHash } from 'node:crypto';
import { basename } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError } from '../errors.js';
import { algorithmOf, isDigest, type Digest } from '../oci/digest.js';
import { parseJson, MAX_JSON_BYTES } from '../oci/manifest.js';
import type { ArchiveBacking } from './backing.js';
import type { ArchiveInput } from './scan.js';
import type { TarHeader } from './tar.js';
import { cleanPath } from './tar.js';
import { parsePartName, VOLUME_HEADER, VOLUME_TRAILER, type PartInfo, type VolumeTrailer } from './volumes.js';

/**
 * Where an entry of the set lies: in one volume, or in parts across several. A part carries the
 * digest its volume's list gives, a whole blob the digest its name gives, so that a damaged one is
 * named by its volume when read (the reader's own check of the blob could name only the set).
 */
type Piece = { backing: ArchiveBacking; header: TarHeader; where: string; check?: Check };
type Check = { digest: Digest; what: string; file: string };

/**
 * The volumes of one set read as one archive: every entry of every volume, except the volume
 * headers and trailers, and each blob cut into parts (`ferry-parts/...`) as one entry made of its
 * parts in order. Entries are read through each volume's own backing (in place for a plain tar,
 * by decompressing for a compressed one). The set must be complete: its last volume says how many
 * there are.
 */
export class VolumeSetBacking implements ArchiveBacking {
  readonly headers: TarHeader[] = [];
  private readonly pieces = new Map<number, Piece[]>();

  private constructor(private readonly volumes: ArchiveBacking[]) {}

  get sequential(): boolean {
    return this.volumes.some((v) => v.sequential);
  }

  /**
   * `inputs` in volume order (orderInputs), each opened as `open` opens one archive file; `hint`
   * (given a volume's path) says how to name the whole set when volumes after the last are missing.
   */
  static async open(inputs: ArchiveInput[], open: (path: string) => Promise<ArchiveBacking>, hint?: (path: string) => string): Promise<VolumeSetBacking> {
    const set = new VolumeSetBacking([]);
    try {
      for (const input of inputs) set.volumes.push(await open(input.path));
      await set.index(inputs, hint);
      return set;
    } catch (e) {
      await set.close();
      throw e;
    }
  }

  private async index(inputs: ArchiveInput[], hint?: (path: string) => string): Promise<void> {
    const parts = new Map<string, Array<{ info: PartInfo; piece: Piece }>>();
    let trailer: VolumeTrailer | undefined;
    for (const [i, backing] of this.volumes.entries()) {
      const input = inputs[i]!;
      const here: Array<{ name: string; info: PartInfo; piece: Piece }> = [];
      trailer = undefined;
      for (const h of backing.headers) {
        const p = cleanPath(h.name);
        if (!p || p === VOLUME_HEADER) continue;
        if (p === VOLUME_TRAILER) {
          if (h.size > MAX_JSON_BYTES) throw new FerryError('TOO_LARGE', `${input.where}: ${VOLUME_TRAILER} exceeds ${MAX_JSON_BYTES} bytes`);
          trailer = parseJson(await backing.read(h), `${input.where}: ${VOLUME_TRAILER}`) as VolumeTrailer;
          continue;
        }
        const info = h.type === 'file' ? parsePartName(p) : undefined;
        if (info) {
          const key = `${info.blob} ${info.blobSize}`;
          const list = parts.get(key) ?? [];
          const piece: Piece = { backing, header: h, where: input.where };
          list.push({ info, piece });
          parts.set(key, list);
          here.push({ name: p, info, piece });
          continue;
        }
        this.add({ ...h, name: p }, [{ backing, header: h, where: input.where, check: blobCheck(p, h, input) }]);
      }
      if (!trailer) throw new FerryError('INTEGRITY', `${input.where}: no ${VOLUME_TRAILER} (the volume is truncated)`);
      const listed = new Map((Array.isArray(trailer.entries) ? trailer.entries : []).map((e) => [e.name, e.digest]));
      for (const { name, info, piece } of here) {
        const digest = listed.get(name);
        if (digest) piece.check = { digest, what: `${input.where}: part ${info.index} of blob ${info.blob}`, file: input.path };
      }
    }
    const last = inputs.at(-1)!;
    if (trailer?.volumes !== undefined && trailer.volumes !== inputs.length) {
      throw new FerryError('INTEGRITY', `${last.where}: its ${VOLUME_TRAILER} says the set has ${trailer.volumes} volumes, not ${inputs.length}`);
    }
    if (trailer?.volumes === undefined) {
      throw new FerryError('INTEGRITY', `volume ${inputs.length + 1} and later of the set are missing: ${basename(last.path)} is not the last volume`, {
        hint: hint?.(last.path),
      });
    }
    for (const list of parts.values()) {
      const { blob, blobSize, count } = list[0]!.info;
      list.sort((a, b) => a.info.index - b.info.index);
      const total = list.reduce((n, x) => n + x.piece.header.size, 0);
      if (list.length !== count || list.some((x, k) => x.info.index !== k + 1) || total !== blobSize) {
        throw new FerryError('INTEGRITY', `blob ${blob} is incomplete in the set: ${list.length} of its ${count} parts, ${total} of ${blobSize} bytes`);
      }
      const [alg, hex] = blob.split(':');
      this.add({ name: `blobs/${alg}/${hex}`, type: 'file', size: blobSize, linkname: '', offset: 0 }, list.map((x) => x.piece));
    }
  }

  /** Each entry gets an offset of its own: the key its pieces are found by. */
  private add(h: TarHeader, pieces: Piece[]): void {
    const header = { ...h, offset: this.headers.length };
    this.headers.push(header);
    this.pieces.set(header.offset, pieces);
  }

  private piecesOf(h: TarHeader): Piece[] {
    const p = this.pieces.get(h.offset);
    if (!p) throw new FerryError('INTERNAL', `entry ${h.name} is not an entry of this volume set`);
    return p;
  }

  /** The volume (or volumes) an entry is read from, as messages name it. */
  locate(h: TarHeader): string {
    return [...new Set(this.piecesOf(h).map((p) => p.where))].join(', ');
  }

  async read(h: TarHeader, length = h.size): Promise<Buffer> {
    const pieces = this.piecesOf(h);
    if (pieces.length === 1) return pieces[0]!.backing.read(pieces[0]!.header, length);
    const want = Math.min(length, h.size);
    const got: Buffer[] = [];
    let n = 0;
    for await (const c of await this.stream(h, 0)) {
      got.push(c as Buffer);
      n += (c as Buffer).length;
      if (n >= want) break;
    }
    return Buffer.concat(got).subarray(0, want);
  }

  async stream(h: TarHeader, start: number, signal?: AbortSignal): Promise<Readable> {
    const pieces = this.piecesOf(h);
    if (pieces.length === 1 && !(pieces[0]!.check && start === 0)) return pieces[0]!.backing.stream(pieces[0]!.header, start, signal);
    async function* joined(): AsyncGenerator<Buffer> {
      let skip = start;
      for (const { backing, header, check } of pieces) {
        if (skip >= header.size) {
          skip -= header.size;
          continue;
        }
        // A piece read whole is checked on its own: the blob's digest would say only that it is bad.
        const body = await backing.stream(header, skip, signal);
        yield* skip === 0 && check ? checked(body, check) : body;
        skip = 0;
      }
    }
    return Readable.from(joined(), { objectMode: false });
  }

  async close(): Promise<void> {
    for (const v of this.volumes) await v.close();
  }
}

/** A whole blob's check: the digest its entry name `blobs/ALG/HEX` gives. */
function blobCheck(name: string, h: TarHeader, input: ArchiveInput): Check | undefined {
  const m = h.type === 'file' ? /^blobs\/([a-z0-9]+)\/([a-f0-9]+)$/.exec(name) : null;
  const digest = m ? `${m[1]}:${m[2]}` : '';
  if (!isDigest(digest)) return undefined;
  return { digest, what: `${input.where}: blob ${digest}`, file: input.path };
}

/** The bytes of one piece, passed on as they come; at its end, a digest other than the check's fails the stream, naming the volume. */
async function* checked(body: Readable, check: Check): AsyncGenerator<Buffer> {
  const hash = createHash(algorithmOf(check.digest));
  for await (const c of body) {
    hash.update(c as Buffer);
    yield c as Buffer;
  }
  const have = `${algorithmOf(check.digest)}:${hash.digest('hex')}`;
  if (have !== check.digest) {
    throw new FerryError('DIGEST_MISMATCH', `${check.what} corrupt (content hashes to ${have}; expected ${check.digest})`, {
      hint: `copy ${basename(check.file)} again from where the set was written, or write the set again (ferry verify of every volume lists what is damaged)`,
    });
  }
}
