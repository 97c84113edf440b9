/**
 * Labels that are not in the boot sector: FAT and exFAT keep theirs in a root
 * directory entry, NTFS in the $Volume file's VOLUME_NAME attribute. All need
 * reads past the probed head, each bounded (one exFAT cluster, one MFT record,
 * at most 4 MiB of a FAT root directory). NTFS's MFT records are checked here too.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { fatGeometry } from './dos-boot.js';
import { asciiAt, paddedLabel } from './text.js';
import { le, safeSize, type FilesystemInfo } from './types.js';

/** Largest exFAT cluster read when looking for the label (the spec allows up to 32 MiB). */
const MAX_EXFAT_CLUSTER_READ = 1024 * 1024;
/** Largest NTFS MFT record accepted (real ones are 1 KiB or 4 KiB). */
const MAX_MFT_RECORD = 64 * 1024;
const EXFAT_VOLUME_LABEL_ENTRY = 0x83;
const NTFS_VOLUME_RECORD = 3;
const NTFS_ATTR_VOLUME_NAME = 0x60;
const NTFS_ATTR_END = 0xffffffff;

function utf16(bytes: Uint8Array): string {
  let text = '';
  for (let at = 0; at + 1 < bytes.length; at += 2) text += String.fromCharCode(bytes[at]! | (bytes[at + 1]! << 8));
  return text;
}

async function readWithin(device: BlockDevice, offset: number, length: number): Promise<Uint8Array | undefined> {
  if (offset < 0 || length <= 0 || offset > device.size || length > device.size - offset) return undefined;
  return device.read(offset, length);
}

/** The exFAT volume label from the first cluster of the root directory. */
export async function exfatLabel(device: BlockDevice, boot: Uint8Array): Promise<string | undefined> {
  const view = le(boot);
  const sectorShift = boot[0x6c]!;
  const clusterShift = boot[0x6d]!;
  if (sectorShift < 9 || sectorShift > 12 || sectorShift + clusterShift > 25) return undefined;
  const clusterBytes = 2 ** (sectorShift + clusterShift);
  const heapOffset = view.getUint32(0x58, true) * 2 ** sectorShift;
  const rootCluster = view.getUint32(0x60, true);
  if (rootCluster < 2) return undefined;
  const directory = await readWithin(device, heapOffset + (rootCluster - 2) * clusterBytes, Math.min(clusterBytes, MAX_EXFAT_CLUSTER_READ));
  if (!directory) return undefined;
  for (let at = 0; at + 32 <= directory.length; at += 32) {
    const type = directory[at]!;
    if (type === 0) break;
    if (type !== EXFAT_VOLUME_LABEL_ENTRY) continue;
    const length = Math.min(directory[at + 1]!, 11);
    return length > 0 ? utf16(directory.subarray(at + 2, at + 2 + length * 2)) : undefined;
  }
  return undefined;
}

/** NTFS protects every 512-byte stride of a record with the update sequence, whatever the sector size. */
const NTFS_FIXUP_STRIDE = 512;

/** Applies the NTFS update sequence (fixups) to a record in place; false when it does not check. */
function applyFixups(record: Uint8Array, sectorSize = NTFS_FIXUP_STRIDE): boolean {
  const view = le(record);
  const usaOffset = view.getUint16(4, true);
  const usaCount = view.getUint16(6, true);
  if (usaCount === 0 || usaOffset + usaCount * 2 > record.length || (usaCount - 1) * sectorSize > record.length) return false;
  const check = view.getUint16(usaOffset, true);
  for (let index = 1; index < usaCount; index++) {
    const end = index * sectorSize - 2;
    if (view.getUint16(end, true) !== check) return false;
    view.setUint16(end, view.getUint16(usaOffset + index * 2, true), true);
  }
  return true;
}

/** NTFS sectors per cluster: above 0x80 the byte is a negative power of two (0xF8: 2^8 sectors). */
export function ntfsClusterSectors(byte: number): number {
  return byte > 0x80 ? 2 ** (256 - byte) : byte;
}

/** Where the NTFS master file table starts and how large its records are, from the boot sector. */
function ntfsMft(boot: Uint8Array): { offset: number; recordBytes: number } | undefined {
  const view = le(boot);
  const clusterBytes = view.getUint16(0x0b, true) * ntfsClusterSectors(boot[0x0d]!);
  const offset = safeSize(view.getBigUint64(0x30, true), clusterBytes);
  const perRecord = view.getInt8(0x40);
  const recordBytes = perRecord < 0 ? 2 ** -perRecord : perRecord * clusterBytes;
  return offset === undefined ? undefined : { offset, recordBytes };
}

/** True when MFT records 0 ($MFT) and 3 ($Volume) begin as records do: blkid's last check that a boot sector is NTFS's. */
export async function ntfsMftPresent(device: BlockDevice, boot: Uint8Array): Promise<boolean> {
  const mft = ntfsMft(boot);
  if (!mft) return false;
  for (const record of [0, NTFS_VOLUME_RECORD]) {
    const magic = await readWithin(device, mft.offset + record * mft.recordBytes, 4);
    if (!magic || asciiAt(magic, 0, 4) !== 'FILE') return false;
  }
  return true;
}

