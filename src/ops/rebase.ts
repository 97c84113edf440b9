/**
 * `rebase`: change the backing file of a qcow2 image (qemu-img rebase).
 * Safe mode first copies into the image every range that would read
 * differently through the new backing chain, so the guest sees the same disk;
 * unsafe mode only rewrites the header.
 */

import { PlatterError, UnsupportedFeatureError } from '../core/errors.js';
import { alignDown, alignUp } from '../core/bytes.js';
import type { Image } from '../core/image.js';
import { Qcow2Image } from '../../formats/qcow2/index.js';
import { checkBackingReference, writeBackingReference } from '../../formats/qcow2/backing-header.js';
import { nonZeroRuns, portableByteTests, type ByteTests } from './bytes-accel.js';
import { DIFF_CHUNK, differingRuns, readOrZero, readsAsZeros } from './chain-diff.js';
import { walkExtents } from './extents.js';
import type { ProgressCallback } from './progress.js';

/** What to rebase onto. */
export interface RebaseOptions {
  /** The new backing file name to record; undefined (qemu-img's `-b ""`) removes the backing file. */
  backingFile?: string;
  /** The new backing file's format, recorded in the backing-format extension. */
  backingFormat?: string;
  /** The new backing image, opened (safe mode only; undefined with no new backing file). */
  newBacking?: Image;
  /** -u: only rewrite the header. */
  unsafe?: boolean;
  tests?: ByteTests;
  onProgress?: ProgressCallback;
}

/** What a safe rebase copied. */
export interface RebaseResult {
  /** Guest bytes written into the image so it reads the same through the new chain. */
  bytesCopied: number;
}

/** Checks that `image` is a qcow2 image open for writing, the only kind whose backing file can change. */
export function requireQcow2(image: Image, backingFile = ''): Qcow2Image {
  if (!(image instanceof Qcow2Image)) {
    throw new UnsupportedFeatureError(`Could not change the backing file to '${backingFile}': format ${image.format} has no backing file`).inFile(image.name);
  }
  return image;
}

/**
 * Rebases `image` (opened writable, with its current backing chain unless unsafe)
 * onto `options.newBacking`, then records the new name and format in its header.
 */
export async function rebaseImage(image: Image, options: RebaseOptions): Promise<RebaseResult> {
  const qcow2 = requireQcow2(image, options.backingFile);
  const file = options.backingFile === '' ? undefined : options.backingFile;
  const reference = { file, format: file === undefined ? undefined : options.backingFormat };
  try {
    checkBackingReference(qcow2.metadata, reference);
  } catch (error) {
    throw error instanceof PlatterError ? error.inFile(image.name) : error;
  }
  const result: RebaseResult = { bytesCopied: 0 };
  if (!options.unsafe) result.bytesCopied = await copyDifferences(qcow2, options);
  await qcow2.flush();
  await writeBackingReference(qcow2.device, qcow2.metadata, reference);
  return result;
}

/**
 * Writes into the top layer every cluster-aligned run, among those the top
 * layer does not hold, where the old chain and the new one read differently.
 */
async function copyDifferences(image: Qcow2Image, options: RebaseOptions): Promise<number> {
  const clusterSize = image.metadata.clusterSize;
  const oldBytes = new Uint8Array(DIFF_CHUNK);
  const newBytes = new Uint8Array(DIFF_CHUNK);
  let copied = 0;
  options.onProgress?.(0, image.size);
  for await (const extent of walkExtents(image, 0, image.size)) {
    const end = extent.start + extent.length;
    const ownedByTop = extent.depth === 0 && extent.kind !== 'unallocated';
    for (let at = extent.start; at < end && !ownedByTop; ) {
      const next = Math.min(end, (Math.floor(at / DIFF_CHUNK) + 1) * DIFF_CHUNK);
      const length = next - at;
      const oldZero = extent.kind !== 'data';
      if (!(oldZero && (await readsAsZeros(options.newBacking, at, length)))) {
        const before = oldBytes.subarray(0, length);
        const after = newBytes.subarray(0, length);
        if (oldZero) before.fill(0);
        else await image.readInto(at, before);
        await readOrZero(options.newBacking, at, after);
        for (const [from, to] of differingRuns(before, after, at, clusterSize, options.tests)) {
          await storeOldBytes(image, at + from, before.subarray(from, to), options);
          copied += to - from;
        }
      }
      at = next;
    }
    options.onProgress?.(end, image.size);
  }
  return copied;
}

/**
 * Writes `bytes` (what the old chain reads where the new one would read
 * differently) at guest `offset`: data as data, and zeros as zero clusters
 * (subclusters with extended L2) that stand over the new backing file
 * (qemu-img makes them only past the end of the old backing file, and writes
 * zero bytes elsewhere). Zeros that cover no whole zero unit, and every zero
 * of a version 2 image (which has no zero flag), are stored as data.
 */
async function storeOldBytes(image: Qcow2Image, offset: number, bytes: Uint8Array, options: RebaseOptions): Promise<void> {
  const unit = image.zeroUnit;
  const end = offset + bytes.length;
  const storeZeros = async (from: number, to: number) => {
    const first = Math.min(to, alignUp(from, unit));
    const last = to === image.size ? to : Math.max(first, alignDown(to, unit));
    if (first > from) await image.write(from, bytes.slice(from - offset, first - offset));
    if (last > first) await image.writeZeroesOver(first, last - first, options.newBacking?.size);
    if (to > last) await image.write(last, bytes.slice(last - offset, to - offset));
  };
  let done = offset;
  for (const [from, to] of nonZeroRuns(bytes, offset, unit, options.tests ?? portableByteTests)) {
    if (offset + from > done) await storeZeros(done, offset + from);
    await image.write(offset + from, bytes.slice(from, to));
    done = offset + to;
  }
  if (end > done) await storeZeros(done, end);
}
