/**
 * The persistent dirty bitmap directory (qcow2.rst, "Bitmaps extension"):
 * names, flags and granularity of each bitmap, as `info` shows them, and a
 * bitmap's table and data clusters, as `convert --bitmaps` copies them.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { alignUp, u64ToNumber } from '../../src/core/bytes.js';
import { CorruptImageError, LimitExceededError, UnsupportedFeatureError } from '../../src/core/errors.js';
import { defineStruct, u16be, u32be, u64be, u8 } from '../../src/core/struct.js';
import type { BitmapsPointer } from './extensions.js';
import { MAX_BITMAPS, MAX_BITMAP_DATA_BYTES, MAX_BITMAP_DIRECTORY_BYTES, MAX_BITMAP_NAME_BYTES, MAX_BITMAP_TABLE_ENTRIES_ON_DISK } from './limits.js';

/** The fixed part of a bitmap directory entry (24 bytes). */
export const BitmapDirectoryEntry = defineStruct('qcow2 bitmap directory entry', 24, {
  bitmapTableOffset: [0, u64be],
  bitmapTableSize: [8, u32be],
  flags: [12, u32be],
  type: [16, u8],
  granularityBits: [17, u8],
  nameSize: [18, u16be],
  extraDataSize: [20, u32be],
});

/** Bitmap flag bits. */
export const BITMAP_IN_USE = 1 << 0;
export const BITMAP_AUTO = 1 << 1;

/** One bitmap as qemu-img info shows it. */
export interface BitmapInfo {
  flags: string[];
  name: string;
  granularity: number;
  /** Where the bitmap table is, and its number of 8-byte entries. */
  tableOffset: number;
  tableSize: number;
  /** Where the entry starts in the directory (its flags are 12 bytes in). */
  entryOffset: number;
  /** The entry's raw flags, type (1: dirty tracking) and extra data size. */
  flagBits: number;
  type: number;
  extraDataSize: number;
}

const utf8 = new TextDecoder();

/** The names qemu-img info gives a bitmap's flag bits, in its order. */
export function bitmapFlagNames(flagBits: number): string[] {
  const names: string[] = [];
  if (flagBits & BITMAP_IN_USE) names.push('in-use');
  if (flagBits & BITMAP_AUTO) names.push('auto');
  return names;
}

/** What a directory entry is checked against: the image's cluster size and disk size. */
export interface BitmapImageShape {
  clusterSize: number;
  diskSize: number;
}

/**
 * Reads the bitmap directory the extension points to, refusing it as qemu
 * refuses to open the image (so nothing that trusts an entry, and no edit,
 * ever starts from an invalid one).
 */
export async function readBitmapDirectory(device: BlockDevice, pointer: BitmapsPointer, shape: BitmapImageShape): Promise<BitmapInfo[]> {
  if (pointer.nbBitmaps === 0) return [];
  if (pointer.nbBitmaps > MAX_BITMAPS) throw new LimitExceededError(`too many bitmaps (${pointer.nbBitmaps})`);
  if (pointer.directorySize > MAX_BITMAP_DIRECTORY_BYTES) {
    throw new LimitExceededError(`bitmap directory too large (${pointer.directorySize} bytes)`);
  }
  const { directoryOffset: base, directorySize: size } = pointer;
  if (base > device.size || size > device.size - base) {
    throw new CorruptImageError('bitmap directory lies past the end of the file', base);
  }
  const bytes = await device.read(base, size);
  const bitmaps: BitmapInfo[] = [];
  let offset = 0;
  for (let index = 0; index < pointer.nbBitmaps; index++) {
    if (BitmapDirectoryEntry.size > bytes.length - offset) {
      throw new CorruptImageError(`bitmap directory entry ${index} is truncated`, base + offset);
    }
    const entry = BitmapDirectoryEntry.decode(bytes, offset);
    const nameAt = offset + BitmapDirectoryEntry.size + entry.extraDataSize;
    if (nameAt > bytes.length || entry.nameSize > bytes.length - nameAt) {
      throw new CorruptImageError(`bitmap directory entry ${index} is truncated`, base + offset);
    }
    const name = utf8.decode(bytes.subarray(nameAt, nameAt + entry.nameSize));
    // qemu's words for both (bitmap_list_load); the spec defines no extra data.
    if (entry.extraDataSize !== 0) throw new UnsupportedFeatureError('Bitmap extra data is not supported');
    const problem = entryProblem(entry, shape);
    if (problem !== undefined) throw new CorruptImageError(`Bitmap '${name}' doesn't satisfy the constraints`, base + offset, { problem });
    bitmaps.push({
      flags: bitmapFlagNames(entry.flags),
      name,
      granularity: 2 ** entry.granularityBits,
      tableOffset: u64ToNumber(entry.bitmapTableOffset, 'bitmap table offset', base + offset),
      tableSize: entry.bitmapTableSize,
      entryOffset: offset,
      flagBits: entry.flags,
      type: entry.type,
      extraDataSize: entry.extraDataSize,
    });
    offset = alignUp(nameAt + entry.nameSize, 8);
  }
  return bitmaps;
}

