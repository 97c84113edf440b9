/** `resize`: change an image's virtual size (qemu-img resize). */

import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import type { SizeChange } from '../core/size.js';
import { Qcow2Image } from '../../formats/qcow2/image.js';
import type { ResizePreallocation } from '../../formats/qcow2/resize.js';
import { PREALLOCATION_MODES } from '../../formats/qcow2/create.js';
import { writeZeros } from '../core/device.js';
import { RawImage } from '../../formats/raw/index.js';

/**
 * A raw file to the byte, as qemu's file driver truncates it. `full` writes
 * zeros over what it adds; `falloc` cannot reserve blocks without fallocate
 * in a portable file API, so it leaves them sparse (they read the same);
 * `metadata` means nothing for a raw file.
 */
async function resizeRaw(image: RawImage, size: number, preallocation: ResizePreallocation): Promise<void> {
  const device = image.device;
  // A raw image that is a fixed part of its file (qemu's raw driver with offset and size), as qemu-img refuses it.
  if (!device.truncate || !device.write) throw new UnsupportedFeatureError('Cannot resize fixed-size raw disks');
  if (preallocation === 'metadata') throw new UnsupportedFeatureError('Unsupported preallocation mode: metadata');
  // (Preallocating while shrinking was refused by resizeImage.)
  const oldEnd = device.size;
  await device.truncate(size);
  if (preallocation === 'full') await writeZeros(device, oldEnd, size - oldEnd);
}

/** The size `change` asks for, from `current`. */
export function targetSize(current: number, change: SizeChange): number {
  const size = change.mode === 'grow' ? current + change.bytes : change.mode === 'shrink' ? current - change.bytes : change.bytes;
  if (size <= 0) throw new UsageError('New image size must be positive');
  return size;
}

/** What a refused shrink adds, in qemu-img's words. */
const SHRINK_WARNING =
  "Shrinking an image will delete all data beyond the shrunken image's end. Before performing such an operation, make sure there is no important data there.";

/**
 * Resizes an image opened writable, as qemu does: a raw file takes the size
 * to the byte, a qcow2 image only whole sectors. Shrinking needs `shrink`
 * (data past the new end is lost, but for what internal snapshots hold); qcow2
 * v2 images with internal snapshots cannot change size.
 */
export async function resizeImage(image: Image, change: SizeChange, shrink: boolean, preallocation: string = 'off'): Promise<number> {
  if (!(PREALLOCATION_MODES as readonly string[]).includes(preallocation)) throw new UsageError(`Invalid preallocation mode '${preallocation}'`);
  const mode = preallocation as ResizePreallocation;
  const size = targetSize(image.size, change);
  // qemu-img's order: preallocation asks for growth first (the same size too), then a shrink needs --shrink.
  if (size <= image.size && mode !== 'off') throw new UsageError('Preallocation can only be used for growing images');
  if (size < image.size && !shrink) throw new UsageError('Use the --shrink option to perform a shrink operation.', { warnings: [SHRINK_WARNING] });
  if (image instanceof Qcow2Image) {
    await image.resize(size, mode);
  } else if (image instanceof RawImage) {
    await resizeRaw(image, size, mode);
  } else {
    throw new UnsupportedFeatureError(`resizing ${image.format} images is not supported`);
  }
  await image.flush?.();
  return size;
}
