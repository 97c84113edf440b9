/** base:allocation: block status extents as NBD status descriptors. */

import type { Extent } from '../core/image.js';
import { AllocationFlag } from './constants.js';
import { MAX_STATUS_DESCRIPTORS } from './limits.js';
import type { StatusRun } from './replies.js';

/**
 * The base:allocation flags of an extent, as qemu-nbd reports them: data is
 * allocated; a zero run or an unallocated run is a hole that reads as zeros.
 */
export function allocationFlags(extent: Extent): number {
  return extent.kind === 'data' ? 0 : AllocationFlag.HOLE | AllocationFlag.ZERO;
}

/**
 * Turns extents into descriptor runs covering [offset, offset+length) from its
 * start: clipped to the range, neighbours with equal flags merged, at most
 * MAX_STATUS_DESCRIPTORS runs (one with `only`). Gaps in the extents end the list.
 */
export function allocationRuns(extents: readonly Extent[], offset: number, length: number, only = false): StatusRun[] {
  const runs: StatusRun[] = [];
  const end = offset + length;
  let at = offset;
  const sorted = [...extents].sort((a, b) => a.start - b.start);
  for (const extent of sorted) {
    const start = Math.max(extent.start, at);
    const stop = Math.min(extent.start + extent.length, end);
    if (stop <= start) continue;
    if (start !== at) break;
    const flags = allocationFlags(extent);
    const last = runs[runs.length - 1];
    if (last && last.flags === flags) last.length += stop - start;
    else if (runs.length < MAX_STATUS_DESCRIPTORS) runs.push({ length: stop - start, flags });
    else break;
    at = stop;
    if (at >= end) break;
  }
  return only ? runs.slice(0, 1) : runs;
}