/** Flag bits the spec defines (in use, auto); qemu refuses an entry with any other. */
const KNOWN_FLAGS = BITMAP_IN_USE | BITMAP_AUTO;

/**
 * Why qemu would refuse this directory entry (its check_dir_entry and the
 * table size load_bitmap_data expects), or undefined. A bitmap in use may
 * describe a disk of another size (a resize it missed), so only a consistent
 * one must fit the disk.
 */
function entryProblem(entry: ReturnType<typeof BitmapDirectoryEntry.decode>, shape: BitmapImageShape): string | undefined {
  const { clusterSize, diskSize } = shape;
  const bits = entry.granularityBits;
  if (entry.type !== BITMAP_TYPE_DIRTY_TRACKING) return `unknown type ${entry.type}`;
  if (bits < Math.log2(MIN_GRANULARITY) || bits > Math.log2(MAX_GRANULARITY)) return `granularity bits ${bits} out of range`;
  if ((entry.flags & ~KNOWN_FLAGS) !== 0) return `unknown flags 0x${entry.flags.toString(16)}`;
  if (entry.nameSize > MAX_BITMAP_NAME_BYTES) return `name of ${entry.nameSize} bytes`;
  if (entry.bitmapTableOffset === 0n || entry.bitmapTableOffset % BigInt(clusterSize) !== 0n) return 'table offset not cluster aligned';
  const tableSize = entry.bitmapTableSize;
  if (tableSize === 0 || tableSize > MAX_BITMAP_TABLE_ENTRIES_ON_DISK) return `table of ${tableSize} entries`;
  if (tableSize * clusterSize > MAX_BITMAP_DATA_BYTES) return `table of ${tableSize} entries`;
  if ((entry.flags & BITMAP_IN_USE) !== 0) return undefined;
  const expected = bitmapTableEntries(diskSize, 2 ** bits, clusterSize);
  return tableSize === expected ? undefined : `table of ${tableSize} entries, a bitmap of this disk has ${expected}`;
}

/** The one bitmap type there is: dirty tracking. */
export const BITMAP_TYPE_DIRTY_TRACKING = 1;
/** Granularities qemu accepts: 512 bytes to 2 GiB (BME_MIN/MAX_GRANULARITY_BITS). */
export const MIN_GRANULARITY = 512;
export const MAX_GRANULARITY = 2 ** 31;

/** Bitmap table entries, and data clusters, that a bitmap of `granularity` over `size` guest bytes has (qemu's table size). */
export function bitmapTableEntries(size: number, granularity: number, clusterSize: number): number {
  return Math.ceil(Math.ceil(size / granularity) / (clusterSize * 8));
}

/** What one bitmap table entry says of its data cluster. */
export type BitmapCluster = { kind: 'zeros' } | { kind: 'ones' } | { kind: 'data'; offset: number };

/** Bits 1..8 and 56..63 of a bitmap table entry are reserved. */
const TABLE_ENTRY_RESERVED = 0xff000000000001fen;
const TABLE_ENTRY_OFFSET = 0x00fffffffffffe00n;
const TABLE_ENTRY_ALL_ONES = 1n;
/** Table entries read per device read: memory stays flat whatever the table's size. */
const TABLE_READ_ENTRIES = 8192;

/**
 * The data clusters of `bitmap`, in order, as its table describes them; the
 * table must have the size qemu gives a bitmap of this granularity over
 * `size` guest bytes (undefined: any size, for a bitmap in use, which may
 * describe a disk of another size). Throws CorruptImageError on a malformed entry.
 * `entries` keeps to table entries [first, end) (each one cluster of bits).
 */
