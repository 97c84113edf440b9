/**
 * Finding the partition table of a disk (raw file or the virtual disk of any
 * image) and writing one. A GPT's protective entry is followed first, as
 * libfdisk follows it (even in a FAT boot sector left under it). A
 * FAT/NTFS/exFAT boot sector also ends in 55AA: one whose entries describe no
 * partition is the filesystem of the whole disk, not an empty MBR; one whose
 * entries do (a table written over it: sfdisk, like platter, keeps bytes 0–439)
 * is the table sfdisk and the kernel read there.
 */

import type { BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import { parseMbr, looksLikeMbr, hasProtectiveEntry, encodeMbr, type EbrPlacement } from '../../formats/mbr/index.js';
import { parseGpt, encodeGpt } from '../../formats/gpt/index.js';
import { isBootSectorFilesystem, probeFilesystem } from '../../formats/fs-probe/index.js';
import type { PartitionTable, SectorWrite } from '../../formats/partition-table/model.js';

export type { PartitionTable, PartitionRecord, SectorWrite, TableLabel } from '../../formats/partition-table/model.js';

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
