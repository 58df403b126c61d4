import type { CommandModule } from 'yargs';
import { readDocument } from '../../graph.js';
import { readConfig } from '../../images.js';
import { FerryError } from '../../errors.js';
import { formatPlatform, normalizePlatform, parsePlatform, samePlatform, selectPlatforms } from '../../oci/platform.js';
import { openStore } from '../../store.js';
import { printJson, type GlobalArgs } from '../context.js';
import { openImage } from './shared.js';

interface Args extends GlobalArgs {
  image: string;
  raw?: boolean;
  platform?: string;
}

export const inspectCommand: CommandModule<GlobalArgs, Args> = {
  command: 'inspect <image>',
  describe: 'Show an image\'s manifest and config',
  builder: (y) =>
    y
      .example('$0 inspect --raw alpine:3.20 | sha256sum', 'the manifest bytes')
      .positional('image', { type: 'string', demandOption: true, describe: 'store image name, digest, or oci:DIR[:TAG]' })
      .option('raw', { type: 'boolean', describe: 'print the manifest (or index) bytes exactly as stored' })
      .option('platform', { type: 'string', describe: 'for an index: show this platform\'s image (OS/ARCH[/VARIANT])' }),
  handler: async (args) => {
    const { layout, descriptor } = await openImage(args.image, () => openStore({ dir: args.store }));
    let d = descriptor;
    let doc = await readDocument(layout, d);
    if (doc.kind === 'index' && args.platform) {
      d = selectPlatforms(doc.index.manifests, [parsePlatform(args.platform)], args.image)[0]!;
      doc = await readDocument(layout, d);
    } else if (doc.kind === 'manifest' && args.platform) {
      const c = await readConfig(layout, doc.manifest.config);
      const has = { os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) };
      if (!samePlatform(has, parsePlatform(args.platform))) {
        throw new FerryError('NOT_FOUND', `${args.image} is a single-platform image for ${formatPlatform(normalizePlatform(has))}, not ${args.platform}`);
      }
    }
    if (args.raw) {
      process.stdout.write(doc.bytes);
      return;
    }
    const entry = (await layout.entries()).find((e) => e.descriptor.digest === descriptor.digest);
    const result: Record<string, unknown> = {
      name: entry?.name ?? entry?.tag,
      digest: d.digest,
      mediaType: doc.mediaType,
      size: d.size,
    };
    if (doc.kind === 'index') result.index = doc.index;
    else {
      result.manifest = doc.manifest;
      result.config = await readConfig(layout, doc.manifest.config);
    }
    printJson(result);
  },
};
