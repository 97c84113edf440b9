/** Files named by an image being made: where a name resolves, and how a new data file comes to be. */

import { isAbsolute, join, dirname } from 'node:path';
import type { CreateRequest } from '../ops/create.js';
import { FileDevice } from '../node/file-device.js';

/** A name written into an image resolves against the image's directory (qemu's path_combine). */
export function besideImage(image: string, name: string): string {
  return isAbsolute(name) ? name : join(dirname(image), name);
}

/** Creates the external data file `name` of the image at `image`, beside it, `size` bytes long (sparse). */
export function dataFileCreator(image: string): NonNullable<CreateRequest['createDataFile']> {
  return async (name, size) => {
    const data = await FileDevice.open(besideImage(image, name), { create: true });
    try {
      await data.truncate(size);
    } finally {
      await data.close();
    }
  };
}
