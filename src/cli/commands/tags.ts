import type { CommandModule } from 'yargs';
import { interrupt, out, printJson, registrySettings, type GlobalArgs } from '../context.js';
import { numberOption } from '../numbers.js';

const pageSize = numberOption('--page-size', { integer: true, min: 1, unit: 'entries' }, 'ask for pages of N entries (for registries that cap or time out on one long list); all pages are read');

export const tagsCommand: CommandModule<GlobalArgs, { repository: string; 'page-size'?: number } & GlobalArgs> = {
  command: 'tags <repository>',
  describe: 'List every tag of a registry repository (all pages)',
  builder: (y) =>
    y
      .positional('repository', { type: 'string', demandOption: true, describe: 'REGISTRY/NAME, e.g. ghcr.io/org/app' })
      .option('page-size', pageSize)
      .example('ferry tags --page-size 100 registry.internal:5000/team/app', 'read the list 100 tags per request'),
  handler: async (args) => {
    const { listTags } = await import('../../registry-ops.js');
    const tags = await listTags(args.repository, { registry: registrySettings(args), signal: interrupt.signal, pageSize: args['page-size'] });
    if (args.json) return printJson(tags);
    for (const t of tags) out(t);
  },
};

export const catalogCommand: CommandModule<GlobalArgs, { registry: string; 'page-size'?: number } & GlobalArgs> = {
  command: 'catalog <registry>',
  describe: 'List the repositories of a registry (where the registry allows it)',
  builder: (y) =>
    y.positional('registry', { type: 'string', demandOption: true, describe: 'registry host, e.g. registry.internal:5000' }).option('page-size', pageSize),
  handler: async (args) => {
    const { listCatalog } = await import('../../registry-ops.js');
    const repos = await listCatalog(args.registry, { registry: registrySettings(args), signal: interrupt.signal, pageSize: args['page-size'] });
    if (args.json) return printJson(repos);
    for (const r of repos) out(r);
  },
};
