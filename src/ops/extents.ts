/** Walking an image's block status in bounded windows, for the operations that copy or compare. */

import { CorruptImageError } from '../core/errors.js';
import type { Extent, Image } from '../core/image.js';

/**
 * Block status is asked for at most this many bytes at a time, as qemu-img does
 * (1 GiB): the extent list of one answer stays bounded however large the image.
 */
export const BLOCK_STATUS_WINDOW = 1 << 30;

/**
 * Yields the extents of [start, end) in order, each clipped to the range.
 * Guards against a reader that answers with gaps, overlaps or empty runs, which
 * would otherwise make a caller loop forever or skip data.
 */
export async function* walkExtents(image: Image, start: number, end: number): AsyncGenerator<Extent> {
  let offset = start;
  while (offset < end) {
    const length = Math.min(BLOCK_STATUS_WINDOW, end - offset);
    const extents = await image.blockStatus(offset, length);
    const windowEnd = offset + length;
    for (const extent of extents) {
      if (extent.start !== offset || extent.length <= 0 || extent.length > windowEnd - offset) {
        throw new CorruptImageError(
          `block status of ${image.name} is inconsistent at guest offset ${offset} ` +
            `(got ${extent.start}+${extent.length})`,
        );
      }
      yield extent;
      offset += extent.length;
      if (offset === windowEnd) break;
    }
    if (offset !== windowEnd) {
      throw new CorruptImageError(`block status of ${image.name} stops short at guest offset ${offset}`);
    }
  }
}

/** True when an extent reads as zeros without reading it. */
export function readsAsZero(extent: Extent): boolean {
  return extent.kind !== 'data';
}

/** A run of guest bytes that all read as data, or all as zeros; `left` when a copy is to leave the target alone there. */
export interface GuestRun {
  start: number;
  length: number;
  zero: boolean;
  left?: boolean;
}

/** Of a source's extents, those a copy is to leave alone in the target (convert -n -B: what the top layer does not hold). */
export type LeaveTest = (extent: Extent) => boolean;

/**
 * Yields maximal runs of [start, end) that are either all data or all zero
 * (or all to be left alone, by `leave`), merging neighbours so callers issue
 * large I/O even when a reader answers per cluster.
 */
export async function* walkRuns(image: Image, start: number, end: number, leave?: LeaveTest): AsyncGenerator<GuestRun> {
  let run: GuestRun | undefined;
  for await (const extent of walkExtents(image, start, end)) {
    const left = leave?.(extent) === true;
    const zero = left || readsAsZero(extent);
    if (run && run.zero === zero && (run.left === true) === left) {
      run.length += extent.length;
      continue;
    }
    if (run) yield run;
    run = { start: extent.start, length: extent.length, zero };
    if (left) run.left = true;
  }
  if (run) yield run;
}

/**
 * convert -n -B's rule, as qemu-img's: only what the source's top layer holds
 * (data and zero clusters) is copied, the rest is left to the target. A source
 * without a backing file holds all of itself: its unallocated runs read as
 * zeros and are written as zeros.
 */
export function outsideTopLayer(source: Image): LeaveTest {
  const hasBacking = source.backing !== undefined;
  return (extent) => (extent.kind === 'unallocated' ? hasBacking : extent.depth > 0);
}
