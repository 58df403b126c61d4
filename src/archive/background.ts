import type { Digest } from '../oci/digest.js';

/**
 * A load's stores of blobs, a few at once, while the archive is read on: a blob held in memory
 * written, fsynced and renamed (or uploaded), or a streamed one's fsync and rename. Waiting for
 * each before reading on left a load of many small layers idle half the time. Bounded in count
 * and in bytes held; the first failure is kept and thrown by the next `add` or by `settle`.
 */
export class BackgroundPuts {
  /** Each store started and not finished, with the digest it stores. */
  private readonly running = new Map<Promise<void>, Digest>();
  private bytes = 0;
  private failure: { error: unknown } | undefined;

  constructor(private readonly limits = { count: 8, bytes: 16 << 20 }) {}

  /** Being stored now: the caller counts it as present. */
  has(digest: Digest): boolean {
    for (const d of this.running.values()) if (d === digest) return true;
    return false;
  }

  async add(digest: Digest, size: number, put: () => Promise<void>): Promise<void> {
    while (this.running.size > 0 && (this.running.size >= this.limits.count || this.bytes + size > this.limits.bytes)) {
      await Promise.race(this.running.keys());
    }
    this.rethrow();
    this.bytes += size;
    const p = put()
      .catch((error: unknown) => void (this.failure ??= { error }))
      .finally(() => {
        this.running.delete(p);
        this.bytes -= size;
      });
    this.running.set(p, digest);
  }

  /** Waits for every store started; throws the first that failed. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running.keys());
    this.rethrow();
  }

  private rethrow(): void {
    if (this.failure) throw this.failure.error;
  }
}
