import { familiarName, parseReference } from '../oci/reference.js';
import type { TagName } from '../types.js';

/** Store name -> digest (an absent or unreadable store names nothing): taken before and after a command that names images. */
export async function namedDigests(storeDir: string): Promise<Map<string, string>> {
  const { OciLayout } = await import('../locations/layout.js');
  const store = await OciLayout.open(storeDir).catch(() => undefined);
  if (!store) return new Map();
  try {
    return new Map((await store.entries().catch(() => [])).flatMap((e) => (e.name ? [[e.name, e.descriptor.digest] as [string, string]] : [])));
  } finally {
    await store.close();
  }
}

/**
 * `NAME named sha256:… until now` for each name that was another image's before, and whether that
 * image has a name left: as docker load and ferry tag say it (load and import said nothing).
 */
export function movedNames(before: Map<string, string>, after: Map<string, string>, images: Array<{ digest: string; names: TagName[] }>): string[] {
  const lines: string[] = [];
  for (const i of images) {
    for (const n of i.names) {
      const previous = n.name === undefined ? undefined : before.get(n.name);
      if (!previous || previous === i.digest) continue;
      const left = [...after.values()].includes(previous) ? '' : ' (it has no other name now: the next ferry gc or rmi deletes it)';
      lines.push(`${familiarName(parseReference(n.name!))} named ${previous} until now${left}`);
    }
  }
  return lines;
}
