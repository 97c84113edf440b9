/** `create`: a new, empty image of a given size. */

import type { BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import { rejectUnknownOptions } from '../core/options.js';

/** What to create. */
export interface CreateRequest {
  format: string;
  size: number;
  /** Parsed `-o` options. */
  options: Map<string, string>;
}

const RAW_OPTIONS = ['preallocation', 'size'];
/** Zeros are written in units of this size for `preallocation=full`. */
const ZERO_FILL_CHUNK = 1 << 20;

/** Writes a new image of `request.format` onto an empty, writable device. */
export async function createImage(device: BlockDevice, request: CreateRequest): Promise<void> {
  if (request.format !== 'raw') {
    throw new UnsupportedFeatureError(`creating ${request.format} images is not supported yet`);
  }
  rejectUnknownOptions(request.options, RAW_OPTIONS, 'raw');
  const preallocation = request.options.get('preallocation') ?? 'off';
  if (preallocation === 'off' || preallocation === 'falloc') {
    // Without fallocate in a portable file API, falloc leaves a sparse file: it reads the same.
    await device.truncate!(request.size);
  } else if (preallocation === 'full') {
    await writeZeros(device, request.size);
  } else {
    throw new UsageError(`invalid preallocation mode '${preallocation}' (off, falloc, full)`);
  }
}

async function writeZeros(device: BlockDevice, size: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(ZERO_FILL_CHUNK, size));
  for (let offset = 0; offset < size; offset += zeros.length) {
    await device.write!(offset, zeros.subarray(0, Math.min(zeros.length, size - offset)));
  }
  await device.truncate!(size);
}
