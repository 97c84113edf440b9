/** Files named by an image being made: where a name resolves, and how a new data file comes to be. */

import { isAbsolute, join, dirname, resolve } from 'node:path';
import type { CreateRequest } from '../ops/create.js';
import { FileDevice } from '../node/file-device.js';
import { writeZeros } from '../core/device.js';
import { sameFile } from '../node/byte-tests.js';

/** A name written into an image resolves against the image's directory (qemu's path_combine). */
export function besideImage(image: string, name: string): string {
  return isAbsolute(name) ? name : join(dirname(image), name);
}

/** True when `name`, written into the image at `image`, names that image itself (as the same path, or the same file). */
export async function namesImageItself(image: string, name: string): Promise<boolean> {
  const named = besideImage(image, name);
  return resolve(named) === resolve(image) || (await sameFile(named, image));
}

/** Creates the external data file `name` of the image at `image`, beside it, `size` bytes long: sparse, or with `fill` zeros written. */
export function dataFileCreator(image: string): NonNullable<CreateRequest['createDataFile']> {
  return async (name, size, fill = false) => {
    const data = await FileDevice.open(besideImage(image, name), { create: true });
    try {
      if (fill) await writeZeros(data, 0, size);
      await data.truncate(size);
    } finally {
      await data.close();
    }
  };
}
