import type { CommandModule } from 'yargs';
import { out, printJson, registrySettings, type GlobalArgs } from '../context.js';

export const rmCommand: CommandModule<GlobalArgs, { image: string } & GlobalArgs> = {
  command: 'rm <image>',
  describe: 'Delete a manifest from a registry (docker://NAME:TAG or @DIGEST; every tag on it goes too)',
  builder: (y) =>
    y
      .example('$0 rm docker://registry.internal:5000/team/api:old', 'delete a remote manifest')
      .positional('image', { type: 'string', demandOption: true }),
  handler: async (args) => {
    const { removeRemote } = await import('../../registry-ops.js');
    const digest = await removeRemote(args.image, { registry: registrySettings(args) });
    if (args.json) printJson({ image: args.image, deleted: digest });
    else out(`Deleted: ${digest}`);
  },
};
