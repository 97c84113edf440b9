/** Opening test images as platter images, and small in-memory disks. */

import { openImageFile } from '../../src/node/open.js';
import type { Image } from '../../src/core/image.js';
import { MemoryDevice } from '../../src/core/device.js';
import { RawImage } from '../../formats/raw/index.js';

/** Runs `body` with the image at `path` opened (writable when asked), closing it after. */
export async function withImage<T>(path: string, body: (image: Image) => Promise<T>, writable = false): Promise<T> {
  const image = await openImageFile(path, { writable });
  try {
    return await body(image);
  } finally {
    await image.close();
  }
}

/** A raw image over `size` bytes of memory. */
export function memoryDisk(size: number): { image: RawImage; device: MemoryDevice } {
  const device = new MemoryDevice(size);
  return { image: new RawImage(device), device };
}
