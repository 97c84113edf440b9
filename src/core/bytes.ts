/** Small byte helpers shared by every format. Runtime-agnostic: no Buffer. */

import { CorruptImageError, OutOfRangeError } from './errors.js';
import { MAX_SAFE_OFFSET } from './limits.js';

/**
 * Converts a u64 read from an image to a number, once, at the edge.
 * A value above 2^53 cannot be an offset or size we can address: it is corruption.
 */
export function u64ToNumber(value: bigint, what: string, offset?: number): number {
  if (value > BigInt(MAX_SAFE_OFFSET)) {
    throw new CorruptImageError(`${what} is too large (${value})`, offset);
  }
  return Number(value);
}

/** True when every byte is zero. Checks 4 bytes at a time where alignment allows. */
export function isAllZero(bytes: Uint8Array): boolean {
  let index = 0;
  const end = bytes.length;
  const head = Math.min(end, (4 - (bytes.byteOffset & 3)) & 3);
  for (; index < head; index++) if (bytes[index] !== 0) return false;
  const words = (end - index) >>> 2;
  if (words > 0) {
    const view = new Uint32Array(bytes.buffer, bytes.byteOffset + index, words);
    for (let w = 0; w < words; w++) if (view[w] !== 0) return false;
    index += words * 4;
  }
  for (; index < end; index++) if (bytes[index] !== 0) return false;
  return true;
}

/**
 * Overflow-safe range check: throws unless [offset, offset+length) lies in [0, size).
 * Written as `length > size - offset` so huge values never wrap or lose precision.
 */
export function checkRange(offset: number, length: number, size: number, what = 'access'): void {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new OutOfRangeError(`${what}: invalid offset ${offset} or length ${length}`, { offset, length });
  }
  if (offset > size || length > size - offset) {
    throw new OutOfRangeError(`${what} of ${length} bytes at offset ${offset} is past the end (${size} bytes)`, {
      offset,
      length,
      size,
    });
  }
}

/** Concatenates byte arrays into one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  let total = 0;
  for (const part of parts) total += part.length;
  const out = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

/** Rounds `value` up to a multiple of `alignment` (a power of two or any positive integer). */
export function alignUp(value: number, alignment: number): number {
  return Math.ceil(value / alignment) * alignment;
}

/** Rounds `value` down to a multiple of `alignment`. */
export function alignDown(value: number, alignment: number): number {
  return Math.floor(value / alignment) * alignment;
}

/** Byte-for-byte equality. */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** A DataView over exactly the bytes of `bytes`. */
export function viewOf(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
