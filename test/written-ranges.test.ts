/**
 * WrittenRanges, what the enabled bitmaps gain when stored again: the exact
 * union of the writes while it holds few runs, and past its limit a bounded
 * number of wider runs that still cover every byte written (a bit too many
 * costs a backup a few bytes; one missed would lose data).
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { WrittenRanges } from '../formats/qcow2/written-ranges.js';

const writes = fc.array(fc.tuple(fc.nat(1 << 20), fc.integer({ min: 0, max: 5000 })), { maxLength: 300 });

/** The union of `ranges` as sorted runs, overlapping and touching ones joined. */
function union(ranges: readonly [number, number][]): [number, number][] {
  const sorted = ranges.filter(([, length]) => length > 0).map(([offset, length]): [number, number] => [offset, offset + length]).sort((a, b) => a[0] - b[0]);
  const runs: [number, number][] = [];
  for (const [start, end] of sorted) {
    const last = runs[runs.length - 1];
    if (last && start <= last[1]) last[1] = Math.max(last[1], end);
    else runs.push([start, end]);
  }
  return runs;
}

/** True when the runs are sorted, non-empty, and neither overlap nor touch. */
function wellFormed(runs: readonly (readonly [number, number])[]): boolean {
  return runs.every(([start, end], index) => start < end && (index === 0 || runs[index - 1]![1] < start));
}

describe('WrittenRanges', () => {
  it('holds the exact union of the writes, in order, while under its limit', () => {
    fc.assert(
      fc.property(writes, (added) => {
        const written = new WrittenRanges();
        for (const [offset, length] of added) written.add(offset, length);
        expect(written.list()).toEqual(union(added));
        expect(written.empty).toBe(union(added).length === 0);
      }),
    );
  });

  it('past its limit keeps at most that many runs, each written byte still inside one', () => {
    fc.assert(
      fc.property(writes, fc.integer({ min: 2, max: 16 }), (added, limit) => {
        const written = new WrittenRanges(limit);
        for (const [offset, length] of added) written.add(offset, length);
        const runs = written.list();
        expect(runs.length).toBeLessThanOrEqual(limit);
        expect(wellFormed(runs)).toBe(true);
        for (const [start, end] of union(added)) {
          expect(runs.some(([from, to]) => from <= start && end <= to)).toBe(true);
        }
      }),
    );
  });

  it('a sequential copy is one run, whatever its length', () => {
    const written = new WrittenRanges(4);
    for (let offset = 0; offset < 1 << 30; offset += 2 << 20) written.add(offset, 2 << 20);
    expect(written.list()).toEqual([[0, 1 << 30]]);
  });

  it('clear forgets the runs and the coarser grain', () => {
    const written = new WrittenRanges(2);
    for (let offset = 0; offset < 100_000; offset += 1000) written.add(offset, 10);
    written.clear();
    written.add(5, 3);
    expect(written.list()).toEqual([[5, 8]]);
  });
});
