/**
 * Comparing the guest bytes of two images cluster by cluster: the shared step
 * of rebase (old chain against new chain) and delta images (new against base).
 */

import { readFully } from '../core/device.js';
import type { Image } from '../core/image.js';
import { portableByteTests, type ByteTests } from './bytes-accel.js';
import { walkExtents } from './extents.js';

/** Bytes compared per step: a bounded pair of buffers whatever the image size. */
export const DIFF_CHUNK = 2 << 20;

/**
 * Fills `target` with the guest bytes of `image` at `offset`; bytes past the
 * end of the image (or of every byte when there is no image) read as zeros.
 */
export async function readOrZero(image: Image | undefined, offset: number, target: Uint8Array): Promise<void> {
  const inside = image ? Math.max(0, Math.min(target.length, image.size - offset)) : 0;
  target.fill(0, inside);
  if (inside === 0) return;
  const head = target.subarray(0, inside);
  await readFully(image!, offset, head);
}

/** True when no byte of [offset, offset+length) of `image` is stored as data (it reads as zeros). */
export async function readsAsZeros(image: Image | undefined, offset: number, length: number): Promise<boolean> {
  if (!image) return true;
  const end = Math.min(image.size, offset + length);
  if (end <= offset) return true;
  for await (const extent of walkExtents(image, offset, end)) if (extent.kind === 'data') return false;
  return true;
}

/**
 * The runs of `a` and `b` (both `length` bytes at guest `offset`) that differ,
 * widened to whole `granularity` blocks aligned to guest offsets, as
 * [start, end) pairs relative to the buffers; neighbouring blocks are merged.
 */
export function differingRuns(
  a: Uint8Array,
  b: Uint8Array,
  offset: number,
  granularity: number,
  tests: ByteTests = portableByteTests,
): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let start = 0; start < a.length; ) {
    const end = Math.min(a.length, Math.floor((offset + start) / granularity + 1) * granularity - offset);
    if (!tests.rangesEqual(a, b, start, end)) {
      const last = runs[runs.length - 1];
      if (last && last[1] === start) last[1] = end;
      else runs.push([start, end]);
    }
    start = end;
  }
  return runs;
}
