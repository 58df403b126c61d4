import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { parsePlatformSelection } from '../../oci/platform.js';
import { humanSize, interrupt, out, outputArgument, printResult, progressPrinter, registrySettings, status, stdoutCarriesData, type GlobalArgs } from '../context.js';
import { numberOption } from '../numbers.js';
import { printPlan } from '../plan.js';

interface Args extends GlobalArgs {
  images: string[];
  output: string;
  format: 'docker' | 'oci';
  compress?: 'gzip' | 'zstd' | 'none';
  level?: number;
  'compress-layers'?: 'gzip' | 'zstd' | 'none';
  'volume-size'?: string;
  force?: boolean;
  platform?: string;
  'exclude-from'?: string;
  'dry-run'?: boolean;
  media?: string;
}

export const saveCommand: CommandModule<GlobalArgs, Args> = {
  command: 'save <images..>',
  describe: 'Write images to an archive that is both an OCI layout and docker-loadable (or pure OCI)',
  builder: (y) =>
    y
      .example('$0 save alpine:3.20 example.com/team/api:2 -o images.tar', 'one archive that docker load and OCI tools both read')
      .example('$0 save docker://registry.internal:5000/app:1 -o app.tar.zst', 'straight from a registry, zstd-compressed')
      .example('$0 save app:1 -o /mnt/fat32/app.tar --volume-size 4G', 'app.001.tar, app.002.tar, …')
      .example('$0 save app:1 db:2 -o /mnt/usb/set.tar --media 32GB --dry-run', 'what would be written, and whether it fits a stick sold as 32 GB')
      .positional('images', { type: 'string', array: true, demandOption: true, describe: 'store names, oci:DIR[:TAG], docker://NAME[:TAG], archives' })
      .option('output', { alias: 'o', type: 'string', demandOption: true, describe: 'archive file (.tar, .tar.gz/.tgz, .tar.zst), or - for stdout' })
      .option('format', { choices: ['docker', 'oci'] as const, default: 'docker' as const, describe: 'docker: OCI layout + manifest.json (docker load reads it); oci: OCI layout only' })
      .option('compress', { choices: ['gzip', 'zstd', 'none'] as const, describe: 'compress the whole archive (default: from the -o suffix)' })
      .option('level', numberOption('--level', { integer: true }, 'compression level (gzip 1-9, zstd 1-22)'))
      .option('compress-layers', { choices: ['gzip', 'zstd', 'none'] as const, describe: 'recompress layers (CHANGES layer and image digests)' })
      .option('volume-size', { type: 'string', describe: 'cut into volumes smaller than this size (4G suits FAT32): NAME.001.tar, NAME.002.tar, …' })
      .option('force', { type: 'boolean', describe: 'replace an existing output file' })
      .option('platform', { type: 'string', describe: 'OS/ARCH[/VARIANT], a comma list, or "all" (default: all)' })
      .option('exclude-from', { type: 'string', describe: 'a delta: leave out every blob this inventory lists (ferry inventory on the receiving side)' })
      .option('dry-run', { type: 'boolean', describe: 'print what would be written (images, blobs, bytes, volumes); write nothing' })
      .option('media', { type: 'string', describe: 'size of the medium (32GB: decimal, as sold; 32G: GiB): refuse, before writing, a save that would not fit' }),
  handler: async (args) => {
    args.output = outputArgument(args.output)!;
    if (args.output === '-' && !args['dry-run']) stdoutCarriesData();
    const { planSave, saveImages } = await import('../../archive/operations.js');
    const { parseSize } = await import('../../archive/volumes.js');
    // Only on demand: the inventory code loads the registry client (undici), a slow import.
    const inventory = args['exclude-from'] ? await (await import('../../sync/inventory.js')).readInventoryFile(args['exclude-from']) : undefined;
    const options = {
      images: args.images,
      output: args.output,
      format: args.format,
      compression: args.compress,
      level: args.level,
      compressLayers: args['compress-layers'],
      volumeSize: args['volume-size'] !== undefined ? parseSize(args['volume-size']) : undefined,
      media: args.media !== undefined ? parseSize(args.media) : undefined,
      force: args.force,
      platforms: args.platform ? parsePlatformSelection(args.platform) : 'all' as const,
      storeDir: args.store,
      registry: registrySettings(args),
      signal: interrupt.signal,
      exclude: inventory?.blobs,
      deltaBase: inventory?.base,
    };
    if (args['dry-run']) return printPlan(args, await planSave(options));
    if (args.output === '-' && process.stdout.isTTY) {
      throw new FerryError('USAGE', 'refusing to write an archive to a terminal', { hint: 'redirect standard output, or use -o FILE' });
    }
    // With -o -, stdout carries the archive: progress goes to stderr only, and none with --json
    // (which promises no human lines; the archive is the output).
    const progress = progressPrinter(args.output === '-' ? { ...args, json: false, quiet: args.quiet || args.json } : args);
    const report = await saveImages({ ...options, onEvent: progress }).finally(() => progress.done());
    if (args.output === '-') {
      status(args, `Saved ${report.images.length} image(s), ${humanSize(report.blobs.bytes + report.manifests.bytes)}`);
      return;
    }
    if (args.json) return printResult(report);
    for (const i of report.images) out(`Saved ${i.names.map((n) => n.name ?? n.tag).join(', ') || i.ref}: ${i.digest}`);
    out(`Wrote ${report.files.join(', ')}: ${report.blobs.count} blob(s) (${humanSize(report.blobs.bytes)}), ${report.manifests.count} manifest(s) (${humanSize(report.manifests.bytes)})`);
  },
};
