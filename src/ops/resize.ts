/** `resize`: change an image's virtual size (qemu-img resize). */

import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import type { SizeChange } from '../core/size.js';
import { Qcow2Image } from '../../formats/qcow2/image.js';
import { RawImage } from '../../formats/raw/index.js';

/** The size `change` asks for, from `current`. */
export function targetSize(current: number, change: SizeChange): number {
  const size = change.mode === 'grow' ? current + change.bytes : change.mode === 'shrink' ? current - change.bytes : change.bytes;
  if (size < 0) throw new UsageError('New image size must be positive');
  return size;
}

/**
 * Resizes an image opened writable, as qemu does: a raw file takes the size
 * to the byte, a qcow2 image only whole sectors. Shrinking needs `shrink`
 * (data past the new end is lost, but for what internal snapshots hold); qcow2
 * v2 images with internal snapshots cannot change size.
 */
export async function resizeImage(image: Image, change: SizeChange, shrink: boolean): Promise<number> {
  const size = targetSize(image.size, change);
  if (size < image.size && !shrink) throw new UsageError('Use the --shrink option to perform a shrink operation.');
  if (image instanceof Qcow2Image) {
    await image.resize(size);
  } else if (image instanceof RawImage) {
    if (!image.device.truncate) throw new UnsupportedFeatureError(`${image.name} cannot change size`);
    await image.device.truncate(size);
  } else {
    throw new UnsupportedFeatureError(`resizing ${image.format} images is not supported`);
  }
  await image.flush?.();
  return size;
}
