import type { MovedName } from '../../store.js';
import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { movedLine } from '../moved-names.js';
import { importImage, parseSourceDateEpoch, type LayerCompression } from '../../fs/import.js';
import { shortDigest } from '../../oci/digest.js';
import { parsePlatform } from '../../oci/platform.js';
import { humanSize, interrupt, out, printJson, status, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  source?: string;
  name?: string;
  dir?: string;
  to?: string;
  change?: string[];
  message?: string;
  platform?: string;
  compress?: LayerCompression;
  'source-date-epoch'?: string;
}

export const importCommand: CommandModule<GlobalArgs, Args> = {
  command: 'import [source] [name]',
  describe: 'Make a one-layer image from a root-filesystem tar (FILE or - for stdin) or a directory (--dir)',
  builder: (y) =>
    y
      .positional('source', { type: 'string', describe: 'tar file (plain, gzip or zstd), or - for stdin' })
      .positional('name', { type: 'string', describe: 'NAME[:TAG] for the image (a store name, or any location when --to is not given)' })
      .option('dir', { type: 'string', describe: 'import this directory (tarred deterministically) instead of a tar file' })
      .option('to', { type: 'string', describe: 'where to put the image (default: the store), e.g. oci:DIR[:TAG]' })
      .option('change', { alias: 'c', type: 'string', array: true, describe: 'Dockerfile instruction for the config: CMD, ENTRYPOINT, ENV, WORKDIR, USER, EXPOSE, LABEL, VOLUME, STOPSIGNAL' })
      .option('message', { alias: 'm', type: 'string', describe: 'history comment' })
      .option('platform', { type: 'string', describe: 'OS/ARCH[/VARIANT] recorded in the config (default: this machine)' })
      .option('compress', { choices: ['gzip', 'zstd', 'none'] as const, default: 'gzip' as const, describe: 'layer compression' })
      .option('source-date-epoch', { type: 'string', describe: 'fixed creation time (seconds since the epoch) for reproducible output; default $SOURCE_DATE_EPOCH' }),
  handler: async (args) => {
    // yargs hands a lone "-" over as an empty string
    let source = args.source === '' ? '-' : args.source;
    let name = args.name;
    if (args.dir !== undefined) {
      if (name !== undefined) throw new FerryError('USAGE', 'with --dir, give only the image name');
      name = source;
      source = undefined;
    } else if (source === undefined) {
      throw new FerryError('USAGE', 'name a tar file to import ("-" for stdin), or use --dir DIR');
    }
    if (source === '-' && process.stdin.isTTY) {
      throw new FerryError('USAGE', 'refusing to read a tar archive from a terminal', { hint: 'pipe the archive in, or name the file' });
    }
    const epoch = args['source-date-epoch'] !== undefined
      ? parseSourceDateEpoch(args['source-date-epoch'], '--source-date-epoch')
      : parseSourceDateEpoch(process.env.SOURCE_DATE_EPOCH);
    const moved: MovedName[] = [];
    const report = await importImage({
      input: source,
      dir: args.dir,
      name,
      to: args.to,
      storeDir: args.store,
      changes: args.change,
      message: args.message,
      platform: args.platform ? parsePlatform(args.platform) : undefined,
      compression: args.compress,
      sourceDateEpoch: epoch,
      signal: interrupt.signal,
      onMoved: (m) => moved.push(m),
      onEvent: (e) => {
        if (e.type === 'blob-done') status(args, `${shortDigest(e.digest)}: Stored ${humanSize(e.size)}`);
      },
    });
    if (args.json) return printJson(report);
    const names = report.names.map((n) => n.name ?? n.tag);
    // Into the store the destination is the name itself: "in NAME" would only repeat it.
    const where = args.to ? ` in ${report.destination}` : ' into the store';
    out(`Imported ${args.dir ?? source} as ${names.length ? names.join(', ') : '(untagged)'}${where}`);
    out(`Digest: ${report.digest}`);
    for (const m of moved) out(movedLine(m));
  },
};
