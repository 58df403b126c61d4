import type { CopyEvent } from '../copy.js';
import type { Digest } from '../oci/digest.js';

export interface BlobCounts {
  copied: number;
  bytesCopied: number;
  skipped: number;
  bytesSkipped: number;
}

/**
 * The blobs a sync run brought to its destinations, each once per destination however many tags
 * or jobs share it: moved if any copy of the run moved it there, else already present (it was
 * there before the run). A --dry-run plan counts the same way.
 */
export class BlobTally {
  private readonly blobs = new Map<string, { size: number; moved: boolean }>();

  note(destination: string, digest: Digest, size: number, moved: boolean): void {
    const key = `${destination} ${digest}`;
    const seen = this.blobs.get(key);
    if (seen) seen.moved ||= moved;
    else this.blobs.set(key, { size, moved });
  }

  /** A copy's event: a blob written (or mounted) is moved, one the destination had is present. */
  event(destination: string, e: CopyEvent): void {
    if (e.type === 'blob-done' || e.type === 'blob-mount') this.note(destination, e.digest, e.size, true);
    else if (e.type === 'blob-skip') this.note(destination, e.digest, e.size, false);
  }

  totals(): BlobCounts {
    const t: BlobCounts = { copied: 0, bytesCopied: 0, skipped: 0, bytesSkipped: 0 };
    for (const b of this.blobs.values()) {
      t[b.moved ? 'copied' : 'skipped']++;
      t[b.moved ? 'bytesCopied' : 'bytesSkipped'] += b.size;
    }
    return t;
  }
}
