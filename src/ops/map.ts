/** `map`: qemu-img map's allocation entries, merged by qemu's rules. */

import { checkRange } from '../core/bytes.js';
import type { Extent, Image } from '../core/image.js';
import { walkExtents } from './extents.js';

/** One entry of qemu-img map (qemu 7.2's JSON keys, plus the file for the human table). */
export interface MapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  /** Where the run sits in `filename`, when it is one contiguous host run. */
  offset?: number;
  /** The file holding the run (only with `offset`), as the human table prints it. */
  filename?: string;
}

/** Which part of the image to map. */
export interface MapOptions {
  startOffset?: number;
  maxLength?: number;
}

/** The files of the chain, top first. */
function chainOf(image: Image): Image[] {
  const chain: Image[] = [];
  for (let layer: Image | undefined = image; layer; layer = layer.backing) chain.push(layer);
  return chain;
}

/**
 * An unallocated extent's depth counts the layers that were asked (the chain
 * length, or fewer when a backing file ends early); qemu reports such a run at
 * the last layer asked, the one that answered "zero", hence one less.
 */
function entryOf(extent: Extent, chain: Image[]): MapEntry {
  const depth = extent.kind === 'unallocated' ? Math.max(0, extent.depth - 1) : extent.depth;
  const entry: MapEntry = {
    start: extent.start,
    length: extent.length,
    depth,
    present: extent.kind !== 'unallocated',
    zero: extent.kind !== 'data',
    data: extent.kind === 'data',
  };
  // Any run with a host offset shows it, unallocated ones included (a reserved
  // cluster past the end of a shorter backing file), as qemu does.
  if (extent.hostOffset !== undefined && !extent.compressed) {
    entry.offset = extent.hostOffset;
    const layer = chain[depth];
    const device = layer?.dataDevice ?? layer?.device;
    // A raw image that is part of a file (qemu's offset option) is mapped into that file.
    entry.filename = device?.partOf?.name ?? device?.name;
  }
  return entry;
}

/** qemu's entry_mergeable: same flags, same file, and host offsets that continue. */
export function mergeable(current: MapEntry, next: MapEntry): boolean {
  if (current.length === 0) return false;
  if (current.zero !== next.zero || current.data !== next.data) return false;
  if (current.depth !== next.depth || current.present !== next.present) return false;
  if (current.filename !== next.filename) return false;
  if ((current.offset === undefined) !== (next.offset === undefined)) return false;
  return current.offset === undefined || current.offset + current.length === next.offset;
}

/**
 * Yields the merged map entries of [startOffset, startOffset+maxLength) clipped
 * to the image, in order, one at a time (memory does not grow with the image).
 * An empty range yields one empty entry, as qemu-img prints it.
 */
export async function* mapImage(image: Image, options: MapOptions = {}): AsyncGenerator<MapEntry> {
  const start = options.startOffset ?? 0;
  checkRange(start, 0, Number.MAX_SAFE_INTEGER, 'map start offset');
  const end = options.maxLength === undefined ? image.size : Math.min(image.size, start + options.maxLength);
  const chain = chainOf(image);
  let current: MapEntry = { start, length: 0, depth: 0, present: false, zero: false, data: false };
  if (start < end) {
    for await (const extent of walkExtents(image, start, end)) {
      const next = entryOf(extent, chain);
      if (mergeable(current, next)) {
        current.length += next.length;
        continue;
      }
      if (current.length > 0) yield current;
      current = next;
    }
  }
  yield current;
}
