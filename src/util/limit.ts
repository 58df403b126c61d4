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

/** Tasks run in the background, within a count and a byte budget; the first failure is kept. */
export class Background {
  private readonly running = new Set<Promise<void>>();
  private bytes = 0;
  private failure?: { error: unknown };
  constructor(
    private readonly tasks: number,
    private readonly budget: number,
  ) {}

  /** Starts `task` once there is room for it; throws an earlier task's failure instead. */
  async add(bytes: number, task: () => Promise<void>): Promise<void> {
    while (!this.failure && this.running.size > 0 && (this.running.size >= this.tasks || this.bytes + bytes > this.budget)) await Promise.race(this.running);
    this.check();
    this.bytes += bytes;
    const p: Promise<void> = task()
      .catch((e: unknown) => {
        this.failure ??= { error: e };
      })
      .finally(() => {
        this.bytes -= bytes;
        this.running.delete(p);
      });
    this.running.add(p);
  }

  check(): void {
    if (this.failure) throw this.failure.error;
  }

  /** Waits for every task; their failures stay kept (the promises themselves never reject). */
  async settle(): Promise<void> {
    await Promise.all(this.running);
  }

  async finish(): Promise<void> {
    await this.settle();
    this.check();
  }
}
