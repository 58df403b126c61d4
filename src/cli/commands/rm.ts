import type { CommandModule } from 'yargs';
import { out, printJson, registrySettings, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  image: string;
  force?: boolean;
}

export const rmCommand: CommandModule<GlobalArgs, Args> = {
  command: 'rm <image>',
  describe: 'Delete a tag (docker://NAME:TAG) or a manifest with every tag on it (docker://NAME@DIGEST) from a registry',
  builder: (y) =>
    y
      .example('$0 rm docker://registry.internal:5000/team/api:old', 'delete a remote tag')
      .example('$0 rm --force docker://registry.internal:5000/team/api:old', 'delete it even if the registry must take its other tags too')
      .positional('image', { type: 'string', demandOption: true })
      .option('force', {
        alias: 'f',
        type: 'boolean',
        describe: 'where the registry deletes only whole manifests, delete the tag\'s manifest even when other tags point at it (they go too)',
      }),
  handler: async (args) => {
    const { removeRemote } = await import('../../registry-ops.js');
    const r = await removeRemote(args.image, { registry: registrySettings(args), force: args.force });
    if (args.json) printJson({ image: args.image, deleted: r.digest, removed: r.removed, ...(r.tags ? { tags: r.tags } : {}) });
    else if (r.removed === 'tag') out(`Untagged: ${args.image} (was ${r.digest})`);
    else out(`Deleted: ${r.digest}${r.tags ? ` (tags: ${r.tags.join(', ')})` : ''}`);
  },
};
