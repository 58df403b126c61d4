import { join } from 'node:path';
import { describe } from 'vitest';
import { tempDir } from './helpers/fs.js';
import { registrySuite } from './helpers/registry-suite.js';
import { startDistribution } from './helpers/registry.js';
import { startServe } from './helpers/serve.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry');

// One suite, two registries: ferry's client is held to the same behaviour against both.
describe.skipIf(!distribution)('CNCF distribution registry', () => {
  registrySuite('distribution', () => startDistribution(), { deletesTags: false });
});

describe('ferry serve', () => {
  registrySuite('ferry serve', async () => {
    const served = await startServe(join(await tempDir('ferry-serve-suite-'), 'store'));
    return { host: served.host, stop: async () => void (await served.stop()) };
  }, { deletesTags: true });
});
