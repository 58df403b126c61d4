import { planArchivePush, pushArchive } from '../../archive/push.js';
import { interrupt, out, printReferrer, printResult, progressPrinter, registrySettings, type GlobalArgs } from '../context.js';
import { printPlan } from '../plan.js';

/** `ferry push --from FILE… [REGISTRY/PREFIX]`: every image of an archive (or volume set), straight from it. */
export async function pushFromArchive(args: GlobalArgs & { from: string[]; prefix?: string; jobs?: number; 'dry-run'?: boolean }): Promise<void> {
  const options = { prefix: args.prefix, registry: registrySettings(args), signal: interrupt.signal, jobs: args.jobs };
  if (args['dry-run']) return printPlan(args, await planArchivePush(args.from, options));
  const progress = progressPrinter(args);
  const pushed = await pushArchive(args.from, { ...options, onEvent: progress }).finally(() => progress.done());
  if (args.json) return printResult({ images: pushed });
  for (const p of pushed) {
    // A referrer kept under a cosign-style tag has REPOSITORY:TAG as its reference, others REPOSITORY@DIGEST.
    const tag = p.subject && !p.reference.includes('@') ? /:([^/:]+)$/.exec(p.reference)?.[1] : undefined;
    if (printReferrer({ ...p, names: tag ? [{ tag }] : [] })) continue;
    out(`${p.reference}: digest: ${p.digest}`);
  }
}
