import { FerryError } from '../errors.js';

/** Runs `fn` over `items` with at most `limit` in flight; the first failure stops new work and is thrown. */
export async function forEachLimited<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  // NaN or 0 would start no worker at all and report success having done nothing.
  if (!Number.isInteger(limit) || limit < 1) throw new FerryError('USAGE', `concurrency (jobs) must be a whole number of at least 1, not ${limit}`);
  let next = 0;
  let failed: { error: unknown } | undefined;
  const worker = async () => {
    while (!failed && next < items.length) {
      const item = items[next++]!;
      try {
        await fn(item);
      } catch (e) {
        failed ??= { error: e };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  if (failed) throw failed.error;
}
