import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { BackgroundPuts } from '../src/archive/background.js';
import type { Digest } from '../src/oci/digest.js';

const digest = (i: number) => `sha256:${i.toString(16).padStart(64, '0')}` as Digest;

describe('stores in the background while an archive is read on', () => {
  it('runs several at once, never more than its count, and settle waits for all of them', async () => {
    const puts = new BackgroundPuts({ count: 3, bytes: 1 << 30 });
    let running = 0;
    let most = 0;
    let finished = 0;
    for (let i = 0; i < 10; i++) {
      await puts.add(digest(i), 10, async () => {
        most = Math.max(most, ++running);
        await sleep(5);
        running--;
        finished++;
      });
    }
    await puts.settle();
    expect(most).toBe(3);
    expect(finished).toBe(10);
  });

  it('holds at most its bytes (one bigger store runs alone)', async () => {
    const puts = new BackgroundPuts({ count: 8, bytes: 100 });
    let held = 0;
    let most = 0;
    const put = (size: number) => async () => {
      most = Math.max(most, (held += size));
      await sleep(3);
      held -= size;
    };
    for (let i = 0; i < 6; i++) await puts.add(digest(i), 40, put(40));
    await puts.add(digest(6), 500, put(500));
    await puts.add(digest(7), 40, put(40));
    await puts.settle();
    expect(most).toBe(500);
  });

  it('counts a digest being stored as present until it is done', async () => {
    const puts = new BackgroundPuts();
    let release!: () => void;
    await puts.add(digest(1), 1, () => new Promise<void>((r) => (release = r)));
    expect(puts.has(digest(1))).toBe(true);
    release();
    await puts.settle();
    expect(puts.has(digest(1))).toBe(false);
  });

  it('the first failure is thrown by the next add and by settle, once the others have finished', async () => {
    const puts = new BackgroundPuts({ count: 2, bytes: 1 << 30 });
    let others = 0;
    await puts.add(digest(1), 1, async () => {
      await sleep(1);
      throw new Error('disk full');
    });
    await puts.add(digest(2), 1, async () => {
      await sleep(20);
      others++;
    });
    await expect(puts.add(digest(3), 1, async () => void others++)).rejects.toThrow('disk full');
    await expect(puts.settle()).rejects.toThrow('disk full');
    // The slow one was not abandoned: nothing is still writing once settle returns.
    expect(others).toBe(1);
  });
});