export async function* bitmapClusters(
  device: BlockDevice,
  bitmap: BitmapInfo,
  size: number | undefined,
  clusterSize: number,
  entries: { first: number; end: number } = { first: 0, end: bitmap.tableSize },
): AsyncGenerator<BitmapCluster> {
  const at = `bitmap '${bitmap.name}'`;
  if (bitmap.type !== BITMAP_TYPE_DIRTY_TRACKING) throw new CorruptImageError(`${at} has an unknown type (${bitmap.type})`, bitmap.tableOffset);
  if (bitmap.granularity < MIN_GRANULARITY || bitmap.granularity > MAX_GRANULARITY) {
    throw new CorruptImageError(`${at} has a granularity out of range (${bitmap.granularity})`, bitmap.tableOffset);
  }
  if (bitmap.extraDataSize !== 0) throw new UnsupportedFeatureError(`${at} has extra data, which no known writer makes`);
  const expected = size === undefined ? bitmap.tableSize : bitmapTableEntries(size, bitmap.granularity, clusterSize);
  if (bitmap.tableSize !== expected) {
    throw new CorruptImageError(`${at}: its table has ${bitmap.tableSize} entries, a bitmap of this size has ${expected}`, bitmap.tableOffset);
  }
  if (bitmap.tableOffset % clusterSize !== 0 || bitmap.tableOffset > device.size || bitmap.tableSize * 8 > device.size - bitmap.tableOffset) {
    throw new CorruptImageError(`${at}: its table is misaligned or past the end of the file`, bitmap.tableOffset);
  }
  const stop = Math.min(entries.end, bitmap.tableSize);
  for (let first = Math.max(0, entries.first); first < stop; first += TABLE_READ_ENTRIES) {
    const count = Math.min(TABLE_READ_ENTRIES, stop - first);
    const bytes = await device.read(bitmap.tableOffset + first * 8, count * 8);
    const table = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
    for (let index = 0; index < count; index++) {
      const entry = table.getBigUint64(index * 8);
      const offset = Number(entry & TABLE_ENTRY_OFFSET);
      const where = bitmap.tableOffset + (first + index) * 8;
      const onesWithOffset = offset !== 0 && (entry & TABLE_ENTRY_ALL_ONES) !== 0n;
      if ((entry & TABLE_ENTRY_RESERVED) !== 0n || offset % clusterSize !== 0 || onesWithOffset) {
        throw new CorruptImageError(`${at}: table entry ${first + index} is malformed`, where);
      }
      if (offset === 0) yield (entry & TABLE_ENTRY_ALL_ONES) !== 0n ? { kind: 'ones' } : { kind: 'zeros' };
      else if (offset > device.size - clusterSize) throw new CorruptImageError(`${at}: data cluster past the end of the file`, where);
      else yield { kind: 'data', offset };
    }
  }
}

/**
 * The guest byte ranges whose bits are set in `bitmap`, in order, adjacent
 * ones joined: bit i stands for [i * granularity, (i + 1) * granularity),
 * cut at the disk's end. The table must fit `size` (see bitmapClusters).
 * With `window`, only the bits of the granules [start, end) touches are read
 * (and the table entries that hold them), so a query of a large disk reads
 * what it asks about.
 */
export async function* dirtyRanges(
  device: BlockDevice,
  bitmap: BitmapInfo,
  size: number,
  clusterSize: number,
  window?: { start: number; end: number },
): AsyncGenerator<[number, number]> {
  const { granularity } = bitmap;
  const bitsPerCluster = clusterSize * 8;
  const firstBit = window === undefined ? 0 : Math.floor(window.start / granularity);
  const totalBits = window === undefined ? Math.ceil(size / granularity) : Math.min(Math.ceil(size / granularity), Math.ceil(window.end / granularity));
  const firstEntry = Math.floor(firstBit / bitsPerCluster);
  const entries = { first: firstEntry, end: Math.ceil(totalBits / bitsPerCluster) };
  let pending: [number, number] | undefined;
  let index = firstEntry;
  const emit = function* (firstBit: number, endBit: number): Generator<[number, number]> {
    const start = firstBit * granularity;
    const end = Math.min(size, endBit * granularity);
    if (pending && pending[1] === start) pending[1] = end;
    else {
      if (pending) yield pending;
      pending = [start, end];
    }
  };
  for await (const cluster of bitmapClusters(device, bitmap, size, clusterSize, entries)) {
    const base = index * bitsPerCluster;
    const first = Math.max(base, firstBit);
    const last = Math.min(totalBits, base + bitsPerCluster);
    index++;
    if (cluster.kind === 'zeros' || first >= last) continue;
    if (cluster.kind === 'ones') {
      yield* emit(first, last);
      continue;
    }
    const bytes = await device.read(cluster.offset, clusterSize);
    let runStart = -1;
    for (let bit = first; bit < last; bit++) {
      const local = bit - base;
      const set = (bytes[local >> 3]! >> (local & 7)) & 1;
      if (set && runStart < 0) runStart = bit;
      else if (!set && runStart >= 0) {
        yield* emit(runStart, bit);
        runStart = -1;
      }
    }
    if (runStart >= 0) yield* emit(runStart, last);
  }
  if (pending) yield pending;
}
