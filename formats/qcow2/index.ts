/**
 * The qcow2 format module: probing and opening (qemu's qcow2_open), with the
 * external data file and backing chain opened through the host.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError, NotFoundError, ReadOnlyError, UsageError } from '../../src/core/errors.js';
import type { FormatModule, Image, ImageHost, OpenOptions } from '../../src/core/image.js';
import { WriteBehindDevice } from '../../src/core/write-behind.js';
import { ClusterMap } from './clusters.js';
import { ClusterAllocator } from './allocate.js';
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY, QCOW2_MAGIC, encodeHeader, hasDataFile, virtualSize } from './header.js';
import { Qcow2Image, type Qcow2Parts } from './image.js';
import { MetadataOverlap } from './overlap.js';
import { checkQcow2, clearUnknownAutoclear } from './check.js';
import { Refcounts } from './refcount.js';
import { Qcow2Writer, type WriterHost } from './write.js';
import { L2Cache } from './l2-cache.js';
import { readMetadata, type Qcow2Metadata } from './metadata.js';

export { Qcow2Image, type Qcow2Parts, appendExtent } from './image.js';
export { openSnapshotView, type SnapshotViewOptions } from './snapshot-view.js';
export { createSnapshot, nextSnapshotId, type CreateSnapshotOptions } from './snapshot-create.js';
export { applySnapshot } from './snapshot-apply.js';
export { deleteSnapshot } from './snapshot-delete.js';
export { encodeSnapshotTable } from './snapshot-table-write.js';
export * from './header.js';
export * from './extensions.js';
export * from './entries.js';
export * from './limits.js';
export { L2Cache, l2CacheCapacity } from './l2-cache.js';
export { ClusterMap, hasHostOffset, type ClusterGeometry, type MappingRun } from './clusters.js';
export { readCompressedCluster } from './compress.js';
export { Refcounts, getRefcount, setRefcount, maxRefcount, refcountBits, refcountsPerBlock, encodeU64, writeU64 } from './refcount.js';
export { ClusterAllocator } from './allocate.js';
export { Qcow2Writer } from './write.js';
export { writeQcow2Skeleton, validateCreateOptions, l1EntriesFor, QCOW2_CREATE_DEFAULTS, type Qcow2CreateOptions } from './create.js';
export { checkQcow2, type Qcow2CheckResult, type RepairMode } from './check.js';
export { amendHeader } from './amend.js';
export { fullyAllocatedBytes, refcountMetadataBytes, bitmapBytes } from './measure.js';
export { readMetadata, readL1Table, type Qcow2Metadata } from './metadata.js';
export { readSnapshotTable, findSnapshot, snapshotInfo, SnapshotHeader, SnapshotExtraData, type Qcow2Snapshot, type SnapshotRef } from './snapshots.js';
export { readBitmapDirectory, bitmapClusters, dirtyRanges, BitmapDirectoryEntry, BITMAP_AUTO, BITMAP_IN_USE, type BitmapCluster, type BitmapInfo } from './bitmaps.js';
export { storeBitmaps, type BitmapToStore } from './bitmaps-write.js';
export { editBitmaps, type BitmapAction } from './bitmaps-edit.js';
export { formatSpecificData, describeQcow2 } from './describe.js';

/** Opens the qcow2 image on `device`. */
export async function openQcow2(device: BlockDevice, options: OpenOptions): Promise<Qcow2Image> {
  let metadata = await readMetadata(device, { describeEncrypted: options.describeEncrypted === true && options.writable !== true });
  checkOpenMode(metadata, device, options);
  const { host } = options;
  if (options.writable && (metadata.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) metadata = await repairDirty(device, metadata, host);
  if (options.writable) await clearUnknownAutoclear(device, metadata);
  let dataDevice: BlockDevice | undefined = device;
  let backing: Image | undefined;
  try {
    const skipDataFile = options.noBacking && !options.withDataFile;
    if (hasDataFile(metadata.header)) dataDevice = skipDataFile ? undefined : await openDataFile(metadata, device, host, options.writable === true);
    if (metadata.backingFileName !== undefined && !options.noBacking) {
      backing = await openBackingImage(metadata, device, host);
    }
  } catch (error) {
    if (dataDevice && dataDevice !== device) await dataDevice.close();
    throw error;
  }
  // Metadata (tables, refcounts, header) goes through the queue when asked; guest data never does.
  const metadataDevice = options.writable && options.writeBehindMetadata ? new WriteBehindDevice(device) : device;
  const cache = new L2Cache(metadataDevice, metadata.clusterSize);
  const map = new ClusterMap(metadata.geometry, metadata.l1, metadata.header.l1TableOffset, cache);
  const parts: Qcow2Parts = { device, dataDevice, metadata, map, size: virtualSize(metadata.header), backing, host, ownsFiles: true };
  const image = new Qcow2Image(parts);
  if (options.writable) {
    try {
      parts.writer = await openWriter(image, parts, cache, metadataDevice, options.writeBehindMetadata === true);
    } catch (error) {
      await image.close();
      throw error;
    }
  }
  return image;
}

/**
 * The write side of an image opened writable: refcounts, allocator and writer
 * over the same cache, writing metadata to `device` (the image file, or a
 * write-behind queue over it, in which case data writes overlap too).
 */
async function openWriter(
  image: Qcow2Image,
  parts: Qcow2Parts,
  cache: L2Cache,
  device: BlockDevice,
  writeBehind: boolean,
): Promise<Qcow2Writer> {
  const { metadata } = parts;
  const { header } = metadata;
  const refcounts = await Refcounts.load(
    device,
    {
      clusterSize: metadata.clusterSize,
      refcountOrder: header.refcountOrder,
      tableOffset: header.refcountTableOffset,
      tableClusters: header.refcountTableClusters,
    },
    async (tableOffset, tableClusters) => {
      await device.flush?.();
      header.refcountTableOffset = tableOffset;
      header.refcountTableClusters = tableClusters;
      await device.write!(0, encodeHeader(header));
    },
    { blocksInsideFile: true },
  );
  const overlap = new MetadataOverlap(metadata, refcounts);
  const host: WriterHost = {
    device,
    metadata,
    l2Cache: cache,
    allocator: new ClusterAllocator(refcounts, overlap),
    overlap,
    size: () => parts.size,
    setSize: (size) => {
      parts.size = size;
    },
    setMap: (map) => {
      parts.map = map;
    },
    readGuest: (offset, length) => image.read(offset, length),
    dataDevice: () => parts.dataDevice,
    backingSize: () => parts.backing?.size,
  };
  return new Qcow2Writer(host, writeBehind);
}

/**
 * Writing refuses images marked corrupt and read-only files; reading them only
 * warns. A dirty image (lazy refcounts, not closed cleanly) is repaired before
 * writing, see repairDirty.
 */
function checkOpenMode(metadata: Qcow2Metadata, device: BlockDevice, options: OpenOptions): void {
  const features = metadata.header.incompatibleFeatures;
  const corrupt = (features & INCOMPAT_CORRUPT) !== 0n;
  const dirty = (features & INCOMPAT_DIRTY) !== 0n;
  if (options.writable) {
    if (corrupt) throw new CorruptImageError('image is marked corrupt and cannot be opened for writing', 72);
    if (!device.writable || !device.write) throw new ReadOnlyError(`${device.name} is not writable`);
    return;
  }
  if (corrupt) options.host.warn('image is marked corrupt; opened read-only');
  else if (dirty) {
    options.host.warn('image was not closed cleanly (dirty bit set); refcounts may be stale; opened read-only');
  }
}

/**
 * An image left dirty has refcounts that lag its tables; writing on them could
 * hand out a cluster still in use. As qemu does when it opens such an image for
 * writing, the refcounts are rebuilt first (check -r all), which clears the
 * dirty bit; an image that does not come out clean is refused.
 */
async function repairDirty(device: BlockDevice, metadata: Qcow2Metadata, host: ImageHost): Promise<Qcow2Metadata> {
  const result = await checkQcow2(device, metadata, 'all');
  await device.flush?.();
  const repaired = await readMetadata(device);
  if ((repaired.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
    throw new CorruptImageError("image was not closed cleanly (dirty bit set) and could not be repaired; see 'platter check'", 72);
  }
  const fixed = result.corruptionsFixed + result.leaksFixed;
  host.warn(`image was not closed cleanly (dirty bit set); refcounts repaired${fixed > 0 ? ` (${result.corruptionsFixed} corruptions and ${result.leaksFixed} leaks fixed)` : ''}`);
  return repaired;
}

async function openDataFile(metadata: Qcow2Metadata, device: BlockDevice, host: ImageHost, writable: boolean): Promise<BlockDevice> {
  const name = metadata.extensions.dataFile;
  if (name === undefined || name === '') {
    throw new CorruptImageError('the image needs an external data file but does not name one', 72);
  }
  if (!host.openNamedFile) throw new UsageError(`cannot open data file '${name}': no file access here`);
  try {
    return await host.openNamedFile(name, device, { writable });
  } catch (error) {
    throw namedFileError(error, 'data file', name, device, host);
  }
}

async function openBackingImage(metadata: Qcow2Metadata, device: BlockDevice, host: ImageHost): Promise<Image> {
  const name = metadata.backingFileName!;
  if (!host.openBacking) throw new UsageError(`cannot open backing file '${name}': no file access here`);
  try {
    return await host.openBacking(name, device, metadata.extensions.backingFormat);
  } catch (error) {
    throw namedFileError(error, 'backing file', name, device, host);
  }
}

/** A missing file named inside the image is reported against the image, with the path tried. */
function namedFileError(error: unknown, what: string, name: string, device: BlockDevice, host: ImageHost): unknown {
  if (!(error instanceof NotFoundError)) return error;
  const path = host.resolveName?.(name, device) ?? name;
  const reason = error.message.replace(/^Could not open: /, '');
  return new NotFoundError(`could not open ${what} '${path}': ${reason}`, { path, name }).inFile(device.name);
}

/**
 * The magic and a version of 2 or more, as qemu's probe asks: version 1 is the
 * older qcow format, and a file with version 0 is taken for raw. qemu reads
 * bytes past the end of a short file as zeros, so a file of 8 to 71 bytes
 * with the magic and a version is qcow2 (and refused when opened as too
 * short), and one of 4 to 7 bytes has version 0: raw.
 */
function looksLikeQcow2(head: Uint8Array): boolean {
  if (head.length < 8) return false;
  const view = new DataView(head.buffer, head.byteOffset, 8);
  return view.getUint32(0) === QCOW2_MAGIC && view.getUint32(4) >= 2;
}

/** The qcow2 FormatModule: certain on the magic and version, blind otherwise. */
export const qcow2Format: FormatModule = {
  name: 'qcow2',
  probe: (head) => (looksLikeQcow2(head) ? 100 : 0),
  open: openQcow2,
};
