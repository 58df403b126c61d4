import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { familiarName, parseReference } from '../../oci/reference.js';
import { interrupt, out, printResult, progressPrinter, type GlobalArgs } from '../context.js';
import type { MovedName } from '../../store.js';
import { movedLine } from '../moved-names.js';

interface Args extends GlobalArgs {
  input?: string[];
  tag?: string;
}

export const loadCommand: CommandModule<GlobalArgs, Args> = {
  command: 'load',
  describe: 'Load images from an archive (docker save, OCI, ferry; plain, gzip or zstd; or a set of volumes) into the store',
  builder: (y) =>
    y
      .example('$0 load -i images.tar', 'every image of the archive, named as in it')
      .example('$0 load -i app.003.tar -i app.001.tar -i app.002.tar', 'a set of volumes, in any order')
      .example('gunzip -c legacy.tar.gz | $0 load --tag registry.internal:5000/app:1', 'from standard input, renamed')
      .option('input', { alias: 'i', type: 'string', array: true, describe: 'archive file, - for standard input, or every volume of a set (default: -)' })
      .option('tag', { alias: 't', type: 'string', describe: 'name the archive\'s only image NAME[:TAG]' }),
  handler: async (args) => {
    const { loadArchive } = await import('../../archive/operations.js');
    if (!args.input?.length && process.stdin.isTTY) {
      throw new FerryError('USAGE', 'no archive given: use -i FILE, or pipe one into standard input');
    }
    const moved: MovedName[] = [];
    const progress = progressPrinter(args);
    const report = await loadArchive({
      inputs: args.input?.length ? args.input : ['-'],
      storeDir: args.store,
      tag: args.tag,
      signal: interrupt.signal,
      onEvent: progress,
      onMoved: (m) => moved.push(m),
    }).finally(() => progress.done());
    if (args.json) return printResult(report);
    for (const i of report.images) {
      if (i.names.length === 0) out(`Loaded image ID: ${i.digest}`);
      for (const n of i.names) out(`Loaded image: ${n.name ? familiarName(parseReference(n.name)) : n.tag}`);
    }
    for (const m of moved) out(movedLine(m));
  },
};
