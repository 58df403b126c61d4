import { FerryError } from '../errors.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import { RegistryClient } from './registry/client.js';
import { Http } from './registry/http.js';
import { RegistryRepository } from './registry/repository.js';
import type { RegistrySettings, Transport } from './transport.js';

const clients = new Map<string, RegistryClient>();
let http: { key: string; http: Http } | undefined;

/** One pooled HTTP layer and one client per registry for the whole process, so tokens are reused. */
export function registryClient(domain: string, settings: RegistrySettings = {}): RegistryClient {
  const key = JSON.stringify([!!settings.insecure, !!settings.plainHttp]);
  if (!http || http.key !== key) {
    http = { key, http: new Http({ insecureTls: settings.insecure, debug: settings.debug, onRetry: settings.onRetry }) };
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

function parseRegistryRef(rest: string): Reference {
  if (rest.startsWith('/')) throw new FerryError('USAGE', `docker://${rest}: write docker://HOST/NAME[:TAG], with no extra slash`);
  return parseReference(rest);
}

/** `docker://NAME[:TAG|@DIGEST]` — a repository of a registry. */
export const registryTransport: Transport = {
  prefix: 'docker://',
  describe: 'docker://NAME[:TAG|@DIGEST]  an image in a registry',
  async openSource(rest, ctx) {
    const ref = parseRegistryRef(rest);
    const repo = openRepository(ref, ctx.registry);
    const tag = ref.tag;
    return {
      source: repo,
      ref: ref.digest ?? tag!,
      name: tag ? { tag, name: formatReference({ domain: ref.domain, path: ref.path, tag }) } : undefined,
    };
  },
  async openSink(rest, ctx) {
    const ref = parseRegistryRef(rest);
    const explicitTag = /:[\w][\w.-]*$/.test(rest.split('@')[0]!.split('/').pop() ?? '');
    const sink = openRepository(ref, ctx.registry);
    return {
      sink,
      nameFor: (src) => {
        if (ref.digest && !explicitTag) return undefined;
        const tag = explicitTag || !src ? ref.tag! : src.tag;
        return { tag, name: formatReference({ domain: ref.domain, path: ref.path, tag }) };
      },
    };
  },
};
