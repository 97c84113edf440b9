/**
 * Writing persistent dirty bitmaps. Storing them in an image that has none
 * (qemu-img convert --bitmaps): for each bitmap its data clusters (all-zero
 * ones are not stored, as qemu leaves them out), then its table, then the
 * directory of all of them; last, one write of cluster 0 adds the bitmaps
 * extension and sets the bitmaps autoclear bit. Until that write the image
 * names no bitmaps: a failure before it leaves only leaked clusters. And
 * marking them in use before platter's own writes, which do not update them.
 */

import { LimitExceededError, UnsupportedFeatureError } from '../../src/core/errors.js';
import { alignUp } from '../../src/core/bytes.js';
import { encodeHeaderCluster } from './amend.js';
import { BITMAP_AUTO, BITMAP_IN_USE, BITMAP_TYPE_DIRTY_TRACKING, bitmapFlagNames, BitmapDirectoryEntry, bitmapTableEntries, type BitmapInfo } from './bitmaps.js';
import { BitmapsExtension, EXT_BITMAPS, type BitmapsPointer } from './extensions.js';
import { AUTOCLEAR_BITMAPS } from './features.js';
import type { Qcow2Image } from './image.js';
import { MAX_BITMAPS, MAX_BITMAP_DIRECTORY_BYTES, MAX_BITMAP_TABLE_ENTRIES } from './limits.js';
import type { WriterHost } from './write.js';

/** One bitmap to store: its name, granularity and whether it is enabled, and its bits. */
export interface BitmapToStore {
  name: string;
  granularity: number;
  /** Enabled (qemu's `auto` flag): qemu keeps it up to date as the guest writes. */
  auto: boolean;
  /**
   * The bitmap's bits in order, in pieces of any length: bit i of the bitmap
   * is bit i % 8 of byte i / 8 (least significant first). Bits past the
   * bitmap's end are ignored; missing ones are zeros.
   */
  bits: AsyncIterable<Uint8Array>;
}

/** A bitmap as its directory entry describes it. */
export interface StoredBitmap {
  /** Where its entry starts in the directory (set when the directory is encoded). */
  entryOffset: number;
  name: Uint8Array;
  granularityBits: number;
  flagBits: number;
  tableOffset: number;
  tableSize: number;
}

const utf8 = new TextEncoder();

/**
 * Stores `bitmaps` in `image`, which must be open for writing, after the
 * bitmaps it has (their names must differ), as qemu-img convert --bitmaps -n
 * adds them beside a target's own.
 */
export async function storeBitmaps(image: Qcow2Image, bitmaps: readonly BitmapToStore[]): Promise<void> {
  const writer = image.writer;
  if (!writer) throw new UnsupportedFeatureError(`cannot store bitmaps: ${image.name} is open read-only`);
  if (bitmaps.length === 0) return;
  const held = image.metadata.bitmaps;
  const taken = bitmaps.find((bitmap) => held.some((other) => other.name === bitmap.name));
  if (taken) throw new UnsupportedFeatureError(`cannot add bitmap '${taken.name}' to ${image.name}: it has one of that name`);
  if (image.metadata.header.version < 3) throw new UnsupportedFeatureError('Cannot store dirty bitmaps in qcow2 v2 files');
  // qemu refuses to open an image whose bitmap has an empty table.
  if (image.size === 0) throw new UnsupportedFeatureError('A disk of 0 bytes has no room for a bitmap');
  if (held.length + bitmaps.length > MAX_BITMAPS) throw new UnsupportedFeatureError(`too many bitmaps (${held.length + bitmaps.length}, at most ${MAX_BITMAPS})`);
  const host = writer.host;
  await writer.serialized(async () => {
    const stored = held.map(storedBitmapOf);
    for (const bitmap of bitmaps) stored.push(await storeBitmap(host, bitmap));
    await installDirectory(host, stored);
  });
}

