/** The native byte tests answer as a plain loop does, for any range and wherever a non-zero byte sits. */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nodeByteTests } from '../src/node/byte-tests.js';

/** Mostly zeros, with a few bytes set anywhere (the first and last 64 bytes included), in ordinary or shared memory. */
const sparseBytes = fc
  .tuple(fc.integer({ min: 0, max: 9000 }), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 1, max: 255 })), { maxLength: 3 }), fc.boolean())
  .map(([length, set, shared]) => {
    const bytes = shared ? new Uint8Array(new SharedArrayBuffer(length)) : new Uint8Array(length);
    for (const [at, value] of set) if (length > 0) bytes[at % length] = value;
    return bytes;
  });

describe('nodeByteTests', () => {
  it('isZero is true exactly when every byte of the range is zero', () => {
    fc.assert(
      fc.property(sparseBytes, fc.nat(), fc.nat(), (bytes, a, b) => {
        const [start, end] = bytes.length === 0 ? [0, 0] : [a % (bytes.length + 1), b % (bytes.length + 1)].sort((x, y) => x - y);
        const expected = bytes.subarray(start, end).every((byte) => byte === 0);
        expect(nodeByteTests.isZero(bytes, start!, end!)).toBe(expected);
      }),
      { numRuns: 3000 },
    );
  });

  it('a single non-zero byte is found at every position of a 4 KiB range', () => {
    const bytes = new Uint8Array(4096 + 200);
    for (let at = 100; at < 4196; at++) {
      bytes[at] = 1;
      expect(nodeByteTests.isZero(bytes, 100, 4196)).toBe(false);
      bytes[at] = 0;
    }
    expect(nodeByteTests.isZero(bytes, 100, 4196)).toBe(true);
  });
});
