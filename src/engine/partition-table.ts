/**
 * Finding the partition table of a disk (raw file or the virtual disk of any
 * image) and writing one. A GPT's protective entry is followed first, as
 * libfdisk follows it (even in a FAT boot sector left under it). A
 * FAT/NTFS/exFAT boot sector also ends in 55AA: one whose entries describe no
 * partition is the filesystem of the whole disk, not an empty MBR; one whose
 * entries do (a table written over it: sfdisk, like platter, keeps bytes 0–439)
 * is the table sfdisk and the kernel read there.
 */

import { SliceDevice, type BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { bytesAsStored } from '../../formats/raw/index.js';
import { parseMbr, looksLikeMbr, hasProtectiveEntry, encodeMbr, type EbrPlacement } from '../../formats/mbr/index.js';
import { parseGpt, encodeGpt } from '../../formats/gpt/index.js';
import { isBootSectorFilesystem, probeFilesystem } from '../../formats/fs-probe/index.js';
import type { PartitionTable, SectorWrite } from '../../formats/partition-table/model.js';

export type { PartitionTable, PartitionRecord, SectorWrite, TableLabel } from '../../formats/partition-table/model.js';

/** The sector a disk file is counted in by sfdisk, blkid and the loop driver, whatever its table's sector size. */
const FILE_SECTOR_BYTES = 512;

/**
 * The disk a partition table of `image` lies on: its whole 512-byte sectors.
 * A raw file whose size is not a multiple of 512 reads (as in qemu) with its
 * last sector completed by zeros, but sfdisk and the kernel see only the
 * whole sectors: the listing counts those, a GPT's backup goes in the last of
 * them, and a table written never grows the file. Other formats' virtual
 * disks are whole sectors already.
 */
export function partitionDisk(image: Image): BlockDevice {
  const stored = bytesAsStored(image.format) ? Math.min(image.device.size, image.size) : image.size;
  const whole = stored - (stored % FILE_SECTOR_BYTES);
  return whole === image.size ? image : new SliceDevice(image, 0, whole, { name: image.name });
}

/** Reads the partition table on `disk`; undefined when there is none. */
export async function readPartitionTable(disk: BlockDevice): Promise<PartitionTable | undefined> {
  if (disk.size < 512) return undefined;
  const sector0 = await disk.read(0, 512);
  // As in libfdisk, a GPT comes first, behind any protective entry; without one no GPT is looked for.
  const protective = hasProtectiveEntry(sector0);
  if (protective) {
    const gpt = await parseGpt(disk);
    if (gpt) return gpt;
  }
  if (!looksLikeMbr(sector0)) return undefined;
  const dos = await parseMbr(disk, sector0);
  if (dos?.partitions.length === 0 && isBootSectorFilesystem(await probeFilesystem(disk))) return undefined;
  if (protective) dos?.warnings.push('the MBR has a GPT protective entry but no valid GPT was found');
  return dos;
}

/** A device that can be written (a raw image, or an image with a write method). */
export function requireTableWritable(disk: BlockDevice & { format?: string }): void {
  if (!disk.write) {
    throw new UnsupportedFeatureError(`writing to ${disk.format ?? 'this'} images is not supported yet`);
  }
  if (!disk.writable) throw new UsageError(`${disk.name} is open read-only`);
}

/**
 * The writes that put `table` on `disk`, clearing the signatures of the other
 * label (a GPT's headers when writing an MBR) so tools do not see a stale table.
 * `ebrs` places the EBRs of an MBR's logical partitions (see encodeMbr).
 */
export async function encodeTableFor(disk: BlockDevice, table: PartitionTable, ebrs?: EbrPlacement): Promise<SectorWrite[]> {
  const sector0 = disk.size >= 512 ? await disk.read(0, 512) : undefined;
  const totalSectors = Math.floor(disk.size / table.sectorSize);
  if (table.label === 'gpt') return encodeGpt(table, totalSectors, sector0);
  const writes = encodeMbr(table, sector0, ebrs);
  const old = await parseGpt(disk);
  if (old) {
    const blank = new Uint8Array(old.sectorSize);
    writes.push({ offset: old.sectorSize, data: blank }, { offset: (Math.floor(disk.size / old.sectorSize) - 1) * old.sectorSize, data: blank });
  }
  return writes;
}

/** Writes `table` onto `disk`; `ebrs` places an MBR's EBRs (see encodeMbr). */
export async function writePartitionTable(disk: BlockDevice & { format?: string }, table: PartitionTable, ebrs?: EbrPlacement): Promise<void> {
  requireTableWritable(disk);
  for (const { offset, data } of await encodeTableFor(disk, table, ebrs)) {
    if (data.length > disk.size - offset) throw new UsageError(`the partition table does not fit ${disk.name} (${disk.size} bytes)`);
    await disk.write!(offset, data);
  }
  await disk.flush?.();
}
