import type { Reference } from '../../oci/reference.js';
import type { RegistrySettings } from '../transport.js';
import { RegistryClient } from './client.js';
import { Http } from './http.js';
import { RegistryRepository } from './repository.js';

const clients = new Map<string, RegistryClient>();
let http: { key: string; http: Http } | undefined;

/** One pooled HTTP layer and one client per registry for the whole process, so tokens are reused. */
export function registryClient(domain: string, settings: RegistrySettings = {}): RegistryClient {
  const key = JSON.stringify([!!settings.insecure, !!settings.plainHttp, settings.timeoutMs]);
  if (!http || http.key !== key) {
    const t = settings.timeoutMs;
    const timeouts = t === undefined ? {} : { connectTimeoutMs: Math.min(t, 30_000), headersTimeoutMs: t, idleTimeoutMs: t };
    http = { key, http: new Http({ insecureTls: settings.insecure, debug: settings.debug, onRetry: settings.onRetry, ...timeouts }) };
    clients.clear();
  }
  let c = clients.get(domain);
  if (!c) {
    c = new RegistryClient({ domain, http: http.http, plainHttp: settings.insecure || settings.plainHttp });
    clients.set(domain, c);
  }
  return c;
}

export async function closeRegistryClients(): Promise<void> {
  clients.clear();
  const h = http;
  http = undefined;
  await h?.http.close();
}

export function openRepository(ref: Reference, settings?: RegistrySettings): RegistryRepository {
  return new RegistryRepository(registryClient(ref.domain, settings), ref.path);
}
