/** `amend`: change options of an existing image (qemu-img amend); compat only. */

import type { BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import { amendCompat } from '../../formats/qcow2/amend.js';
import { readMetadata } from '../../formats/qcow2/metadata.js';

/** Applies `-o` options to the qcow2 image on the writable `device`. */
export async function amendImage(device: BlockDevice, format: string, options: Map<string, string>): Promise<void> {
  if (format !== 'qcow2') throw new UnsupportedFeatureError(`Format driver '${format}' does not support option amendment`);
  for (const key of options.keys()) {
    if (key !== 'compat') throw new UsageError(`amending '${key}' is not supported (only compat)`);
  }
  const compat = options.get('compat');
  if (compat === undefined) throw new UsageError('nothing to amend (use -o compat=0.10|1.1)');
  let version: 2 | 3;
  if (compat === '0.10' || compat === 'v2') version = 2;
  else if (compat === '1.1' || compat === 'v3') version = 3;
  else throw new UsageError(`invalid compatibility level '${compat}' (0.10, 1.1, v2, v3)`);
  await amendCompat(device, await readMetadata(device), version);
}
