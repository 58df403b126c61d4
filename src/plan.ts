import type { BlobFate, CopiedImage, CopyReport } from './copy.js';
import { FerryError } from './errors.js';
import type { Digest } from './oci/digest.js';
import { humanSize } from './progress/format.js';

/** What a `--dry-run` of save, push or sync would do. Printed whole as one JSON document. */
export interface Plan {
  dryRun: true;
  command: 'save' | 'push' | 'sync';
  /** The archive, the registry repository, or for sync every destination, comma-separated. */
  destination: string;
  images: PlannedImage[];
  /** Blobs (layers, configs) that would move: each counted once per destination. */
  blobs: Amount;
  /** Blobs the destination already has (or, for an archive, that it already carries). */
  skipped: Amount;
  /** Blobs left out because the inventory given with --exclude-from lists them. */
  excluded: Amount;
  /** Manifests and indexes that would be written. */
  manifests: Amount;
  archive?: ArchivePlan;
}

export interface Amount {
  count: number;
  bytes: number;
}

export interface PlannedImage {
  /** As the user named it (push --all-tags and sync: REPOSITORY:TAG). */
  source: string;
  digest: Digest;
  platforms: string[];
  /** Names it would get at the destination. */
  names: string[];
}

export interface ArchivePlan {
  compression: string;
  /** Every file save would write, with its size as a tar before compression (and, compressed, the most it can take). */
  files: Array<{ path: string; bytes: number; maxBytes?: number }>;
  bytes: number;
  /** With compression: the most the files can take once compressed; what --media is checked against. */
  maxBytes?: number;
  volumeSize?: number;
  /** Set with --media: whether all the files fit, and by how much they miss or what is left. */
  media?: { size: number; fits: boolean; over: number; free: number };
}

/** A blob moves if any copy would move it; else it is left out; else it is already there. */
const RANK: Record<BlobFate, number> = { present: 0, excluded: 1, move: 2 };

/** Merges dry-run copy reports into one plan, counting each blob once per destination. */
export class PlanBuilder {
  private readonly blobs = new Map<string, { size: number; fate: BlobFate; manifest?: boolean }>();
  private readonly images: PlannedImage[] = [];
  private readonly destinations = new Set<string>();

  /** `source`: how the images were named by the user (or, per image, how to name them). */
  add(destination: string, source: string | ((i: CopiedImage) => string), r: CopyReport): void {
    this.destinations.add(destination);
    for (const b of r.planned ?? []) {
      const key = `${destination} ${b.digest}`;
      const seen = this.blobs.get(key);
      if (!seen || RANK[b.fate] > RANK[seen.fate]) this.blobs.set(key, b);
    }
    for (const i of r.images) {
      this.images.push({ source: typeof source === 'string' ? source : source(i), digest: i.digest, platforms: i.platforms, names: i.names.map((n) => n.name ?? n.tag) });
    }
  }

  build(command: Plan['command'], archive?: ArchivePlan): Plan {
    const amount = (keep: (b: { fate: BlobFate; manifest?: boolean }) => boolean): Amount => {
      const picked = [...this.blobs.values()].filter(keep);
      return { count: picked.length, bytes: picked.reduce((n, b) => n + b.size, 0) };
    };
    return {
      dryRun: true,
      command,
      destination: [...this.destinations].join(', '),
      images: this.images,
      blobs: amount((b) => !b.manifest && b.fate === 'move'),
      skipped: amount((b) => !b.manifest && b.fate === 'present'),
      excluded: amount((b) => !b.manifest && b.fate === 'excluded'),
      manifests: amount((b) => !!b.manifest && b.fate === 'move'),
      ...(archive ? { archive } : {}),
    };
  }
}

/** The archive part of a plan, checked against the size of the medium it is meant for. */
export function archivePlan(files: ArchivePlan['files'], o: { compression: string; volumeSize?: number; media?: number }): ArchivePlan {
  const bytes = files.reduce((n, f) => n + f.bytes, 0);
  const plan: ArchivePlan = { compression: o.compression, files, bytes };
  if (files.some((f) => f.maxBytes !== undefined)) plan.maxBytes = files.reduce((n, f) => n + (f.maxBytes ?? f.bytes), 0);
  if (o.volumeSize !== undefined) plan.volumeSize = o.volumeSize;
  if (o.media !== undefined) {
    const need = plan.maxBytes ?? bytes;
    plan.media = { size: o.media, fits: need <= o.media, over: Math.max(0, need - o.media), free: Math.max(0, o.media - need) };
  }
  return plan;
}

/** Throws when a planned archive does not fit on --media. */
export function checkMedia(plan: Plan): void {
  const a = plan.archive;
  if (!a?.media || a.media.fits) return;
  const what = `${a.files.length > 1 ? `the ${a.files.length} volumes need` : 'the archive needs'}${a.maxBytes !== undefined ? ' up to' : ''}`;
  const need = a.maxBytes ?? a.bytes;
  throw new FerryError('TOO_LARGE', `${what} ${humanSize(need)} (${need} bytes) but --media is ${humanSize(a.media.size)} (${a.media.size} bytes): ${humanSize(a.media.over)} (${a.media.over} bytes) too much; nothing was written`, {
    hint: 'save fewer images, save a delta with --exclude-from, or use a larger medium',
  });
}
