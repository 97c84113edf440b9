/**
 * The two byte tests on the copy and compare hot paths. Operations take them as
 * a parameter so a runtime can supply native versions (Node: memcmp through
 * Buffer); these defaults are the portable fallback.
 */

import { isAllZero } from '../core/bytes.js';

/** Byte tests over ranges of arrays, without copying. */
export interface ByteTests {
  /** True when bytes[start, end) are all zero. */
  isZero(bytes: Uint8Array, start: number, end: number): boolean;
  /** True when a[start, end) equals b[start, end). */
  rangesEqual(a: Uint8Array, b: Uint8Array, start: number, end: number): boolean;
}

/** Portable byte tests (word-at-a-time loops). */
export const portableByteTests: ByteTests = {
  isZero: (bytes, start, end) => isAllZero(bytes.subarray(start, end)),
  rangesEqual(a, b, start, end) {
    for (let index = start; index < end; index++) if (a[index] !== b[index]) return false;
    return true;
  },
};

/**
 * Splits bytes (which sit at guest offset `base`) into the runs that hold any
 * non-zero byte, testing blocks of `granularity` bytes aligned to guest offsets.
 * An all-zero block is left out; neighbouring non-zero blocks are merged.
 * Returns [start, end) pairs relative to `bytes`.
 */
export function nonZeroRuns(
  bytes: Uint8Array,
  base: number,
  granularity: number,
  tests: ByteTests,
): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  // Whole buffers of zeros are common (zeros written into a raw file): one test instead of one per block.
  if (tests.isZero(bytes, 0, bytes.length)) return runs;
  let runStart = -1;
  let blockStart = 0;
  while (blockStart < bytes.length) {
    const aligned = Math.floor((base + blockStart) / granularity + 1) * granularity - base;
    const blockEnd = Math.min(bytes.length, aligned);
    const zero = tests.isZero(bytes, blockStart, blockEnd);
    if (!zero && runStart < 0) runStart = blockStart;
    if (zero && runStart >= 0) {
      runs.push([runStart, blockStart]);
      runStart = -1;
    }
    blockStart = blockEnd;
  }
  if (runStart >= 0) runs.push([runStart, bytes.length]);
  return runs;
}