/** Writes one bitmap's non-zero data clusters and its table; returns where the table went. */
async function storeBitmap(host: WriterHost, bitmap: BitmapToStore): Promise<StoredBitmap> {
  const { clusterSize } = host.metadata;
  const granularityBits = Math.log2(bitmap.granularity);
  const bits = Math.ceil(host.size() / bitmap.granularity);
  const tableSize = bitmapTableEntries(host.size(), bitmap.granularity, clusterSize);
  if (tableSize > MAX_BITMAP_TABLE_ENTRIES) {
    throw new LimitExceededError(`bitmap '${bitmap.name}' needs a table of ${tableSize} entries (at most ${MAX_BITMAP_TABLE_ENTRIES})`);
  }
  const table = new Uint8Array(tableSize * 8);
  const view = new DataView(table.buffer);
  const bitsPerCluster = clusterSize * 8;
  let index = 0;
  let cluster = new Uint8Array(clusterSize);
  let filled = 0;
  /** Stores the cluster being filled and starts the next. */
  const storeCluster = async () => {
    await storeBitsCluster(host, view, index, cluster, bits - index * bitsPerCluster);
    index++;
    cluster = new Uint8Array(clusterSize);
    filled = 0;
  };
  for await (const piece of bitmap.bits) {
    for (let at = 0; at < piece.length && index < tableSize; ) {
      const length = Math.min(clusterSize - filled, piece.length - at);
      cluster.set(piece.subarray(at, at + length), filled);
      filled += length;
      at += length;
      if (filled === clusterSize) await storeCluster();
    }
  }
  if (filled > 0 && index < tableSize) await storeCluster();
  const tableOffset = await writeBitmapTable(host, table);
  return { entryOffset: 0, name: utf8.encode(bitmap.name), granularityBits, flagBits: bitmap.auto ? BITMAP_AUTO : 0, tableOffset, tableSize };
}

/**
 * Stores one cluster of a bitmap's bits in a new cluster and notes it in
 * `table` at `index`. Bits from `validBits` on (past the bitmap's end) are
 * stored as zeros, as qemu stores them; a cluster with no bit set is not
 * stored at all (its entry stays 0), as qemu leaves it out.
 */
export async function storeBitsCluster(host: WriterHost, table: DataView, index: number, cluster: Uint8Array, validBits: number): Promise<void> {
  if (!keepBits(cluster, validBits)) return;
  const offset = await host.allocator.allocate();
  await host.device.write!(offset, cluster);
  table.setBigUint64(index * 8, BigInt(offset));
}

/** Writes a bitmap table to new clusters (one at least); returns where. Not padded, as qemu writes it. */
export async function writeBitmapTable(host: WriterHost, table: Uint8Array): Promise<number> {
  const offset = await host.allocator.allocateRun(Math.max(1, Math.ceil(table.length / host.metadata.clusterSize)));
  await host.device.write!(offset, table);
  return offset;
}

/** Clears the bits of `cluster` from bit `validBits` on; true when a bit is left set. */
function keepBits(cluster: Uint8Array, validBits: number): boolean {
  const wholeBytes = Math.max(0, validBits >> 3);
  if (wholeBytes < cluster.length) {
    cluster[wholeBytes] = cluster[wholeBytes]! & ((1 << (validBits & 7)) - 1);
    cluster.fill(0, wholeBytes + 1);
  }
  return cluster.some((byte) => byte !== 0);
}

/** The directory: one entry per bitmap (fixed part, then the name), each padded to 8 bytes; notes where each entry went. */
function encodeDirectory(stored: readonly StoredBitmap[]): Uint8Array {
  let size = 0;
  for (const bitmap of stored) size += alignUp(BitmapDirectoryEntry.size + bitmap.name.length, 8);
  if (size > MAX_BITMAP_DIRECTORY_BYTES) throw new UnsupportedFeatureError(`the bitmap directory would exceed ${MAX_BITMAP_DIRECTORY_BYTES} bytes`);
  const directory = new Uint8Array(size);
  let at = 0;
  for (const bitmap of stored) {
    const entry = BitmapDirectoryEntry.encode({
      bitmapTableOffset: BigInt(bitmap.tableOffset),
      bitmapTableSize: bitmap.tableSize,
      flags: bitmap.flagBits,
      type: BITMAP_TYPE_DIRTY_TRACKING,
      granularityBits: bitmap.granularityBits,
      nameSize: bitmap.name.length,
      extraDataSize: 0,
    });
    bitmap.entryOffset = at;
    directory.set(entry, at);
    directory.set(bitmap.name, at + entry.length);
    at += alignUp(entry.length + bitmap.name.length, 8);
  }
  return directory;
}

/** A bitmap of the directory as it is, to write into a new directory unchanged. */
export function storedBitmapOf(bitmap: BitmapInfo): StoredBitmap {
  if (bitmap.extraDataSize !== 0) throw new UnsupportedFeatureError(`bitmap '${bitmap.name}' has extra data, which no known writer makes`);
  return {
    entryOffset: bitmap.entryOffset,
    name: utf8.encode(bitmap.name),
    granularityBits: Math.log2(bitmap.granularity),
    flagBits: bitmap.flagBits,
    tableOffset: bitmap.tableOffset,
    tableSize: bitmap.tableSize,
  };
}

