import { describe } from 'vitest';
import { registrySuite } from './helpers/registry-suite.js';
import { startDistribution } from './helpers/registry.js';
import { hasTool } from './helpers/tools.js';

const distribution = hasTool('docker-registry');

describe.skipIf(!distribution)('CNCF distribution registry', () => {
  registrySuite('distribution', () => startDistribution());
});
