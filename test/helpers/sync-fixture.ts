import { afterAll, beforeAll } from 'vitest';
import { copy } from '../../src/copy.js';
import { OciLayout } from '../../src/locations/layout.js';
import { closeRegistryClients, openRepository } from '../../src/locations/registry/pool.js';
import { parseReference } from '../../src/oci/reference.js';
import { startFaultProxy, type FaultProxy } from './fault-proxy.js';
import { TESTDATA } from './fs.js';
import { startDistribution, type RunningRegistry } from './registry.js';

/** Pushes testdata image `image` to host/repo under every tag given, in one copy. */
export async function publish(host: string, repo: string, image: string, tags: string[]): Promise<void> {
  const dst = openRepository(parseReference(`${host}/${repo}`));
  await copy(await OciLayout.open(TESTDATA), dst, [{ ref: image, names: tags.map((tag) => ({ tag })) }]);
}

export interface ProxiedRegistry {
  reg: RunningRegistry;
  /** Between ferry and the registry: sees every request, injects faults. */
  proxy: FaultProxy;
  /** Requests the proxy saw after mark `n` (`proxy.seen.length` taken earlier). */
  since(n: number): FaultProxy['seen'];
}

/**
 * For the describe block it is called in: distribution behind a fault proxy, seeded by `seed`
 * with the registry's own host (not the proxy's). Fields are set once beforeAll has run.
 */
export function proxiedRegistry(seed: (host: string) => Promise<void>): ProxiedRegistry {
  const env = { since: (n: number) => env.proxy.seen.slice(n) } as ProxiedRegistry;
  beforeAll(async () => {
    env.reg = await startDistribution();
    env.proxy = await startFaultProxy(env.reg.host);
    await seed(env.reg.host);
  }, 120_000);
  afterAll(async () => {
    await closeRegistryClients();
    await env.proxy?.stop();
    await env.reg?.stop();
  });
  return env;
}
