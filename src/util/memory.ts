import v8 from 'node:v8';
import vm from 'node:vm';

/**
 * Streaming a large blob allocates a fresh Buffer per read; V8 collects them only once about
 * 64 MiB of such external memory has piled up, which doubles ferry's peak RSS. A minor GC every
 * 4 MiB streamed (well under a millisecond on ferry's small heap) frees them while they are young.
 * Buffers that waited in a stream queue across two minors are promoted, and only a major GC frees
 * them: one runs when external memory has grown SLACK above what the last major left live. Majors
 * cost ~12 ms each; on a fixed schedule (every 32 MiB) they took 0.8 s of CPU per GiB pulled,
 * and paced by what is actually left over a 1 GiB pull takes 3.5 s instead of 4.3 s at the same
 * peak RSS. Every verifying stream reports its bytes here (measured on a 1 GiB pull: peak RSS
 * 185 → 115 MiB without any of this, ~100 with it).
 */
const MINOR = 4 * 1024 * 1024;
const SLACK = 8 * 1024 * 1024;
type Gc = (o: { type: 'minor' | 'major'; execution: 'sync' }) => void;
let collect: Gc | undefined | null;
let sinceMinor = 0;
/** External memory left live after the last major GC (or the least seen since). */
let floor = Infinity;

function collector(): Gc | null {
  if (collect === undefined) {
    try {
      v8.setFlagsFromString('--expose-gc');
      collect = vm.runInNewContext('gc') as Gc;
    } catch {
      collect = null;
    }
  }
  return collect;
}

let total = 0;

/** Bytes reported so far: each byte a command moves should be counted once (see ArchiveOutput). */
export function streamedTotal(): number {
  return total;
}

/** Counts streamed bytes; now and then frees the buffers they came in. */
export function streamed(bytes: number): void {
  total += bytes;
  sinceMinor += bytes;
  if (sinceMinor < MINOR) return;
  sinceMinor = 0;
  const gc = collector();
  if (!gc) return;
  gc({ type: 'minor', execution: 'sync' });
  const external = v8.getHeapStatistics().external_memory;
  if (external < floor) floor = external;
  if (external - floor < SLACK) return;
  gc({ type: 'major', execution: 'sync' });
  floor = v8.getHeapStatistics().external_memory;
}
