/**
 * Block status as NBD status descriptors, for each metadata context:
 * base:allocation and qemu:allocation-depth from an export's extents, and
 * any other context (a dirty bitmap) from its own runs.
 */

import type { Extent, Image } from '../core/image.js';
import { ALLOCATION_DEPTH, AllocationFlag } from './constants.js';
import { MAX_STATUS_DESCRIPTORS } from './limits.js';
import type { StatusRun } from './replies.js';

/**
 * A metadata context beyond base:allocation: its name, and its status runs
 * over [offset, offset+length) of the export, from `offset` on, contiguous,
 * at most MAX_STATUS_DESCRIPTORS of them (they may stop short of the end:
 * the client asks again for the rest).
 */
export interface MetaContext {
  readonly name: string;
  status(offset: number, length: number): Promise<StatusRun[]>;
}

/**
 * The base:allocation flags of an extent, as qemu-nbd reports them: data is
 * allocated; a zero run or an unallocated run is a hole that reads as zeros.
 */
export function allocationFlags(extent: Extent): number {
  return extent.kind === 'data' ? 0 : AllocationFlag.HOLE | AllocationFlag.ZERO;
}

/**
 * The qemu:allocation-depth value of an extent in a chain of `layers` images:
 * the 1-based layer that holds it (a zero cluster is held too, as is any byte
 * of a raw image), or 0 where no layer does. An unallocated run that stopped
 * above the chain's last layer lies past the end of a shorter backing image:
 * qemu counts it as held, as zeros, by that backing image.
 */
export function allocationDepth(extent: Extent, layers: number): number {
  if (extent.kind !== 'unallocated') return extent.depth + 1;
  return extent.depth >= layers ? 0 : extent.depth + 1;
}

/**
 * Turns extents into descriptor runs covering [offset, offset+length) from its
 * start: clipped to the range, neighbours with equal flags merged, at most
 * MAX_STATUS_DESCRIPTORS runs (one with `only`). Gaps in the extents end the list.
 */
export function allocationRuns(
  extents: readonly Extent[],
  offset: number,
  length: number,
  only = false,
  flagsOf: (extent: Extent) => number = allocationFlags,
): StatusRun[] {
  const runs: StatusRun[] = [];
  const end = offset + length;
  let at = offset;
  const sorted = [...extents].sort((a, b) => a.start - b.start);
  for (const extent of sorted) {
    const start = Math.max(extent.start, at);
    const stop = Math.min(extent.start + extent.length, end);
    if (stop <= start) continue;
    if (start !== at) break;
    if (!appendRun(runs, stop - start, flagsOf(extent))) break;
    at = stop;
    if (at >= end) break;
  }
  return only ? runs.slice(0, 1) : runs;
}

/** Adds a run, merged into the last when their flags agree; false once the list is full. */
export function appendRun(runs: StatusRun[], length: number, flags: number): boolean {
  const last = runs[runs.length - 1];
  if (last && last.flags === flags) last.length += length;
  else if (runs.length < MAX_STATUS_DESCRIPTORS) runs.push({ length, flags });
  else return false;
  return true;
}

/** The number of images in `image`'s chain (itself and its backing files). */
export function chainLayers(image: Image): number {
  let layers = 1;
  for (let layer = image.backing; layer; layer = layer.backing) layers++;
  return layers;
}

/**
 * qemu:allocation-depth over an export's block status (qemu-nbd -A):
 * `blockStatus` answers for the export, `layers` is its image's chain length.
 */
export function allocationDepthContext(blockStatus: (offset: number, length: number) => Promise<Extent[]>, layers: number): MetaContext {
  return {
    name: ALLOCATION_DEPTH,
    async status(offset, length) {
      const extents = await blockStatus(offset, length);
      return allocationRuns(extents, offset, length, false, (extent) => allocationDepth(extent, layers));
    },
  };
}

