import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { publishBytes } from '../blob/publish.js';
import { warn } from '../log.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { stateDir } from '../util/state-dir.js';
import { mkdirs } from '../util/mkdirs.js';

/**
 * What sync last put into a registry destination: for each tag, the source digest it copied (or
 * found already there). With it, a run where nothing changed needs no HEAD at the destination,
 * only its tag list, which still catches a tag deleted there. One small file per destination
 * repository under $FERRY_STATE_DIR/sync; losing it only costs the HEADs again. An archive
 * destination also records a stamp of the file it describes (see archive-target.ts).
 */
export class SyncState {
  private changed = false;

  private constructor(
    private readonly path: string,
    private readonly destination: string,
    private readonly tags: Map<string, Digest>,
    private stampText: string | undefined,
    private platformsText: string | undefined,
    private readonly leftTags: Set<string>,
    private rootsList: string[] | undefined,
  ) {}

  static async open(destination: string): Promise<SyncState> {
    const key = createHash('sha256').update(destination).digest('hex');
    const path = join(stateDir(), 'sync', `${key}.json`);
    const tags = new Map<string, Digest>();
    let stamp: string | undefined;
    let platforms: string | undefined;
    const left = new Set<string>();
    let roots: string[] | undefined;
    let text: string | undefined;
    try {
      text = await readFile(path, 'utf8');
    } catch {
      // never synced here, or no state directory: every tag is checked with a HEAD
    }
    if (text !== undefined) {
      try {
        const doc = JSON.parse(text) as { destination?: unknown; tags?: Record<string, unknown>; stamp?: unknown; platforms?: unknown; left?: unknown; roots?: unknown };
        if (doc.destination !== destination || typeof doc.tags !== 'object' || doc.tags === null) throw new Error('not a sync state file');
        for (const [tag, d] of Object.entries(doc.tags)) if (isDigest(d)) tags.set(tag, d);
        if (typeof doc.stamp === 'string') stamp = doc.stamp;
        if (typeof doc.platforms === 'string') platforms = doc.platforms;
        if (Array.isArray(doc.left)) for (const t of doc.left) if (typeof t === 'string') left.add(t);
        if (Array.isArray(doc.roots)) roots = doc.roots.filter(isDigest);
      } catch (e) {
        warn(`ignoring the sync state ${path} (${(e as Error).message}); every tag is checked at the destination`);
      }
    }
    return new SyncState(path, destination, tags, stamp, platforms, left, roots);
  }

  /** What the destination looked like when the tags were recorded (archives: the file's identity). */
  get stamp(): string | undefined {
    return this.stampText;
  }

  /**
   * The platform selection the recorded digests were copied with (`all`, or e.g. `linux/arm64`);
   * undefined in state files older than this field. The same source digest copied with another
   * selection is another image at the destination.
   */
  get platforms(): string | undefined {
    return this.platformsText;
  }

  set platforms(value: string | undefined) {
    if (value === this.platformsText) return;
    this.platformsText = value;
    this.changed = true;
  }

  /**
   * Archives: the digest of every image in the file, referrers included, as `stamp` last saw it
   * (undefined in state files older than this field). Lets --referrers tell what the archive
   * holds without reading it.
   */
  get roots(): readonly string[] | undefined {
    return this.rootsList;
  }

  set roots(value: readonly string[] | undefined) {
    const next = value && [...new Set(value)].sort();
    if (JSON.stringify(next) === JSON.stringify(this.rootsList)) return;
    this.rootsList = next;
    this.changed = true;
  }

  /** Replaces every tag and the stamp. */
  reset(tags: Map<string, Digest>, stamp: string | undefined): void {
    this.tags.clear();
    for (const [t, d] of tags) this.tags.set(t, d);
    this.stampText = stamp;
    this.changed = true;
  }

  /** Tags remembered. */
  get size(): number {
    return this.tags.size;
  }

  /** Every tag remembered, with its source digest. */
  all(): ReadonlyMap<string, Digest> {
    return this.tags;
  }

  /** The source digest last copied to (or confirmed at) `tag`. */
  get(tag: string): Digest | undefined {
    return this.tags.get(tag);
  }

  set(tag: string, digest: Digest): void {
    if (this.tags.get(tag) === digest) return;
    this.tags.set(tag, digest);
    this.changed = true;
  }

  delete(tag: string): void {
    if (this.tags.delete(tag)) this.changed = true;
  }

  /**
   * Tags at the destination that sync did not write, gone upstream, which `--prune` leaves alone:
   * each is reported the first time only. Replaces the set recorded; returns the tags not in it.
   */
  noteLeft(tags: string[]): string[] {
    const fresh = tags.filter((t) => !this.leftTags.has(t));
    if (fresh.length === 0 && tags.length === this.leftTags.size) return fresh;
    this.leftTags.clear();
    for (const t of tags) this.leftTags.add(t);
    this.changed = true;
    return fresh;
  }

  /** Best effort, like the upload notes: a sync never fails because its state could not be kept. */
  async save(): Promise<void> {
    if (!this.changed) return;
    try {
      await mkdirs(join(stateDir(), 'sync'), 0o700);
      const tags = Object.fromEntries([...this.tags.keys()].sort().map((t) => [t, this.tags.get(t)]));
      const doc = {
        destination: this.destination,
        tags,
        ...(this.stampText === undefined ? {} : { stamp: this.stampText }),
        ...(this.platformsText === undefined ? {} : { platforms: this.platformsText }),
        ...(this.leftTags.size === 0 ? {} : { left: [...this.leftTags].sort() }),
        ...(this.rootsList === undefined ? {} : { roots: this.rootsList }),
      };
      await publishBytes(this.path, JSON.stringify(doc, null, 1) + '\n', { mode: 0o600 });
      this.changed = false;
    } catch (e) {
      warn(`could not keep the sync state in ${this.path}: ${(e as Error).message}; the next run checks every tag at the destination`);
    }
  }
}
