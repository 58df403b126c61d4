import { FerryError } from '../errors.js';
import { formatReference, parseReference, type Reference } from '../oci/reference.js';
import type { Transport } from './transport.js';

// The HTTP stack loads only when a registry is used: commands that never touch one start faster.
let pool: Promise<typeof import('./registry/pool.js')> | undefined;
const loadPool = () => (pool ??= import('./registry/pool.js'));

/** Closes pooled connections, if any were opened (they would hold the process open). */
export async function closeRegistryClients(): Promise<void> {
  if (pool) await (await pool).closeRegistryClients();
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
    const repo = (await loadPool()).openRepository(ref, ctx.registry);
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
    const sink = (await loadPool()).openRepository(ref, ctx.registry);
    return {
      sink,
      digest: ref.digest,
      nameFor: (src) => {
        if (ref.digest && !explicitTag) return undefined;
        const tag = explicitTag || !src ? ref.tag! : src.tag;
        return { tag, name: formatReference({ domain: ref.domain, path: ref.path, tag }) };
      },
    };
  },
};
