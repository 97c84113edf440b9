/** Opening image files by path. */

import { deviceWindow, type RawWindow } from '../core/block-options.js';
import type { BlockDevice } from '../core/device.js';
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
  /** A raw image that is part of the file (qemu's raw driver with offset and size): opened as raw, under `name`. */
  window?: RawWindow;
  /** An encrypted image opens, to be described only (info). */
  describeEncrypted?: boolean;
}

export type { RawWindow };

/** Opens the image file at `path` (read-only unless `writable`), probing its format unless given. */
export async function openImageFile(path: string, options: OpenFileOptions = {}): Promise<Image> {
  const file = await FileDevice.open(path, { writable: options.writable, flushes: options.flushes });
  let device: BlockDevice = file;
  try {
    if (options.window) device = deviceWindow(file, options.window);
    return await openImage(device, {
      format: options.window ? 'raw' : options.format,
      writable: options.writable,
      noBacking: options.noBacking,
      describeEncrypted: options.describeEncrypted,
      host: nodeHost(options),
    });
  } catch (error) {
    await file.close();
    throw error;
  }
}
