/** Opening image files by path. */

import type { RawWindow } from '../core/block-options.js';
import { SliceDevice, type BlockDevice } from '../core/device.js';
import { UsageError } from '../core/errors.js';
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
}

export type { RawWindow };

/** Opens the image file at `path` (read-only unless `writable`), probing its format unless given. */
export async function openImageFile(path: string, options: OpenFileOptions = {}): Promise<Image> {
  const file = await FileDevice.open(path, { writable: options.writable, flushes: options.flushes });
  let device: BlockDevice = file;
  try {
    if (options.window) device = windowOf(file, options.window);
    return await openImage(device, {
      format: options.window ? 'raw' : options.format,
      writable: options.writable,
      noBacking: options.noBacking,
      host: nodeHost(options),
    });
  } catch (error) {
    await file.close();
    throw error;
  }
}

/** The part of `file` that `window` names, checked against the file's size as qemu's raw driver checks it. */
function windowOf(file: FileDevice, window: RawWindow): BlockDevice {
  const { offset } = window;
  if (offset > file.size) throw new UsageError(`Offset (${offset}) cannot be greater than size of the containing file (${file.size})`).inFile(file.name);
  const size = window.size ?? file.size - offset;
  if (offset + size > file.size) {
    throw new UsageError(`The sum of offset (${offset}) and size (${size}) has to be smaller or equal to the actual size of the containing file (${file.size})`).inFile(
      file.name,
    );
  }
  return new SliceDevice(file, offset, size, { name: window.name, owns: true });
}
