import { pushArchive } from '../../archive/push.js';
import { interrupt, out, printResult, progressPrinter, registrySettings, type GlobalArgs } from '../context.js';

/** `ferry push --from FILE [REGISTRY/PREFIX]`: every image of an archive, straight from it. */
export async function pushFromArchive(args: GlobalArgs & { from: string; prefix?: string; jobs?: number }): Promise<void> {
  const progress = progressPrinter(args);
  const pushed = await pushArchive(args.from, {
    prefix: args.prefix,
    registry: registrySettings(args),
    signal: interrupt.signal,
    onEvent: progress,
    jobs: args.jobs,
  }).finally(() => progress.done());
  if (args.json) return printResult({ images: pushed });
  for (const p of pushed) out(`${p.reference}: digest: ${p.digest}`);
}
