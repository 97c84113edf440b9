/**
 * Refcount block entries of every width (1 to 64 bits): what setRefcount
 * writes, getRefcount reads back, and a wide entry reads as the big-endian
 * number the spec says, whatever bytes are around it.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { getRefcount, refcountBits, setRefcount } from '../formats/qcow2/refcount.js';

/** The entry as the spec defines it: big-endian for 8 bits and more, from the low bit up below that. */
function specRefcount(block: Uint8Array, index: number, order: number): number {
  const bits = refcountBits(order);
  if (bits < 8) return (block[Math.floor((index * bits) / 8)]! >> ((index * bits) % 8)) & ((1 << bits) - 1);
  let value = 0n;
  for (let byte = 0; byte < bits / 8; byte++) value = (value << 8n) | BigInt(block[(index * bits) / 8 + byte]!);
  return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
}

describe('refcount block entries', () => {
  it('getRefcount reads every width as the spec defines it', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.nat(), (order, block, pick) => {
        const entries = (block.length * 8) / refcountBits(order);
        const index = pick % entries;
        expect(getRefcount(block, index, order)).toBe(specRefcount(block, index, order));
      }),
    );
  });

  it('setRefcount writes what getRefcount reads back, and no other entry changes', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 6 }), fc.uint8Array({ minLength: 64, maxLength: 64 }), fc.nat(), fc.double({ min: 0, max: 1, noNaN: true }), (order, block, pick, fraction) => {
        const bits = refcountBits(order);
        const entries = (block.length * 8) / bits;
        const index = pick % entries;
        const max = bits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** bits - 1;
        const value = Math.floor(fraction * max);
        const before = Array.from({ length: entries }, (_, at) => getRefcount(block, at, order));
        setRefcount(block, index, order, value);
        for (let at = 0; at < entries; at++) expect(getRefcount(block, at, order)).toBe(at === index ? value : before[at]);
      }),
    );
  });
});
