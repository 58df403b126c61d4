import type { CommandModule } from 'yargs';
import { interrupt, out, printJson, registrySettings, type GlobalArgs } from '../context.js';

export const tagsCommand: CommandModule<GlobalArgs, { repository: string } & GlobalArgs> = {
  command: 'tags <repository>',
  describe: 'List every tag of a registry repository (all pages)',
  builder: (y) => y.positional('repository', { type: 'string', demandOption: true, describe: 'REGISTRY/NAME, e.g. ghcr.io/org/app' }),
  handler: async (args) => {
    const { listTags } = await import('../../registry-ops.js');
    const tags = await listTags(args.repository, { registry: registrySettings(args), signal: interrupt.signal });
    if (args.json) return printJson(tags);
    for (const t of tags) out(t);
  },
};

export const catalogCommand: CommandModule<GlobalArgs, { registry: string } & GlobalArgs> = {
  command: 'catalog <registry>',
  describe: 'List the repositories of a registry (where the registry allows it)',
  builder: (y) => y.positional('registry', { type: 'string', demandOption: true, describe: 'registry host, e.g. registry.internal:5000' }),
  handler: async (args) => {
    const { listCatalog } = await import('../../registry-ops.js');
    const repos = await listCatalog(args.registry, { registry: registrySettings(args), signal: interrupt.signal });
    if (args.json) return printJson(repos);
    for (const r of repos) out(r);
  },
};
