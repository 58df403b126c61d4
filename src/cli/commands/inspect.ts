import type { CommandModule } from 'yargs';
import { readDocument } from '../../graph.js';
import { readConfig } from '../../images.js';
import { FerryError, isFerryError } from '../../errors.js';
import { formatPlatform, normalizePlatform, parsePlatform, samePlatform, selectPlatforms } from '../../oci/platform.js';
import { defaultStoreDir, openStore } from '../../store.js';
import { transportFor } from '../../locations/location.js';
import type { Descriptor } from '../../oci/manifest.js';
import type { Source } from '../../types.js';
import { interrupt, printJson, registrySettings, type GlobalArgs } from '../context.js';
import { openImage, openResolved } from './shared.js';

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
      .example('$0 inspect docker://ghcr.io/org/app:1 --platform linux/arm64', 'an image in a registry, nothing downloaded but its manifests and config')
      .positional('image', { type: 'string', demandOption: true, describe: 'store image name, digest, oci:DIR[:TAG], docker://NAME, or an archive (oci-archive:FILE[:TAG], docker-archive:FILE[:NAME:TAG])' })
      .option('raw', { type: 'boolean', describe: 'print the manifest (or index) bytes exactly as stored' })
      .option('platform', { type: 'string', describe: 'for an index: show this platform\'s image (OS/ARCH[/VARIANT])' }),
  handler: async (args) => {
    // One image is shown: a list (copy's --platform) read as one platform found none of it.
    if (args.platform !== undefined && /[,\s]/.test(args.platform.trim())) {
      throw new FerryError('USAGE', `--platform ${args.platform}: inspect shows one platform's image; give one (OS/ARCH[/VARIANT])`, { hint: 'inspect without --platform shows the index and every platform it lists' });
    }
    const { source, descriptor, name, close, local } = await open(args);
    try {
      await show(args, local ? damagedWhenMissing(source, args.image) : source, descriptor, name);
    } finally {
      await close();
    }
  },
};

/** The store (or a layout) names the image but lacks one of its blobs: the image is damaged, not unknown. */
function damagedWhenMissing(src: Source, image: string): Source {
  return {
    resolve: (ref) => src.resolve(ref),
    fetch: (d, o) =>
      src.fetch(d, o).catch((e: unknown) => {
        if (!isFerryError(e, 'NOT_FOUND')) throw e;
        throw new FerryError('INTEGRITY', `${image} is damaged: ${e.message}`, { hint: 'ferry verify lists what is missing; copy or pull the image again' });
      }),
    close: () => src.close(),
  };
}

/** The image to show: from the store or a layout (named as index.json names it), a registry or an archive. */
async function open(args: Args): Promise<{ source: Source; descriptor: Descriptor; name: string | undefined; close: () => Promise<void>; local?: boolean }> {
  const { transport } = transportFor(args.image);
  if (transport.prefix === '' || transport.prefix === 'oci:') {
    const { layout, descriptor, name } = await openImage(args.image, () => openStore({ dir: args.store }));
    return { source: layout, descriptor, name, close: async () => {}, local: true };
  }
  return openResolved(args.image, { storeDir: args.store ?? defaultStoreDir(), registry: registrySettings(args), signal: interrupt.signal });
}

/** The manifest (or index, or one platform of it) and its config, as JSON; with --raw the exact bytes. */
async function show(args: Args, src: Source, descriptor: Descriptor, name: string | undefined): Promise<void> {
  let d = descriptor;
  let doc = await readDocument(src, d);
  if (doc.kind === 'index' && args.platform) {
    d = selectPlatforms(doc.index.manifests, [parsePlatform(args.platform)], args.image, { oneOnly: true })[0]!;
    doc = await readDocument(src, d);
  } else if (doc.kind === 'manifest' && args.platform) {
    const c = await readConfig(src, doc.manifest.config);
    const has = { os: c.os, architecture: c.architecture, ...(c.variant ? { variant: c.variant } : {}) };
    if (!samePlatform(has, parsePlatform(args.platform))) {
      throw new FerryError('NOT_FOUND', `${args.image} is a single-platform image for ${formatPlatform(normalizePlatform(has))}, not ${args.platform}`);
    }
  }
  if (args.raw) {
    process.stdout.write(doc.bytes);
    return;
  }
  const result: Record<string, unknown> = {
    name,
    digest: d.digest,
    mediaType: doc.mediaType,
    size: d.size,
  };
  if (doc.kind === 'index') result.index = doc.index;
  else {
    result.manifest = doc.manifest;
    result.config = await readConfig(src, doc.manifest.config);
  }
  printJson(result);
}
