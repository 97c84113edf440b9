/** The prepare-then-store pipeline: bounded, ordered or in completion order, failures reported without leaks. */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pipeline } from '../src/ops/pipeline.js';

async function* itemsOf<T>(values: T[]): AsyncGenerator<T> {
  yield* values;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('pipeline', () => {
  it('stores every item once, in order when ordered, never more than `ahead` preparing', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 12 }), fc.integer({ min: 1, max: 4 }), fc.boolean(), async (delays, ahead, ordered) => {
        let preparing = 0;
        let most = 0;
        const stored: number[] = [];
        await pipeline(
          itemsOf(delays.map((delay, index) => ({ delay, index }))),
          { ahead, ordered },
          async ({ delay, index }) => {
            most = Math.max(most, ++preparing);
            await sleep(delay);
            preparing--;
            return index;
          },
          async (index) => {
            stored.push(index);
          },
        );
        expect(most).toBeLessThanOrEqual(ahead);
        expect([...stored].sort((a, b) => a - b)).toEqual(delays.map((_, index) => index));
        if (ordered) expect(stored).toEqual(delays.map((_, index) => index));
      }),
      { numRuns: 40 },
    );
  });

  it('unordered, stores what is ready first', async () => {
    const stored: number[] = [];
    await pipeline(itemsOf([30, 1]), { ahead: 2, ordered: false }, async (delay) => (await sleep(delay), delay), async (delay) => {
      stored.push(delay);
    });
    expect(stored).toEqual([1, 30]);
  });

  it('rethrows a failed preparation after the others settle', async () => {
    let settled = 0;
    const run = pipeline(
      itemsOf([1, 2, 3]),
      { ahead: 3, ordered: true },
      async (item) => {
        await sleep(item * 5);
        settled++;
        if (item === 1) throw new Error('read failed');
        return item;
      },
      async () => {},
    );
    await expect(run).rejects.toThrow('read failed');
    expect(settled).toBe(3);
  });
});
