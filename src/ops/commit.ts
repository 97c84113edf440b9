/**
 * `commit`: write the data an image holds into an image below it in its
 * backing chain (qemu-img commit), then empty the image so it reads through.
 */

import { readFully } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { DIFF_CHUNK } from './chain-diff.js';
import { walkExtents } from './extents.js';
import type { ProgressCallback } from './progress.js';
import type { WriteLimit } from './rate-limit.js';

/** An image that can take guest writes (and, for zero runs, zero writes). */
interface WritableImage extends Image {
  write(offset: number, data: Uint8Array): Promise<void>;
  writeZeroes?(offset: number, length: number): Promise<void>;
  resize?(size: number): Promise<void>;
}

/** How to commit. */
export interface CommitOptions {
  /** -d: keep the image's data after committing (qemu-img empties it by default). */
  keep?: boolean;
  /** `-r`: guest bytes written per second at most (none by default). */
  limit?: WriteLimit;
  onProgress?: ProgressCallback;
}

/** What was committed. */
export interface CommitResult {
  /** Guest bytes written into the base. */
  bytesCommitted: number;
  /** True when the top image was emptied. */
  emptied: boolean;
}

/**
 * The depth of the layer of `top`'s chain whose file key equals `baseKey`
 * (1 = the immediate backing file), found with `keyOf`.
 */
export function baseDepth(top: Image, baseKey: string, keyOf: (image: Image) => string, shownAs = baseKey): number {
  let depth = 1;
  for (let layer = top.backing; layer; layer = layer.backing, depth++) {
    if (keyOf(layer) === baseKey) return depth;
  }
  throw new UsageError(`Did not find '${shownAs}' in the backing chain of '${top.name}'`);
}

/**
 * Copies every run that layers above `depth` hold (data and zeros) from `top`
 * into `base`, which is the chain's layer at `depth` opened writable on its own.
 * The top image is then emptied, unless `keep`.
 */
export async function commitImage(top: Image, base: Image, depth: number, options: CommitOptions = {}): Promise<CommitResult> {
  const target = writableBase(base);
  if (target.size < top.size) {
    if (!target.resize) throw new UnsupportedFeatureError(`the base image ${base.name} cannot grow to ${top.size} bytes`);
    await target.resize(top.size);
  }
  let committed = 0;
  const buffer = new Uint8Array(DIFF_CHUNK);
  options.onProgress?.(0, top.size);
  for await (const extent of walkExtents(top, 0, top.size)) {
    // An unallocated run above the base ends past a shorter layer between: it reads zeros, which the base must hold too.
    if (extent.depth < depth) {
      committed += await copyRun(top, target, extent.start, extent.length, extent.kind !== 'data', buffer, options.limit);
    }
    options.onProgress?.(extent.start + extent.length, top.size);
  }
  await target.flush?.();
  const emptied = !options.keep;
  if (emptied) await emptyImage(top);
  return { bytesCommitted: committed, emptied };
}

function writableBase(base: Image): WritableImage {
  if (!base.writable || !base.write) throw new UsageError(`the base image ${base.name} is not open for writing`);
  return base as WritableImage;
}

/** Copies (or zeroes) one run in bounded steps; returns the bytes written. */
async function copyRun(
  top: Image,
  base: WritableImage,
  start: number,
  length: number,
  zero: boolean,
  buffer: Uint8Array,
  limit: WriteLimit | undefined,
): Promise<number> {
  const end = start + length;
  for (let at = start; at < end; ) {
    const next = Math.min(end, (Math.floor(at / DIFF_CHUNK) + 1) * DIFF_CHUNK);
    const bytes = buffer.subarray(0, next - at);
    await limit?.take(bytes.length);
    if (zero && base.writeZeroes) {
      await base.writeZeroes(at, bytes.length);
    } else {
      if (zero) bytes.fill(0);
      else await readFully(top, at, bytes);
      await base.write(at, bytes);
    }
    at = next;
  }
  return length;
}

/** Makes every cluster of the top image unallocated, so it reads through to its backing file (qemu's make_empty). */
async function emptyImage(top: Image): Promise<void> {
  if (!(top instanceof Qcow2Image)) throw new UnsupportedFeatureError(`cannot empty ${top.name}: format ${top.format} has no backing file`);
  // As qemu: cut the file back to an empty image when nothing else (snapshots, bitmaps, a data file) holds clusters.
  if (await top.emptyCompletely()) return;
  // Whole clusters: a cluster the top holds only part of (subclusters) is emptied all the same.
  const clusterSize = top.metadata.clusterSize;
  const held: Array<[number, number]> = [];
  for await (const extent of walkExtents(top, 0, top.size)) {
    if (extent.depth !== 0 || extent.kind === 'unallocated') continue;
    const start = extent.start - (extent.start % clusterSize);
    const end = Math.min(top.size, Math.ceil((extent.start + extent.length) / clusterSize) * clusterSize);
    const last = held[held.length - 1];
    if (last && last[0] + last[1] >= start) last[1] = Math.max(last[1], end - last[0]);
    else held.push([start, end - start]);
  }
  // Only what the top layer holds is visited: emptying costs nothing for the unallocated rest.
  for (const [start, length] of held) await top.discard(start, length);
  await top.flush();
}
