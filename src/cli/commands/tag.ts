import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { plainDescriptor } from '../../oci/manifest.js';
import { openStore, storeTagName } from '../../store.js';
import { printJson, status, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  source: string;
  target: string;
}

export const tagCommand: CommandModule<GlobalArgs, Args> = {
  command: 'tag <source> <target>',
  describe: 'Give a store image another name',
  builder: (y) =>
    y
      .example('$0 tag alpine:3.20 registry.internal:5000/mirror/alpine:3.20', 'another name')
      .positional('source', { type: 'string', demandOption: true, describe: 'existing image (name or digest)' })
      .positional('target', { type: 'string', demandOption: true, describe: 'new name, NAME[:TAG]' }),
  handler: async (args) => {
    const store = await openStore({ dir: args.store, write: true });
    try {
      const d = await store.resolve(args.source);
      const name = storeTagName(args.target);
      if (!name) throw new FerryError('USAGE', `"${args.target}" has no tag; a tag target must be NAME[:TAG], not a digest`);
      await store.tag({ ...plainDescriptor(d), ...(d.annotations ? { annotations: d.annotations } : {}) }, name);
      await store.commit();
      if (args.json) printJson({ digest: d.digest, name: name.name ?? name.tag });
      status(args, `Tagged ${d.digest} as ${name.name}`);
    } finally {
      await store.close();
    }
  },
};
