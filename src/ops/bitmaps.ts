/**
 * convert --bitmaps: the source's persistent dirty bitmaps go into the qcow2
 * output with their names, granularities, enabled state and bits, as
 * qemu-img copies them. What qemu-img refuses is refused before anything is
 * written, with its words: a source that cannot have bitmaps, an
 * inconsistent bitmap (one left in use: its bits cannot be trusted) unless
 * it is to be skipped, an output of another size, a name the output has.
 */

import { PlatterError, UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { BITMAP_AUTO, BITMAP_IN_USE, bitmapClusters, editBitmaps as editQcow2Bitmaps, Qcow2Image, storeBitmaps, type BitmapAction, type BitmapInfo, type BitmapToStore } from '../../formats/qcow2/index.js';

export type { BitmapAction };

/** The bitmaps of one source to copy. */
export interface BitmapCopy {
  source: Qcow2Image;
  bitmaps: BitmapInfo[];
}

/**
 * The bitmaps of `source` to copy, checked as qemu-img checks them before the
 * output is made; an inconsistent one is refused, or with `skipBroken` left
 * out and reported to `warn`.
 */
export async function bitmapsToCopy(source: Image, skipBroken: boolean, warn: (message: string) => void): Promise<BitmapCopy> {
  if (!(source instanceof Qcow2Image)) throw new UsageError('Source lacks bitmap support');
  const bitmaps: BitmapInfo[] = [];
  for (const bitmap of source.metadata.bitmaps) {
    if ((bitmap.flagBits & BITMAP_IN_USE) === 0) bitmaps.push(bitmap);
    else if (skipBroken) warn(`Skipping inconsistent bitmap '${bitmap.name}'`);
    else throw new UsageError(`Cannot copy inconsistent bitmap '${bitmap.name}'\nTry --skip-broken-bitmaps, or remove the bitmap`);
  }
  // Every table is read once now (they are small), so a malformed one fails before the output exists.
  for (const bitmap of bitmaps) {
    await inSource(source, async () => {
      for await (const cluster of bitmapClusters(source.device, bitmap, source.size, source.metadata.clusterSize)) void cluster;
    });
  }
  return { source, bitmaps };
}

/** Runs `read`, naming the source file in what it throws about the image. */
async function inSource<T>(source: Image, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw error instanceof PlatterError ? error.inFile(source.name) : error;
  }
}

/**
 * Refuses, before anything is written, a copy into `target` that qemu-img
 * would fail (another size, a name taken). Bitmaps the target has already
 * stay, beside the copied ones, and the enabled ones record the copy's
 * writes (see storeWrittenBitmaps).
 */
export function checkBitmapTarget(copy: BitmapCopy, target: Image): void {
  if (copy.bitmaps.length === 0) return;
  if (!(target instanceof Qcow2Image) || target.metadata.header.version < 3) throw new UsageError(`Format driver '${target.format}' does not support bitmaps`);
  // qemu-img adds them last first: its messages name the last bitmap that fails.
  for (const bitmap of [...copy.bitmaps].reverse()) {
    if (target.metadata.bitmaps.some((held) => held.name === bitmap.name)) {
      throw new UsageError(`Failed to create bitmap ${bitmap.name}: Bitmap already exists: ${bitmap.name}`);
    }
    if (target.size !== copy.source.size) {
      throw new UsageError(
        `Failed to populate bitmap ${bitmap.name}: Bitmaps are of different sizes (destination size is ${target.size}, source size is ${copy.source.size}) and can't be merged`,
      );
    }
  }
}

/** Stores the bitmaps of `copy` in `target`: a qcow2 image open for writing, of the source's size. */
export async function copyBitmaps(copy: BitmapCopy, target: Image): Promise<void> {
  checkBitmapTarget(copy, target);
  if (copy.bitmaps.length === 0) return;
  const { source } = copy;
  const clusterSize = source.metadata.clusterSize;
  const toStore: BitmapToStore[] = copy.bitmaps.map((bitmap) => ({
    name: bitmap.name,
    granularity: bitmap.granularity,
    auto: (bitmap.flagBits & BITMAP_AUTO) !== 0,
    bits: bitsOf(source, bitmap, clusterSize),
  }));
  await storeBitmaps(target as Qcow2Image, toStore);
}

/** The bitmap's bits, one source cluster at a time (the output's clusters may be of another size). */
async function* bitsOf(source: Qcow2Image, bitmap: BitmapInfo, clusterSize: number): AsyncGenerator<Uint8Array> {
  const clusters = bitmapClusters(source.device, bitmap, source.size, clusterSize);
  for (;;) {
    const next = await inSource(source, () => clusters.next());
    if (next.done) return;
    const cluster = next.value;
    if (cluster.kind === 'data') yield await inSource(source, () => source.device.read(cluster.offset, clusterSize));
    else yield new Uint8Array(clusterSize).fill(cluster.kind === 'ones' ? 0xff : 0);
  }
}

/**
 * qemu-img bitmap: applies `actions` in order to the bitmap `name` of
 * `image` (a qcow2 image open for writing), and flushes.
 */
export async function editBitmaps(image: Image, name: string, actions: readonly BitmapAction[]): Promise<void> {
  if (!(image instanceof Qcow2Image)) throw new UnsupportedFeatureError(`Format driver '${image.format}' does not support bitmaps`);
  await editQcow2Bitmaps(image, name, actions);
  await image.flush();
}

/** An image that can hold bitmaps (the source of a merge). */
export type Qcow2Source = Qcow2Image;

/** True when `image` is a qcow2 image. */
export function isQcow2(image: Image): image is Qcow2Image {
  return image instanceof Qcow2Image;
}
