/** The MBR/EBR sector layout: bootstrap, disk signature, four 16-byte entries, 55AA. */

import { defineStruct, u8, u32le, bytes } from '../../src/core/struct.js';

/** Byte offset of the disk signature (LE32) in sector 0. */
export const DISK_SIGNATURE_OFFSET = 0x1b8;
/** Byte offset of the first of the four partition entries. */
export const ENTRIES_OFFSET = 0x1be;
/** Byte offset of the 55 AA boot signature. */
export const BOOT_SIGNATURE_OFFSET = 0x1fe;
/** Number of entries in an MBR or EBR. */
export const ENTRY_SLOTS = 4;

/** One MBR partition entry (16 bytes). */
export const MbrEntry = defineStruct('MBR entry', 16, {
  status: [0, u8], // 0x80 bootable, 0x00 not; anything else: not an MBR
  chsFirst: [1, bytes(3)], // head, sector|cyl-high, cyl-low
  type: [4, u8],
  chsLast: [5, bytes(3)],
  lbaStart: [8, u32le], // MBR: absolute; EBR data entry: from the EBR; EBR link: from the extended start
  sectors: [12, u32le],
});

/** A decoded MBR entry. */
export type MbrEntryValue = ReturnType<typeof MbrEntry.decode>;

/** True when the sector ends in the 55 AA boot signature. */
export function hasBootSignature(sector: Uint8Array): boolean {
  return sector[BOOT_SIGNATURE_OFFSET] === 0x55 && sector[BOOT_SIGNATURE_OFFSET + 1] === 0xaa;
}

/** The four entries of an MBR or EBR sector. */
export function decodeEntries(sector: Uint8Array): MbrEntryValue[] {
  const entries: MbrEntryValue[] = [];
  for (let slot = 0; slot < ENTRY_SLOTS; slot++) entries.push(MbrEntry.decode(sector, ENTRIES_OFFSET + slot * MbrEntry.size));
  return entries;
}

/** True when an entry describes nothing (type 0 or no sectors). */
export function isEmptyEntry(entry: MbrEntryValue): boolean {
  return entry.type === 0 || entry.sectors === 0;
}

/** Geometry used for CHS fields, as fdisk and sfdisk use for images: 255 heads, 63 sectors per track. */
export const CHS_HEADS = 255;
/** Sectors per track of that geometry. */
export const CHS_SECTORS = 63;

/**
 * The 3-byte CHS address of an LBA. Cylinders above 1023 cannot be expressed and
 * clamp to the conventional FE FF FF (cylinder 1023, head 254, sector 63).
 */
export function encodeChs(lba: number): Uint8Array {
  const perCylinder = CHS_HEADS * CHS_SECTORS;
  let cylinder = Math.floor(lba / perCylinder);
  let head = Math.floor((lba % perCylinder) / CHS_SECTORS);
  let sector = (lba % CHS_SECTORS) + 1;
  if (cylinder > 1023) {
    cylinder = 1023;
    head = CHS_HEADS - 1;
    sector = CHS_SECTORS;
  }
  return Uint8Array.of(head, sector | ((cylinder >> 2) & 0xc0), cylinder & 0xff);
}

/** The cylinder, head and sector of a 3-byte CHS field. */
export function decodeChs(chs: Uint8Array): { cylinder: number; head: number; sector: number } {
  return { head: chs[0]!, sector: chs[1]! & 0x3f, cylinder: chs[2]! | ((chs[1]! & 0xc0) << 2) };
}
