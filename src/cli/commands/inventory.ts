import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import { outputTarget, publishBytes } from '../../blob/publish.js';
import { FerryError } from '../../errors.js';
import { defaultStoreDir } from '../../store.js';
import { dashArgument, interrupt, out, outputArgument, printJson, registrySettings, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  places?: string[];
  output?: string;
}

export const inventoryCommand: CommandModule<GlobalArgs, Args> = {
  command: 'inventory [places..]',
  describe: 'Record what a store, layout, archive or registry repository holds (for delta archives: save --exclude-from)',
  builder: (y) =>
    y
      .example('$0 inventory -o have.json', 'what the store holds')
      .example('$0 inventory /mnt/usb/base.tar -o have.json', 'what an archive already carried over')
      .positional('places', { type: 'string', array: true, describe: 'store (default), oci:DIR or a directory path, an archive file, or REGISTRY/REPOSITORY' })
      .option('output', { alias: 'o', type: 'string', describe: 'write the inventory here (default: stdout)' }),
  handler: async (args) => {
    args.output = outputArgument(args.output);
    // yargs drops a lone "-" from the places, which then meant the store.
    if (dashArgument(['-o', '--output', '--store', '--timeout'])) {
      throw new FerryError('USAGE', 'inventory reads a place, not standard input', { hint: 'save the archive to a file and name it: ferry inventory FILE -o have.json' });
    }
    if (args.output && args.output !== '-' && (await stat(args.output).catch(() => undefined))?.isDirectory()) {
      throw new FerryError('USAGE', `-o ${args.output} is a directory; the inventory is one file`, { hint: `name the file: -o ${join(args.output, 'have.json')}` });
    }
    const { buildInventory } = await import('../../sync/inventory.js');
    const inv = await buildInventory(args.places ?? [], { storeDir: args.store ?? defaultStoreDir(), registry: registrySettings(args), signal: interrupt.signal });
    if (!args.output || args.output === '-') return printJson(inv);
    await publishBytes(await outputTarget(args.output), JSON.stringify(inv, null, 2) + '\n');
    if (args.json) printJson({ output: args.output, sources: inv.sources, blobs: inv.blobs.length, manifests: inv.manifests.length, tags: Object.keys(inv.tags).length });
    else out(`${args.output}: ${inv.blobs.length} blobs, ${inv.manifests.length} manifests, ${Object.keys(inv.tags).length} tags from ${inv.sources.join(', ')}`);
  },
};
