/**
 * Native-speed byte tests for the copy and compare hot paths: memcmp through
 * Buffer.compare against a shared zero page, never a JS byte loop.
 */

import { realpathSync, statSync } from 'node:fs';
import type { ByteTests } from '../ops/bytes-accel.js';

/** Compared against in slices; one allocation shared by every caller. */
const ZERO_CHUNK = Buffer.alloc(1024 * 1024);

function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Byte tests backed by memcmp. */
export const nodeByteTests: ByteTests = {
  isZero(bytes, start, end) {
    // Data blocks almost always fail on their first or last byte: skip the call.
    if (end <= start) return true;
    if (bytes[start] !== 0 || bytes[end - 1] !== 0) return false;
    const buffer = asBuffer(bytes);
    for (let at = start; at < end; at += ZERO_CHUNK.length) {
      const stop = Math.min(end, at + ZERO_CHUNK.length);
      if (buffer.compare(ZERO_CHUNK, 0, stop - at, at, stop) !== 0) return false;
    }
    return true;
  },
  rangesEqual(a, b, start, end) {
    return asBuffer(a).compare(asBuffer(b), start, end, start, end) === 0;
  },
};

/** True when both paths name the same existing file (after following links). */
export async function sameFile(a: string, b: string): Promise<boolean> {
  try {
    // Synchronous: two look-ups once per command, and node:fs/promises stays unloaded.
    const [left, right] = [realpathSync(a), realpathSync(b)];
    if (left === right) return true;
    // A hard link has its own path but is the same file: compare device and inode too.
    const [leftStat, rightStat] = [statSync(left), statSync(right)];
    return leftStat.dev === rightStat.dev && leftStat.ino === rightStat.ino;
  } catch {
    return false;
  }
}
