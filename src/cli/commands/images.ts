import type { CommandModule } from 'yargs';
import { stat } from 'node:fs/promises';
import { listImages } from '../../images.js';
import { shortDigest } from '../../oci/digest.js';
import { familiarName, tryParseReference } from '../../oci/reference.js';
import { defaultStoreDir, openStore } from '../../store.js';
import { warn } from '../../log.js';
import { humanSize, out, printJson, table, type GlobalArgs } from '../context.js';

export const imagesCommand: CommandModule<GlobalArgs, GlobalArgs> = {
  command: 'images',
  describe: 'List the images in the store',
  builder: (y) =>
    y
      .example('$0 images --json', 'machine-readable'),
  handler: async (args) => {
    const dir = args.store ?? defaultStoreDir();
    const store = await openStore({ dir, write: false }).catch(async (e) => {
      // A store not created yet holds no images; a path that is something else is a mistake to report.
      if ((e as { code?: string }).code === 'NOT_FOUND' && !(await stat(dir).then(() => true, () => false))) return undefined;
      throw e;
    });
    const images = store ? await listImages(store) : [];
    if (args.json) return printJson(images);
    const rows = [['REPOSITORY', 'TAG', 'DIGEST', 'PLATFORMS', 'SIZE']];
    for (const i of images) {
      const ref = i.name ? tryParseReference(i.name) : undefined;
      const repo = ref ? familiarName({ domain: ref.domain, path: ref.path }) : '<none>';
      rows.push([repo, i.tag ?? '<none>', shortDigest(i.digest), i.platforms.join(',') || '-', i.damaged ? 'DAMAGED' : humanSize(i.size)]);
    }
    out(table(rows));
    for (const i of images.filter((x) => x.damaged)) warn(`${i.name ?? i.tag ?? i.digest} is damaged (${i.damaged}); run \`ferry verify\``);
  },
};
