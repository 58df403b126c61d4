import { ANNOTATION_SOURCE_INDEX } from '../copy.js';
import { formatPlatform, type PlatformSelection } from '../oci/platform.js';

/**
 * On each image sync writes into a layout or an archive: the platform selection it was copied with
 * (`all`, or e.g. `linux/arm64`). The same source digest copied with another selection is another
 * image, so a changed `--platform` copies the tag again.
 */
export const ANNOTATION_SYNC_PLATFORMS = 'dev.ferry.sync.platforms';

export function selectionKey(p: PlatformSelection | undefined): string {
  return !p || p === 'all' ? 'all' : p.map(formatPlatform).join(',');
}

/** What a destination entry says about how it was copied. */
export interface EntrySelection {
  /** ANNOTATION_SYNC_PLATFORMS, when the entry has it. */
  recorded?: string;
  /** The entry is some platforms of its source index (ANNOTATION_SOURCE_INDEX). */
  narrowed: boolean;
}

export function entrySelection(annotations: Record<string, string> | undefined): EntrySelection {
  return { recorded: annotations?.[ANNOTATION_SYNC_PLATFORMS], narrowed: annotations?.[ANNOTATION_SOURCE_INDEX] !== undefined };
}

/** Whether what the destination holds (`s`; undefined: it cannot say) was copied with selection `sel`. */
export function sameSelection(s: EntrySelection | undefined, sel: string): boolean {
  if (!s) return true;
  if (s.recorded !== undefined) return s.recorded === sel;
  // Written before selections were recorded: only a narrowed copy is known not to be the whole index.
  return !(sel === 'all' && s.narrowed);
}
