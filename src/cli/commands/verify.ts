import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { CommandModule } from 'yargs';
import { FerryError, isFerryError } from '../../errors.js';
import { OciLayout } from '../../locations/layout.js';
import { isPathLike } from '../../locations/location.js';
import { ARCHIVE_SUFFIX } from '../../blob/compression.js';
import { defaultStoreDir, openStore } from '../../store.js';
import { verifyLayout, verifySource } from '../../verify.js';
import { dashArgument, humanSize, interrupt, out, printJson, registrySettings, type GlobalArgs } from '../context.js';
import { openImage, openResolved } from './shared.js';
import { isArchiveFile, verifyArchiveFiles } from './verify-archive.js';

interface Args extends GlobalArgs {
  target?: string;
  more?: string[];
}

export const verifyCommand: CommandModule<GlobalArgs, Args> = {
  command: 'verify [target] [more..]',
  describe: 'Re-hash and check every blob of a layout or image; report every problem (exit 4 if any)',
  builder: (y) =>
    y
      .example('$0 verify /mnt/usb/layout', 'a whole layout')
      .example('$0 verify alpine:3.20', 'one store image')
      .example('$0 verify docker://mirror.internal:5000/team/app:1', 'an image in a registry: every blob fetched and checked, nothing stored')
      .positional('target', { type: 'string', describe: 'OCI layout directory, oci:DIR[:TAG], store image, docker://NAME, archive file or - for an archive on stdin (default: the whole store)' })
      .positional('more', { type: 'string', array: true, describe: 'more archive files (e.g. every volume of a set)' }),
  handler: async (args) => {
    // A lone "-" is standard input, which only an archive can be. yargs hands it over as an empty
    // string, or drops it from `more`: the command line itself says whether it was given.
    if (dashArgument(['--store', '--timeout'])) {
      const files = [args.target, ...(args.more ?? [])].filter((f) => f !== undefined && f !== '' && f !== '-');
      if (files.length) throw new FerryError('USAGE', 'standard input (-) cannot be combined with other files', { hint: 'verify the files in one run and standard input in another' });
      if (process.stdin.isTTY) throw new FerryError('USAGE', 'refusing to read an archive from a terminal', { hint: 'pipe the archive in (ferry verify - < FILE), or name the file' });
      return verifyArchiveFiles(args, ['-']);
    }
    const target = args.target;
    const more = args.more ?? [];
    if (target && (more.length || (await isArchiveFile(target)))) return verifyArchiveFiles(args, [target, ...more]);
    let report;
    let what: string;
    if (target?.startsWith('docker://')) {
      const { source, descriptor, close } = await openResolved(target, { storeDir: args.store ?? defaultStoreDir(), registry: registrySettings(args), signal: interrupt.signal });
      try {
        what = `${target} (${descriptor.digest})`;
        report = await verifySource(source, [descriptor], { signal: interrupt.signal });
      } finally {
        await close();
      }
    } else if (!target || (await isLayoutDir(target))) {
      const layout = target ? await OciLayout.open(target) : await openStore({ dir: args.store });
      what = layout.dir;
      report = await verifyLayout(layout, { signal: undefined });
    } else {
      await refuseMissingPath(target);
      const opened = await openImage(target, () => openStore({ dir: args.store })).catch(async (e: unknown) => {
        // Not a store image, but a file of that name is here: it is what was meant, whatever its bytes.
        if (isFerryError(e, 'NOT_FOUND') && (await stat(target).catch(() => undefined))?.isFile()) return undefined;
        throw e;
      });
      if (!opened) return verifyArchiveFiles(args, [target]);
      const { layout, descriptor } = opened;
      what = `${target} (${descriptor.digest})`;
      report = await verifyLayout(layout, { roots: [descriptor] });
    }
    if (args.json) printJson({ target: what, ok: report.problems.length === 0, ...report });
    else {
      for (const p of report.problems) out(`PROBLEM ${p.kind}: ${p.message}`);
      out(`${what}: ${report.blobs} blob(s), ${humanSize(report.bytes)} checked, ${report.problems.length} problem(s)`);
    }
    if (report.problems.length) {
      // Only malformed input (bad digests, unparseable documents) is exit 3; anything damaged or missing is 4.
      const onlyInvalid = report.problems.every((p) => p.kind === 'invalid');
      throw new FerryError(onlyInvalid ? 'INVALID_INPUT' : 'INTEGRITY', `verify found ${report.problems.length} problem(s) in ${what}`, { hint: 'the affected images must be copied again from their source' });
    }
  },
};

/** A path (./x, /x, x.tar, a glob the shell left as it was) that is not there: not a store image. */
async function refuseMissingPath(target: string): Promise<void> {
  if (!isPathLike(target) && !ARCHIVE_SUFFIX.test(target) && !/[*?[]/.test(target)) return;
  const st = await stat(target).catch(() => undefined);
  if (st?.isDirectory()) {
    throw new FerryError('NOT_FOUND', `${target} is a directory but not an OCI image layout (no oci-layout file)`, { hint: 'verify takes a layout directory, an archive file, a store image or docker://NAME' });
  }
  if (!st) throw new FerryError('NOT_FOUND', `${target}: no such file or directory`, { hint: 'verify takes a layout directory, an archive file, a store image or docker://NAME' });
}

async function isLayoutDir(p: string): Promise<boolean> {
  return stat(join(p, 'oci-layout')).then(() => true, () => false);
}