/** The NTFS volume label from $Volume (MFT record 3). */
export async function ntfsLabel(device: BlockDevice, boot: Uint8Array): Promise<string | undefined> {
  const mft = ntfsMft(boot);
  if (!mft || mft.recordBytes < 512 || mft.recordBytes > MAX_MFT_RECORD) return undefined;
  const { offset: mftOffset, recordBytes } = mft;
  const record = await readWithin(device, mftOffset + NTFS_VOLUME_RECORD * recordBytes, recordBytes);
  if (!record || asciiAt(record, 0, 4) !== 'FILE' || !applyFixups(record)) return undefined;
  const recordView = le(record);
  let at = recordView.getUint16(0x14, true);
  while (at + 24 <= record.length) {
    const type = recordView.getUint32(at, true);
    const length = recordView.getUint32(at + 4, true);
    if (type === NTFS_ATTR_END || length < 24 || length > record.length - at) break;
    if (type === NTFS_ATTR_VOLUME_NAME && record[at + 8] === 0) {
      const valueLength = recordView.getUint32(at + 16, true);
      const valueOffset = recordView.getUint16(at + 20, true);
      if (valueOffset + valueLength > length) return undefined;
      const label = utf16(record.subarray(at + valueOffset, at + valueOffset + valueLength));
      return label === '' ? undefined : label;
    }
    at += length;
  }
  return undefined;
}

/** Bytes of a FAT root directory read in search of the label, at most. */
const MAX_FAT_ROOT_READ = 4 * 1024 * 1024;
/** Clusters of a FAT32 root directory followed (blkid's maxloop). */
const MAX_FAT32_ROOT_CLUSTERS = 99;
const FAT_ATTR_VOLUME_ID = 0x08;
const FAT_ATTR_DIR = 0x10;
const FAT_ATTR_LONG_NAME = 0x0f;
const FAT_ENTRY_FREE = 0xe5;
const FAT_NO_NAME = 'NO NAME    ';

/** The volume label entry among directory entries, up to the end of the directory (blkid's search_fat_label). */
function fatLabelEntry(directory: Uint8Array): Uint8Array | undefined {
  const view = le(directory);
  for (let at = 0; at + 32 <= directory.length; at += 32) {
    const first = directory[at]!;
    if (first === 0) return undefined;
    const attr = directory[at + 11]!;
    const clustered = view.getUint16(at + 20, true) !== 0 || view.getUint16(at + 26, true) !== 0;
    if (first === FAT_ENTRY_FREE || clustered || (attr & 0x3f) === FAT_ATTR_LONG_NAME) continue;
    if ((attr & (FAT_ATTR_VOLUME_ID | FAT_ATTR_DIR)) === FAT_ATTR_VOLUME_ID) return directory.subarray(at, at + 11);
  }
  return undefined;
}

/**
 * The FAT volume label as blkid reads it: the volume-label entry of the root
 * directory (FAT12/16: the fixed root area; FAT32: the root cluster chain, up
 * to 99 clusters). The copy in the boot sector is not the label (blkid shows it
 * apart, as LABEL_FATBOOT); "NO NAME" is none.
 */
export async function fatLabel(device: BlockDevice, boot: Uint8Array): Promise<string | undefined> {
  const geometry = fatGeometry(boot);
  if (!geometry || geometry.fatSectors === 0) return undefined;
  const { sectorSize, reserved, fatSectors } = geometry;
  let entry: Uint8Array | undefined;
  if (!geometry.fat32) {
    const directory = await readWithin(device, (reserved + fatSectors) * sectorSize, Math.min(geometry.rootEntries * 32, MAX_FAT_ROOT_READ));
    entry = directory && fatLabelEntry(directory);
  } else {
    const clusterBytes = geometry.clusterSectors * sectorSize;
    const fatEntries = (fatSectors / boot[0x10]!) * sectorSize / 4;
    let next = le(boot).getUint32(0x2c, true);
    for (let step = 0, read = 0; next !== 0 && next < fatEntries && step < MAX_FAT32_ROOT_CLUSTERS && read < MAX_FAT_ROOT_READ; step++, read += clusterBytes) {
      const directory = await readWithin(device, (reserved + fatSectors + (next - 2) * geometry.clusterSectors) * sectorSize, clusterBytes);
      entry = directory && fatLabelEntry(directory);
      if (entry) break;
      const link = await readWithin(device, reserved * sectorSize + next * 4, 4);
      if (!link) break;
      next = le(link).getUint32(0, true) & 0x0fffffff;
    }
  }
  if (!entry || asciiAt(entry, 0, 11) === FAT_NO_NAME) return undefined;
  return paddedLabel(entry);
}

/** Readers of labels kept outside the boot sector, by type. */
const LABEL_READERS: Record<string, (device: BlockDevice, boot: Uint8Array) => Promise<string | undefined>> = {
  vfat: fatLabel,
  exfat: exfatLabel,
  ntfs: ntfsLabel,
};

/**
 * What only reads past the probed head tell: labels kept elsewhere, and
 * whether an NTFS boot sector has its MFT behind it (undefined when not: blkid
 * does not call that NTFS).
 */
export async function refine(device: BlockDevice, head: Uint8Array, info: FilesystemInfo): Promise<FilesystemInfo | undefined> {
  if (info.type === 'ntfs' && !(await ntfsMftPresent(device, head))) return undefined;
  const label = await LABEL_READERS[info.type]?.(device, head);
  return label === undefined ? info : { ...info, label };
}
