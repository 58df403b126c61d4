import type { Digest } from '../oci/digest.js';
import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { FerryError } from '../errors.js';
import type { Sink, Source, TagName } from '../types.js';

/** What every transport may need besides its own text. */
export interface LocationContext {
  /** The store, for plain image names. */
  storeDir: string;
  signal?: AbortSignal;
  registry?: RegistrySettings;
}

/** How to talk to registries (`docker://`); see src/locations/registry/. */
export interface RegistrySettings {
  /** Skip TLS verification and allow plain http for every registry. */
  insecure?: boolean;
  /** Allow plain http for every registry (loopback registries may always use it). */
  plainHttp?: boolean;
  /** Give up on a connection, or a response, that stays silent this long (default 60 s). */
  timeoutMs?: number;
  /** Request lines for --debug (never headers or secrets). */
  debug?: (line: string) => void;
  onRetry?: (info: { url: string; attempt: number; delayMs: number; reason: string }) => void;
}

export interface OpenedSource {
  source: Source;
  /** What to resolve at the source (tag, name or digest). */
  ref: string;
  /** The image's name as the source records it, handed to destinations that name none. */
  name?: TagName;
}

export interface OpenedSink {
  sink: Sink;
  /** The name the copied image gets here, given the source's name. */
  nameFor(sourceName: TagName | undefined): TagName | undefined;
  /** A digest the destination names (`docker://NAME@DIGEST`): the copied image must be that one. */
  digest?: Digest;
}

/**
 * One way of reaching images (`oci:`, `docker://`, `oci-archive:` …). A transport gets the text
 * after its prefix and opens a Source or a Sink; the engine does the rest.
 */
export interface Transport {
  prefix: string;
  describe: string;
  openSource(rest: string, ctx: LocationContext): Promise<OpenedSource>;
  openSink(rest: string, ctx: LocationContext): Promise<OpenedSink>;
}

/**
 * Splits `PATH[:REF]`: the reference follows the last ':' unless that part looks like a path.
 * Used by the file-based transports (oci:, oci-archive:).
 */
export function splitPathRef(text: string, example: string): { path: string; ref?: string } {
  if (text === '') throw new FerryError('USAGE', `location needs a path: ${example}`);
  const i = text.lastIndexOf(':');
  if (i > 0 && !text.slice(i + 1).includes('/')) {
    const ref = text.slice(i + 1);
    if (ref === '') throw new FerryError('USAGE', `location "${text}" ends with ':' but names no tag`);
    return { path: text.slice(0, i), ref };
  }
  return { path: text };
}

/**
 * `PATH[:REF]` where either side may hold ':' (`oci:/backup:team/app:1`, a directory named after
 * a time). The first split whose path exists wins; for a path not there yet, the split whose
 * parent directory is deepest among those that exist; failing both, splitPathRef's rule. Splitting
 * by rule alone sent `oci:/backup:team/app:1` into a new directory `/backup:team/app`. `isThere`
 * says what exists (an archive transport counts a pattern that matches volumes).
 */
export async function locatePathRef(text: string, example: string, isThere: (path: string) => Promise<boolean> = exists): Promise<{ path: string; ref?: string }> {
  if (text === '' || text.endsWith(':') || !text.includes(':')) return splitPathRef(text, example);
  const candidates: Array<{ path: string; ref?: string }> = [];
  for (let i = text.indexOf(':'); i > 0; i = text.indexOf(':', i + 1)) candidates.push({ path: text.slice(0, i), ref: text.slice(i + 1) });
  // `DIR@sha256:…` as well as `DIR:sha256:…`.
  const at = /@([a-z0-9]+:[0-9a-f]{32,})$/.exec(text);
  if (at && at.index > 0) candidates.push({ path: text.slice(0, at.index), ref: at[1]! });
  candidates.push({ path: text });
  const kinds = await Promise.all(candidates.map(async (c) => ({ self: await isThere(c.path), parent: await exists(dirname(c.path)) })));
  const existing = candidates.findIndex((_, i) => kinds[i]!.self);
  if (existing >= 0) return candidates[existing]!;
  let best = -1;
  for (const [i, c] of candidates.entries()) {
    if (kinds[i]!.parent && (best < 0 || dirname(c.path).length > dirname(candidates[best]!.path).length)) best = i;
  }
  return best >= 0 ? candidates[best]! : splitPathRef(text, example);
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(() => true, () => false);
}
