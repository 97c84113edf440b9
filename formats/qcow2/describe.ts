/**
 * What `info` shows for a qcow2 image, in qemu-img's terms (qemu's
 * qcow2_get_specific_info and bdrv_query_image_info).
 */

import type { BlockDevice } from '../../src/core/device.js';
import type { ImageDescription, ImageHost } from '../../src/core/image.js';
import {
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_NAMES,
  INCOMPAT_CORRUPT,
  INCOMPAT_DIRTY,
  hasDataFile,
  hasExtendedL2,
  isDataFileRaw,
  refcountBitsOf,
} from './header.js';
import { qdictOrder } from '../../src/core/qdict-order.js';
import type { Qcow2Metadata } from './metadata.js';
import { snapshotInfo } from './snapshots.js';

/** The qemu-img `format-specific` data of a qcow2 image, keys in qemu's order. */
export function formatSpecificData(metadata: Qcow2Metadata): Record<string, unknown> {
  const { header, extensions, bitmaps } = metadata;
  const compressionType = COMPRESSION_NAMES[header.compressionType] ?? String(header.compressionType);
  if (header.version === 2) {
    return withEncrypt({ compat: '0.10', 'compression-type': compressionType, 'refcount-bits': refcountBitsOf(header) }, metadata);
  }
  const data: Record<string, unknown> = {
    compat: '1.1',
    'compression-type': compressionType,
    'lazy-refcounts': (header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n,
  };
  if (bitmaps.length > 0) data.bitmaps = bitmaps.map((b) => ({ flags: b.flags, name: b.name, granularity: b.granularity }));
  data['refcount-bits'] = refcountBitsOf(header);
  if (extensions.dataFile !== undefined) data['data-file'] = extensions.dataFile;
  if (hasDataFile(header)) data['data-file-raw'] = isDataFileRaw(header);
  data.corrupt = (header.incompatibleFeatures & INCOMPAT_CORRUPT) !== 0n;
  data['extended-l2'] = hasExtendedL2(header);
  return withEncrypt(data, metadata);
}

/** `data` with the encryption of an encrypted image, in the place qemu's dictionary order gives it. */
function withEncrypt(data: Record<string, unknown>, metadata: Qcow2Metadata): Record<string, unknown> {
  return metadata.encrypt ? qdictOrder({ ...data, encrypt: metadata.encrypt }) : data;
}

/** The ImageDescription of a qcow2 image stored on `device`. */
export function describeQcow2(metadata: Qcow2Metadata, device: BlockDevice, host: ImageHost): ImageDescription {
  const { header } = metadata;
  const description: ImageDescription = {
    clusterSize: metadata.clusterSize,
    dirty: (header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n,
    formatSpecific: { type: 'qcow2', data: formatSpecificData(metadata) },
    snapshots: metadata.snapshots.map(snapshotInfo),
  };
  if (metadata.encrypt) description.encrypted = true;
  if (metadata.backingFileName !== undefined) {
    description.backingFilename = metadata.backingFileName;
    description.fullBackingFilename = host.resolveName?.(metadata.backingFileName, device) ?? metadata.backingFileName;
    if (metadata.extensions.backingFormat !== undefined) description.backingFormat = metadata.extensions.backingFormat;
  }
  return description;
}
