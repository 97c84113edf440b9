/** Filesystems whose boot sector ends in 55AA like an MBR: FAT12/16/32, exFAT, NTFS. */

import { asciiAt, paddedLabel } from './text.js';
import { le, safeSize, type FilesystemInfo } from './types.js';

function hexUpper(value: number, width: number): string {
  return value.toString(16).toUpperCase().padStart(width, '0');
}

/** A 32-bit volume serial as blkid prints FAT and exFAT ones: `ABCD-1234`. */
export function serialText(serial: number): string {
  const text = hexUpper(serial >>> 0, 8);
  return `${text.slice(0, 4)}-${text.slice(4)}`;
}

function validBytesPerSector(value: number): boolean {
  return value >= 512 && value <= 4096 && (value & (value - 1)) === 0;
}

/** Probes FAT12/16/32 (blkid's TYPE vfat). */
export function probeFat(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 512) return undefined;
  const view = le(head);
  const jump = head[0];
  if (jump !== 0xeb && jump !== 0xe9) return undefined;
  const bytesPerSector = view.getUint16(0x0b, true);
  const sectorsPerCluster = head[0x0d]!;
  if (!validBytesPerSector(bytesPerSector) || sectorsPerCluster === 0 || (sectorsPerCluster & (sectorsPerCluster - 1)) !== 0) return undefined;
  const isFat32 = asciiAt(head, 0x52, 8) === 'FAT32   ';
  const isFat1x = asciiAt(head, 0x36, 5) === 'FAT12' || asciiAt(head, 0x36, 5) === 'FAT16' || asciiAt(head, 0x36, 8) === 'FAT     ';
  if (!isFat32 && !isFat1x) return undefined;
  const extended = isFat32 ? 0x40 : 0x24; // where the extended BPB (drive number) starts
  const totalSectors = view.getUint16(0x13, true) || view.getUint32(0x20, true);
  const info: FilesystemInfo = { type: 'vfat', size: totalSectors * bytesPerSector };
  if (head[extended + 2] === 0x29) {
    info.uuid = serialText(view.getUint32(extended + 3, true));
    const label = paddedLabel(head.subarray(extended + 7, extended + 18));
    if (label !== undefined && label !== 'NO NAME') info.label = label;
  }
  return info;
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

/** Probes NTFS: "NTFS    " at byte 3; the UUID is the 64-bit volume serial. */
export function probeNtfs(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 512 || asciiAt(head, 3, 8) !== 'NTFS    ') return undefined;
  const view = le(head);
  const bytesPerSector = view.getUint16(0x0b, true);
  if (!validBytesPerSector(bytesPerSector)) return undefined;
  const serial = view.getBigUint64(0x48, true);
  return {
    type: 'ntfs',
    uuid: serial.toString(16).toUpperCase().padStart(16, '0'),
    size: safeSize(view.getBigUint64(0x28, true), bytesPerSector),
  };
}