/** What readBitmapDirectory reads for a bitmap stored so. */
export function storedBitmapInfo(bitmap: StoredBitmap): BitmapInfo {
  return {
    flags: bitmapFlagNames(bitmap.flagBits),
    name: new TextDecoder().decode(bitmap.name),
    granularity: 2 ** bitmap.granularityBits,
    tableOffset: bitmap.tableOffset,
    tableSize: bitmap.tableSize,
    entryOffset: bitmap.entryOffset,
    flagBits: bitmap.flagBits,
    type: BITMAP_TYPE_DIRTY_TRACKING,
    extraDataSize: 0,
  };
}

/**
 * Makes `stored` the image's bitmaps: a new directory in new clusters, then
 * one write of cluster 0 pointing at it (with no bitmaps left, the extension
 * and the autoclear bit go), then the old directory is freed. A crash before
 * the cluster-0 write leaves the old directory in force and the new one leaked.
 */
export async function installDirectory(host: WriterHost, stored: readonly StoredBitmap[]): Promise<void> {
  const { metadata } = host;
  // A directory the autoclear bit no longer vouches for is stale: its clusters may be another's by now.
  const old = (metadata.header.autoclearFeatures & AUTOCLEAR_BITMAPS) !== 0n ? metadata.extensions.bitmaps : undefined;
  const others = metadata.extensions.all.filter((record) => record.type !== EXT_BITMAPS);
  let records = others;
  let pointer: BitmapsPointer | undefined;
  if (stored.length > 0) {
    const directory = encodeDirectory(stored);
    const directoryOffset = await host.allocator.allocateRun(Math.ceil(directory.length / metadata.clusterSize));
    // As qemu writes them, the directory and the tables are not padded to whole clusters (the file may end mid-cluster).
    await host.device.write!(directoryOffset, directory);
    await host.device.flush?.();
    pointer = { nbBitmaps: stored.length, directorySize: directory.length, directoryOffset };
    const extension = BitmapsExtension.encode({
      nbBitmaps: stored.length,
      reserved: 0,
      bitmapDirectorySize: BigInt(directory.length),
      bitmapDirectoryOffset: BigInt(directoryOffset),
    });
    records = [...others, { type: EXT_BITMAPS, data: extension }];
    metadata.header.autoclearFeatures |= AUTOCLEAR_BITMAPS;
  } else {
    metadata.header.autoclearFeatures &= ~AUTOCLEAR_BITMAPS;
  }
  await host.device.write!(0, encodeHeaderCluster(metadata, records));
  await host.device.flush?.();
  metadata.extensions.all = records;
  metadata.extensions.bitmaps = pointer;
  metadata.bitmaps = stored.map(storedBitmapInfo);
  if (old && old.directorySize > 0) await host.allocator.releaseIfReferenced(old.directoryOffset, old.directorySize);
}

/**
 * Marks persistent bitmaps in use, in place in the directory, as qemu marks
 * them while it has an image open for writing: platter does not update
 * bitmaps, so one that follows the guest's writes (enabled: `auto`) is no
 * longer to be trusted once platter writes, and qemu, finding it in use,
 * treats it as inconsistent. A disabled bitmap is frozen and stays valid;
 * while the disk's size changes, its table no longer fits (`which` = 'all':
 * a resize marks every bitmap, then stores them fitted to the new size). Unlike clearing the bitmaps' autoclear bit, this keeps the bitmaps'
 * clusters referenced: qemu-img check finds no leaks, and the bitmaps can be
 * removed by name. Resolves with the names marked.
 */
export async function markBitmapsInUse(host: WriterHost, which: 'enabled' | 'all'): Promise<string[]> {
  const { metadata } = host;
  const pointer = metadata.extensions.bitmaps;
  if (!pointer || (metadata.header.autoclearFeatures & AUTOCLEAR_BITMAPS) === 0n) return [];
  const marked: string[] = [];
  for (const bitmap of metadata.bitmaps) {
    if ((bitmap.flagBits & BITMAP_IN_USE) !== 0) continue;
    if (which === 'enabled' && (bitmap.flagBits & BITMAP_AUTO) === 0) continue;
    bitmap.flagBits |= BITMAP_IN_USE;
    bitmap.flags = bitmapFlagNames(bitmap.flagBits);
    const flags = new Uint8Array(4);
    new DataView(flags.buffer).setUint32(0, bitmap.flagBits);
    await host.device.write!(pointer.directoryOffset + bitmap.entryOffset + 12, flags);
    marked.push(bitmap.name);
  }
  if (marked.length > 0) await host.device.flush?.();
  return marked;
}
