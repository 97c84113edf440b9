/** Filesystems whose boot sector ends in 55AA like an MBR: FAT12/16/32, exFAT, NTFS. */

import { asciiAt } from './text.js';
import { isPowerOfTwoIn, le, safeSize, type FilesystemInfo } from './types.js';

function hexUpper(value: number, width: number): string {
  return value.toString(16).toUpperCase().padStart(width, '0');
}

/** A 32-bit volume serial as blkid prints FAT and exFAT ones: `ABCD-1234`. */
export function serialText(serial: number): string {
  const text = hexUpper(serial >>> 0, 8);
  return `${text.slice(0, 4)}-${text.slice(4)}`;
}

function validBytesPerSector(value: number): boolean {
  return isPowerOfTwoIn(value, 512, 4096);
}

/** Type strings blkid takes as a FAT boot sector, and where they sit. */
const FAT_NAMES: ReadonlyArray<readonly [string, number]> = [
  ['MSWIN', 0x52],
  ['FAT32   ', 0x52],
  ['MSDOS', 0x36],
  ['FAT16   ', 0x36],
  ['FAT12   ', 0x36],
  ['FAT     ', 0x36],
];
/** Most clusters of each FAT width (blkid's FAT12_MAX, FAT16_MAX, FAT32_MAX). */
const FAT12_MAX = 0xff4;
const FAT16_MAX = 0xfff4;
const FAT32_MAX = 0x0ffffff6;

/** The layout a FAT boot sector describes, in sectors. */
export interface FatGeometry {
  sectorSize: number;
  clusterSectors: number;
  reserved: number;
  /** Sectors of all the FATs together. */
  fatSectors: number;
  rootEntries: number;
  sectors: number;
  fat32: boolean;
}

/** The boot sector's geometry when it holds up as blkid checks it (fat_valid_superblock); else undefined. */
export function fatGeometry(head: Uint8Array): FatGeometry | undefined {
  const view = le(head);
  const fats = head[0x10]!;
  const reserved = view.getUint16(0x0e, true);
  const media = head[0x15]!;
  const clusterSectors = head[0x0d]!;
  const sectorSize = view.getUint16(0x0b, true);
  if (fats === 0 || reserved === 0 || !(media >= 0xf8 || media === 0xf0) || !isPowerOfTwoIn(clusterSectors) || !validBytesPerSector(sectorSize)) return undefined;
  const rootEntries = view.getUint16(0x11, true);
  const sectors = view.getUint16(0x13, true) || view.getUint32(0x20, true);
  const fat16Length = view.getUint16(0x16, true);
  const fat32Length = view.getUint32(0x24, true);
  const fatSectors = (fat16Length || fat32Length) * fats;
  const rootSectors = Math.ceil((rootEntries * 32) / sectorSize);
  const overhead = reserved + fatSectors + rootSectors;
  // In blkid's unsigned arithmetic a disk smaller than its own tables has a huge cluster count: not FAT.
  if (sectors < overhead) return undefined;
  const clusters = Math.floor((sectors - overhead) / clusterSectors);
  const fat32 = fat16Length === 0 && fat32Length !== 0;
  const most = fat32 ? FAT32_MAX : clusters > FAT12_MAX ? FAT16_MAX : FAT12_MAX;
  if (clusters > most) return undefined;
  return { sectorSize, clusterSectors, reserved, fatSectors, rootEntries, sectors, fat32 };
}

/**
 * Probes FAT12/16/32 (blkid's TYPE vfat): a boot sector named by its type
 * string, or known only by its jump or 55AA (old floppies) when its BPB holds
 * up. The UUID is the volume serial; the label lives in the root directory
 * (see labels.ts), not in the boot sector, as blkid reads it.
 */
export function probeFat(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 512) return undefined;
  const named = FAT_NAMES.some(([name, at]) => asciiAt(head, at, name.length) === name);
  if (!named) {
    // Known by its jump or its 55AA, blkid wants the 55AA either way.
    if (head[0x1fe] !== 0x55 || head[0x1ff] !== 0xaa) return undefined;
    // OS/2 and DFSee put a FAT-like pseudo-BPB in front of JFS and HPFS.
    if (asciiAt(head, 0x36, 8) === 'JFS     ' || asciiAt(head, 0x36, 8) === 'HPFS    ') return undefined;
  }
  const geometry = fatGeometry(head);
  if (!geometry || !fsinfoHoldsUp(head, geometry)) return undefined;
  const info: FilesystemInfo = { type: 'vfat', size: geometry.sectors * geometry.sectorSize };
  // With no FAT length at all blkid reads neither serial nor label.
  const serial = le(head).getUint32(geometry.fat32 ? 0x43 : 0x27, true);
  if (serial !== 0 && geometry.fatSectors > 0) info.uuid = serialText(serial);
  return info;
}

/** FAT32's FSInfo sector, where the head holds it: its signatures, or zeros (some volumes leave them unset). */
function fsinfoHoldsUp(head: Uint8Array, geometry: FatGeometry): boolean {
  const sector = geometry.fat32 ? le(head).getUint16(0x30, true) : 0;
  const at = sector * geometry.sectorSize;
  if (sector === 0 || at + 488 > head.length) return true;
  const first = asciiAt(head, at, 4);
  const second = asciiAt(head, at + 484, 4);
  return ['RRaA', 'RRdA', '\0\0\0\0'].includes(first) && ['rrAa', '\0\0\0\0'].includes(second);
}

/** Probes exFAT: "EXFAT   " at byte 3. */
export function probeExfat(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 512 || asciiAt(head, 3, 8) !== 'EXFAT   ') return undefined;
  const view = le(head);
  const sectorShift = head[0x6c]!;
  if (sectorShift < 9 || sectorShift > 12) return undefined;
  return {
    type: 'exfat',
    uuid: serialText(view.getUint32(0x64, true)),
    size: safeSize(view.getBigUint64(0x48, true), 2 ** sectorShift),
  };
}

/**
 * Probes NTFS: "NTFS    " at byte 3; the UUID is the 64-bit volume serial. As
 * blkid, the FAT fields of the BPB must be zero, and the cluster and MFT
 * record sizes ones NTFS can have.
 */
export function probeNtfs(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 512 || asciiAt(head, 3, 8) !== 'NTFS    ') return undefined;
  const view = le(head);
  const bytesPerSector = view.getUint16(0x0b, true);
  if (!validBytesPerSector(bytesPerSector)) return undefined;
  const fatFields = [view.getUint16(0x0e, true), head[0x10]!, view.getUint16(0x11, true), view.getUint16(0x13, true), view.getUint16(0x16, true), view.getUint32(0x20, true)];
  if (fatFields.some((value) => value !== 0)) return undefined;
  const clusterByte = head[0x0d]!;
  // 1..128 sectors, or 0xF0..0xF9 for 2^16..2^7 (large clusters).
  if (!isPowerOfTwoIn(clusterByte, 1, 0x80) && !(clusterByte >= 0xf0 && clusterByte <= 0xf9)) return undefined;
  const perRecord = head[0x40]!;
  if ((perRecord < 0xe1 || perRecord > 0xf7) && ![1, 2, 4, 8, 16, 32, 64].includes(perRecord)) return undefined;
  const serial = view.getBigUint64(0x48, true);
  return {
    type: 'ntfs',
    uuid: serial.toString(16).toUpperCase().padStart(16, '0'),
    size: safeSize(view.getBigUint64(0x28, true), bytesPerSector),
  };
}
