import type { Readable } from 'node:stream';
import type { Descriptor } from './oci/manifest.js';

/** How a root should be named at the destination: the tag plus, for stores, the full image name. */
export interface TagName {
  tag: string;
  /** Full normalised reference, e.g. docker.io/library/alpine:3.20 (recorded as io.containerd.image.name). */
  name?: string;
}

export interface FetchOptions {
  signal?: AbortSignal;
}

/** Where images come from. Bytes are returned unverified; the copy engine verifies them. */
export interface Source {
  /** Tag, name or digest -> the root descriptor. */
  resolve(ref: string): Promise<Descriptor>;
  fetch(d: Descriptor, o?: FetchOptions): Promise<Readable>;
  close(): Promise<void>;
}

export interface PutOptions {
  signal?: AbortSignal;
}

/** Where images go. */
export interface Sink {
  readonly caps: { concurrent: boolean; indexes: boolean };
  has(d: Descriptor): Promise<boolean>;
  /**
   * Stores a blob. The body errors if its content is wrong; the sink must then leave nothing
   * behind, and it must publish only once the body has ended cleanly.
   */
  put(d: Descriptor, body: Readable, o?: PutOptions): Promise<void>;
  /** Names a root; takes effect at commit(). */
  tag(root: Descriptor, name: TagName | undefined): Promise<void>;
  commit(): Promise<void>;
  close(): Promise<void>;
}
