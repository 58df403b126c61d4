import type { IncomingMessage, ServerResponse } from 'node:http';
import type { OciLayout } from '../locations/layout.js';
import type { RepoKey } from './names.js';
import type { StoreView } from './store-view.js';
import type { Uploads } from './uploads.js';

/** What every handler shares for the server's lifetime. */
export interface ServeContext {
  layout: OciLayout;
  view: StoreView;
  uploads: Uploads;
  readOnly: boolean;
  /** When this run last refreshed a blob's mtime (see blobs.ts `refresh`). */
  refreshed: Map<string, number>;
}

/** One request to a repository endpoint; `name` is validated and `key` is its store name. */
export interface RepoRequest {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  name: string;
  key: RepoKey;
  /** Who asks: the authenticated user, else the client's address (per-client upload limit). */
  client: string;
}
