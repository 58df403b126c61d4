import type { CommandModule } from 'yargs';
import { FerryError } from '../../errors.js';
import { exportImage, exportToDir, type ExportReport } from '../../fs/export.js';
import type { OutputCompression } from '../../fs/output.js';
import { shortDigest } from '../../oci/digest.js';
import { parsePlatform } from '../../oci/platform.js';
import { humanSize, interrupt, out, outputArgument, printJson, status, type GlobalArgs } from '../context.js';

interface Args extends GlobalArgs {
  image: string;
  output?: string;
  dir?: string;
  platform?: string;
  setuid?: boolean;
  'strip-setuid'?: boolean;
  compress?: OutputCompression;
  force?: boolean;
  devices?: boolean;
}

export const exportCommand: CommandModule<GlobalArgs, Args> = {
  command: 'export <image>',
  describe: 'Flatten an image into one root-filesystem tar (or extract it safely into a directory)',
  builder: (y) =>
    y
      .positional('image', { type: 'string', demandOption: true, describe: 'store image name, oci:DIR[:TAG], or any other location' })
      .option('output', { alias: 'o', type: 'string', describe: 'tar file to write (.tar, .tar.gz, .tar.zst), or - for stdout (default)' })
      .option('dir', { type: 'string', describe: 'extract into this new or empty directory instead of writing a tar' })
      .option('platform', { type: 'string', describe: 'for a multi-platform image: OS/ARCH[/VARIANT] (default: this machine)' })
      .option('setuid', { type: 'boolean', default: true, describe: 'keep setuid/setgid bits; --no-setuid strips them' })
      .option('strip-setuid', { type: 'boolean', hidden: true })
      .option('compress', { choices: ['gzip', 'zstd', 'none'] as const, describe: 'compress the tar (default: from the -o suffix; none for stdout)' })
      .option('force', { type: 'boolean', describe: 'replace an existing -o file' })
      .option('devices', { type: 'boolean', describe: 'with --dir: create FIFOs, and device nodes when running as root (default: skip them with a warning)' }),
  handler: async (args) => {
    args.output = outputArgument(args.output);
    if (args.dir !== undefined && args.output !== undefined) throw new FerryError('USAGE', 'use either -o FILE or --dir DIR, not both');
    if (args.dir === undefined && args.devices) throw new FerryError('USAGE', '--devices only applies to --dir');
    const toStdout = args.dir === undefined && (args.output === undefined || args.output === '-');
    if (toStdout && process.stdout.isTTY) {
      throw new FerryError('USAGE', 'refusing to write a tar archive to a terminal', { hint: 'use -o FILE, --dir DIR, or redirect the output' });
    }
    if (toStdout && args.json) throw new FerryError('USAGE', '--json needs -o FILE or --dir: stdout carries the tar');
    const common = {
      image: args.image,
      storeDir: args.store,
      platform: args.platform ? parsePlatform(args.platform) : undefined,
      noSetuid: args.setuid === false || args['strip-setuid'] === true,
      signal: interrupt.signal,
      onEvent: (e: { type: string; digest?: string; platform?: string; layers?: number }) => {
        if (e.type === 'resolved') status(args, `${args.image}: ${e.platform}, ${e.layers} layer(s), ${e.digest}`);
      },
    };
    const report: ExportReport =
      args.dir !== undefined
        ? await exportToDir({ ...common, dir: args.dir, devices: args.devices })
        : await exportImage({ ...common, output: args.output ?? '-', compression: args.compress, force: args.force });
    if (args.json) return printJson(report);
    const line = `Exported ${args.image} (${shortDigest(report.digest)}, ${report.platform}) to ${toStdout ? 'stdout' : report.output}: ${report.entries} entries, ${humanSize(report.bytes)} of file content`;
    if (toStdout) status(args, line);
    else out(line);
  },
};
