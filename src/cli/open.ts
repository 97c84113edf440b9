/** How commands open images: read-only by default, warnings on stderr. */

import type { Image } from '../core/image.js';
import { openImageFile, type OpenFileOptions } from '../node/open.js';
import { warn } from './report.js';

/** Opens an image file for a command. */
export function openForCli(path: string, options: Omit<OpenFileOptions, 'warn'> = {}): Promise<Image> {
  return openImageFile(path, { ...options, warn: (message) => warn(`${path}: ${message}`) });
}
