import type { Readable } from 'node:stream';
import type { Prefix } from './blob/verify.js';
import type { Descriptor } from './oci/manifest.js';

/** How a root should be named at the destination: the tag plus, for stores, the full image name. */
export interface TagName {
  tag: string;
  /** Full normalised reference, e.g. docker.io/library/alpine:3.20 (recorded as io.containerd.image.name). */
  name?: string;
}

export interface FetchOptions {
  signal?: AbortSignal;
  /** Start at this byte (resuming an upload or download); the caller verifies the whole. */
  offset?: number;
}

/** Where images come from. Bytes are returned unverified; the copy engine verifies them. */
export interface Source {
  /** Tag, name or digest -> the root descriptor. */
  resolve(ref: string): Promise<Descriptor>;
  fetch(d: Descriptor, o?: FetchOptions): Promise<Readable>;
  /** Optional: manifests whose `subject` is `d` (and, for registries, cosign-style tags naming it). */
  referrers?(d: Descriptor, o?: FetchOptions): Promise<Referrer[]>;
  /** Set when blobs are best fetched one at a time, in order (a compressed archive read as it streams). */
  readonly sequential?: boolean;
  /** Where the bytes come from, for messages about a blob that does not verify (an archive's path). */
  readonly label?: string;
  close(): Promise<void>;
}

export interface Referrer {
  descriptor: Descriptor;
  /** Set when the referrer was found under a tag (`sha256-<hex>.sig`), to keep that name. */
  tag?: string;
}

export interface PutOptions {
  signal?: AbortSignal;
  /** Re-reads the blob's source bytes from an offset, so a sink can resume an interrupted upload. */
  reopen?: (offset: number) => Promise<Readable>;
  /** The body starts at this byte: the sink appends it to the prefix its resumable() offered. */
  resumeFrom?: number;
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
  /**
   * Optional: bytes of `d` kept from an interrupted earlier transfer (a crash, a broken link), with
   * their hash, so the engine fetches only the rest. Claimed by the caller: pass resumeFrom to put().
   */
  resumable?(d: Descriptor, o?: { signal?: AbortSignal }): Promise<Prefix | undefined>;
  /** Optional: makes a blob present without sending it (registry cross-repository mount). */
  mount?(d: Descriptor, o?: PutOptions): Promise<boolean>;
  /**
   * Optional, for dry runs: takes a blob's place as put() would, without its bytes (`bytes` are
   * given for manifests). Only a sink that measures rather than writes has it; copy() then also
   * names and commits on it.
   */
  reserve?(d: Descriptor, bytes?: Uint8Array): Promise<void>;
  /** Names a root; takes effect at commit(). */
  tag(root: Descriptor, name: TagName | undefined): Promise<void>;
  commit(): Promise<void>;
  close(): Promise<void>;
}
