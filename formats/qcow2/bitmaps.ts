/**
 * The persistent dirty bitmap directory (qcow2.rst, "Bitmaps extension"), read
 * only as far as `info` needs: names, flags and granularity of each bitmap.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { alignUp, u64ToNumber } from '../../src/core/bytes.js';
import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { defineStruct, u16be, u32be, u64be, u8 } from '../../src/core/struct.js';
import type { BitmapsPointer } from './extensions.js';
import { MAX_BITMAPS, MAX_BITMAP_DIRECTORY_BYTES } from './limits.js';

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
}

const utf8 = new TextDecoder();

/** Reads the bitmap directory the extension points to. */
export async function readBitmapDirectory(device: BlockDevice, pointer: BitmapsPointer): Promise<BitmapInfo[]> {
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
    const flags: string[] = [];
    if (entry.flags & BITMAP_IN_USE) flags.push('in-use');
    if (entry.flags & BITMAP_AUTO) flags.push('auto');
    bitmaps.push({
      flags,
      name: utf8.decode(bytes.subarray(nameAt, nameAt + entry.nameSize)),
      granularity: 2 ** entry.granularityBits,
      tableOffset: u64ToNumber(entry.bitmapTableOffset, 'bitmap table offset', base + offset),
      tableSize: entry.bitmapTableSize,
    });
    offset = alignUp(nameAt + entry.nameSize, 8);
  }
  return bitmaps;
}
