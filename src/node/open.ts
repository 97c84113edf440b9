/** Opening image files by path. */

import type { Image } from '../core/image.js';
import { openImage } from '../engine/open.js';
import { FileDevice } from './file-device.js';
import { nodeHost, type NodeHostOptions } from './host.js';

/** Options for opening an image file. */
export interface OpenFileOptions extends NodeHostOptions {
  format?: string;
  writable?: boolean;
  noBacking?: boolean;
  /** Whether flush reaches the disk (fdatasync) for a writable image; default true. */
  flushes?: boolean;
}

/** Opens the image file at `path` (read-only unless `writable`), probing its format unless given. */
export async function openImageFile(path: string, options: OpenFileOptions = {}): Promise<Image> {
  const device = await FileDevice.open(path, { writable: options.writable, flushes: options.flushes });
  try {
    return await openImage(device, {
      format: options.format,
      writable: options.writable,
      noBacking: options.noBacking,
      host: nodeHost(options),
    });
  } catch (error) {
    await device.close();
    throw error;
  }
}
