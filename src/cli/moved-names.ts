import { familiarName, parseReference } from '../oci/reference.js';
import type { MovedName } from '../store.js';

/** `NAME named sha256:… until now`, as docker load and ferry tag say a name moved to another image. */
export function movedLine(m: MovedName): string {
  const left = m.orphaned ? ' (it has no other name now: the next ferry gc or rmi deletes it)' : '';
  return `${familiarName(parseReference(m.name))} named ${m.previous} until now${left}`;
}
