/** Which files a command's source reads from, so no output ever lands on one of them. */

import type { BlockDevice } from '../core/device.js';
import type { Image } from '../core/image.js';
import { sameFile } from '../node/byte-tests.js';

/** The files an image reads from: its own, its external data file and its backing chain's. */
export function sourceFiles(image: Image): string[] {
  const names: string[] = [];
  for (let layer: Image | undefined = image; layer; layer = layer.backing) {
    // A raw image that is part of a file reads that file.
    names.push(layer.device.partOf?.name ?? layer.device.name);
    const dataDevice = (layer as { dataDevice?: BlockDevice }).dataDevice;
    if (dataDevice && dataDevice !== layer.device) names.push(dataDevice.name);
  }
  return names;
}

/** The source file that `target` is (by path, symlink or hard link), or undefined when it is none of them. */
export async function sourceFileAt(image: Image, target: string): Promise<string | undefined> {
  for (const file of sourceFiles(image)) if (await sameFile(file, target)) return file;
  return undefined;
}
