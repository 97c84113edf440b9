/**
 * `amend`: change options of an existing image (qemu-img amend): compat,
 * refcount_bits, lazy_refcounts, size, and the name of an external data
 * file, applied in qemu's order (an upgrade first, a downgrade last).
 */

import { borrowed } from '../core/borrowed.js';
import type { BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { ImageHost } from '../core/image.js';
import { openImage } from '../engine/open.js';
import { optionBoolean } from '../core/options.js';
import { parseSize } from '../core/size.js';
import { amendHeader, checkDowngrade, lazyRefcountsOn } from '../../formats/qcow2/amend.js';
import { expandZeroClusters } from '../../formats/qcow2/downgrade.js';
import { AUTOCLEAR_DATA_FILE_RAW } from '../../formats/qcow2/features.js';
import { hasDataFile } from '../../formats/qcow2/header.js';
import { openQcow2, type Qcow2Image } from '../../formats/qcow2/index.js';
import { readMetadata } from '../../formats/qcow2/metadata.js';
import { changeRefcountOrder } from '../../formats/qcow2/refcount-order.js';
import { compatVersion, type CreateOption } from './create.js';

/** The options `amend` takes, for `amend -o help`. */
export const AMEND_OPTIONS: readonly CreateOption[] = [
  { name: 'compat', value: 'str', help: 'Version: 0.10 (v2) or 1.1 (v3)' },
  { name: 'data_file', value: 'str', help: 'New name of the external data file (an image that has one)' },
  { name: 'data_file_raw', value: 'bool (on/off)', help: 'off: the external data file need no longer stay a valid raw disk (on is only for new images)' },
  { name: 'lazy_refcounts', value: 'bool (on/off)', help: 'Update refcounts late (version 3)' },
  { name: 'refcount_bits', value: 'num', help: 'Bits per refcount: 1, 2, 4, 8, 16, 32 or 64 (the counts are written again)' },
  { name: 'size', value: 'size', help: 'Virtual size of the disk (grows or shrinks it)' },
];

/** Options only `create` takes: qemu-img names them so. */
const CREATION_ONLY = new Set(['cluster_size', 'compression_type', 'extended_l2', 'preallocation', 'encryption', 'nocow', 'extent_size_hint']);

/** Checks the option names as qemu-img does, with its messages. */
function checkNames(options: Map<string, string>): void {
  const known = new Set(AMEND_OPTIONS.map((option) => option.name));
  for (const key of options.keys()) {
    if (key === 'backing_file' || key === 'backing_fmt') throw new UsageError("Cannot amend the backing file\nYou can use 'platter rebase' instead.");
    if (CREATION_ONLY.has(key) || key.startsWith('encrypt.')) throw new UsageError(`Invalid parameter '${key}'\nThis option is only supported for image creation`);
    if (!known.has(key)) throw new UsageError(`Invalid parameter '${key}'`);
  }
}

/** The version `compat=` asks for (undefined when not given), refused with qemu-img's amend message when unknown. */
function parseCompat(compat: string | undefined): 2 | 3 | undefined {
  if (compat === undefined) return undefined;
  const version = compatVersion(compat);
  if (version === undefined) throw new UsageError(`Unknown compatibility level ${compat}`);
  return version;
}

/**
 * Applies `-o` options to the qcow2 image on the writable `device` (which
 * stays open). `host` opens the files the image names (its data file and
 * backing chain), as openImage opens them: amend needs them as qemu-img does.
 */
export async function amendImage(device: BlockDevice, format: string, options: Map<string, string>, host: ImageHost): Promise<void> {
  if (format !== 'qcow2') throw new UnsupportedFeatureError(`Format driver '${format}' does not support option amendment`);
  // First, as qemu-img opens it: an image marked corrupt or with a missing backing file is refused, a dirty one repaired.
  await (await openWritable(device, host)).close();
  checkNames(options);
  const metadata = await readMetadata(device);
  const current = metadata.header.version;
  const version = parseCompat(options.get('compat')) ?? current;
  // A downgrade drops lazy refcounts unless they are asked for (which it cannot keep).
  const lazy = optionBoolean(options.get('lazy_refcounts'), 'lazy_refcounts', version === 3 && lazyRefcountsOn(metadata));
  if (lazy && version < 3) throw new UsageError('Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)');
  const bits = options.get('refcount_bits');
  if (bits !== undefined && !/^(1|2|4|8|16|32|64)$/.test(bits)) throw new UsageError('Refcount width must be a power of two and may not exceed 64 bits');
  const order = bits === undefined ? undefined : Math.log2(Number(bits));
  if (order !== undefined && order !== 4 && version < 3) {
    throw new UsageError('Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  // On only where it is on already: qemu cannot know that an existing data file reads as the disk.
  const rawNow = (metadata.header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
  const dataFileRaw = optionBoolean(options.get('data_file_raw'), 'data_file_raw', rawNow);
  if (dataFileRaw && !rawNow) throw new UsageError('data-file-raw cannot be set on existing images');
  const dataFile = options.get('data_file');
  if (dataFile !== undefined && !hasDataFile(metadata.header)) throw new UsageError('data-file can only be set for images that use an external data file');
  // size=0 leaves the size alone, as in qemu-img (0 is its 'not given').
  const size = (options.has('size') ? parseSize(options.get('size')!, 'size') : 0) || undefined;
  const downgrade = version === 2 && current === 3;
  // Refused before anything changes (qemu-img resizes first and may refuse after).
  if (downgrade) await checkDowngrade(device, metadata, { size: size ?? metadata.header.size, refcountOrder: order ?? metadata.header.refcountOrder });
  await amendHeader(device, metadata, {
    version: version === 3 ? 3 : undefined,
    lazyRefcounts: version === 3 ? lazy : undefined,
    dataFile,
    ...(dataFileRaw ? {} : { dataFileRaw: false as const }),
  });
  if (order !== undefined) await changeRefcountOrder(device, await readMetadata(device), order);
  if (size !== undefined) {
    // As resize does it, with the backing chain open: the space added must read zeros where a longer backing file has data.
    const image = await openWritable(device, host);
    try {
      if (size !== image.size) await image.resize(size);
    } finally {
      await image.close();
    }
  }
  if (downgrade) await downgradeToVersion2(device, host);
}

/** The qcow2 image on `device` opened for writing as every write command opens it: with its data file and backing chain. */
async function openWritable(device: BlockDevice, host: ImageHost): Promise<Qcow2Image> {
  return (await openImage(borrowed(device), { format: 'qcow2', writable: true, host })) as Qcow2Image;
}

/** Writes out the zero clusters (version 2 has none; an image without any is not written), then the version 2 header. */
async function downgradeToVersion2(device: BlockDevice, host: ImageHost): Promise<void> {
  const image = await openQcow2(borrowed(device), { host, writable: true, noBacking: true });
  try {
    await expandZeroClusters(image);
  } finally {
    await image.close();
  }
  await amendHeader(device, await readMetadata(device), { version: 2 });
}
