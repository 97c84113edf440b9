/** How commands open images: read-only by default, warnings on stderr. */

import { PlatterError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { openImageFile, type OpenFileOptions } from '../node/open.js';
import { openedAlone, rawWindowNamed } from './image-opts.js';
import { warn } from './report.js';

/** Opens an image file for a command; `quiet`: its warnings are not printed (an open only to see that it opens). */
export function openForCli(path: string, options: Omit<OpenFileOptions, 'warn'> & { quiet?: boolean } = {}): Promise<Image> {
  const { quiet, ...rest } = options;
  const part = rawWindowNamed(path);
  const file = part?.path ?? path;
  const noBacking = rest.noBacking === true || (openedAlone(path) && !rest.wholeChain);
  return openImageFile(file, { ...rest, noBacking, ...(part ? { window: part.window } : {}), warn: quiet ? () => {} : (message, about) => warn(`${about ?? path}: ${message}`) });
}

/**
 * Warns, as qemu-img and qemu-nbd do, when an image opened for writing was
 * probed as raw: its first sector is then guarded against writes that would
 * make it read as another format.
 */
export function warnProbedRaw(image: Image, path: string): void {
  if (image.writable && image.format === 'raw' && image.probed) {
    warn(`${path}: the format was not given and probing guessed raw; writes that would change what block 0 probes as are refused (give -f raw to lift this)`);
  }
}

/**
 * Opens `path`, runs `work` on the image and closes it. Errors from the readers
 * below do not know which file they read; the one line on stderr names it.
 */
export async function withImage<T>(path: string, options: Omit<OpenFileOptions, 'warn'>, work: (image: Image) => Promise<T>): Promise<T> {
  const image = await openForCli(path, options);
  try {
    return await work(image);
  } catch (error) {
    if (error instanceof PlatterError) error.inFile(path);
    throw error;
  } finally {
    await image.close();
  }
}
