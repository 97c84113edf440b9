/**
 * Reading an MBR and its chain of extended boot records (EBRs).
 *
 * In each EBR the data entry's start is relative to that EBR's own LBA and the
 * link entry's start is relative to the start of the extended partition. A
 * broken chain never fails the read: it ends with a warning and every good
 * partition found so far is kept.
 */

import type { BlockDevice } from '../../src/core/device.js';
import type { PartitionRecord, PartitionTable } from '../partition-table/model.js';
import { EXTENDED_TYPES, GPT_PROTECTIVE_TYPE } from '../partition-table/model.js';
import { MAX_EBR_CHAIN, MBR_SECTOR_BYTES } from './limits.js';
import {
  DISK_SIGNATURE_OFFSET,
  decodeEntries,
  hasBootSignature,
  isEmptyEntry,
  type MbrEntryValue,
} from './struct.js';

/** The disk signature as sfdisk prints it: `0x` and eight lower-case hex digits. */
export function formatDiskId(signature: number): string {
  return `0x${(signature >>> 0).toString(16).padStart(8, '0')}`;
}

/** True when sector 0 looks like an MBR: 55AA and only 0x00/0x80 status bytes. */
export function looksLikeMbr(sector0: Uint8Array): boolean {
  if (sector0.length < MBR_SECTOR_BYTES || !hasBootSignature(sector0)) return false;
  return decodeEntries(sector0).every((entry) => entry.status === 0 || entry.status === 0x80);
}

/**
 * True when sector 0 announces a GPT as libfdisk reads it: the 55AA signature
 * and an entry of type 0xEE, whatever else the sector holds (a FAT boot
 * sector, other entries, an entry of size 0).
 */
export function hasProtectiveEntry(sector0: Uint8Array): boolean {
  if (sector0.length < MBR_SECTOR_BYTES || !hasBootSignature(sector0)) return false;
  return decodeEntries(sector0).some((entry) => entry.type === GPT_PROTECTIVE_TYPE);
}

function record(number: number, start: number, entry: MbrEntryValue): PartitionRecord {
  const partition: PartitionRecord = { number, start, size: entry.sectors, type: entry.type.toString(16) };
  if (entry.status === 0x80) partition.bootable = true;
  return partition;
}

/** Parses the MBR in `sector0` (already read) and follows the EBR chain on `device`. */
export async function parseMbr(device: BlockDevice, sector0: Uint8Array, sectorSize = 512): Promise<PartitionTable | undefined> {
  if (!looksLikeMbr(sector0)) return undefined;
  const totalSectors = Math.floor(device.size / sectorSize);
  const view = new DataView(sector0.buffer, sector0.byteOffset, sector0.byteLength);
  const table: PartitionTable = {
    label: 'dos',
    id: formatDiskId(view.getUint32(DISK_SIGNATURE_OFFSET, true)),
    sectorSize,
    partitions: [],
    warnings: [],
  };
  let extended: PartitionRecord | undefined;
  decodeEntries(sector0).forEach((entry, slot) => {
    if (isEmptyEntry(entry)) return;
    const partition = record(slot + 1, entry.lbaStart, entry);
    table.partitions.push(partition);
    if (!EXTENDED_TYPES.has(entry.type)) return;
    if (extended) {
      table.warnings.push(`partition ${slot + 1} is a second extended partition; only partition ${extended.number}'s chain is followed`);
    } else {
      extended = partition;
    }
  });
  if (extended) table.partitions.push(...(await readLogicals(device, extended, sectorSize, table.warnings)));
  for (const partition of table.partitions) warnIfPastEnd(partition, totalSectors, table.warnings);
  return table;
}

/**
 * A partition that runs past the end of the disk (an image cut short) is kept,
 * as sfdisk lists it, with a warning saying how much of it the image holds.
 */
function warnIfPastEnd(partition: PartitionRecord, totalSectors: number, warnings: string[]): void {
  if (partition.start + partition.size <= totalSectors) return;
  const held = partition.start >= totalSectors ? 'none of it is in the image' : `only its first ${totalSectors - partition.start} sectors are in the image`;
  warnings.push(`partition ${partition.number} (start ${partition.start}, ${partition.size} sectors) ends past the end of the disk (${totalSectors} sectors): ${held}`);
}

/**
 * Walks the EBR chain of `extended`. Every link must stay inside the extended
 * partition, no EBR is visited twice, and at most MAX_EBR_CHAIN EBRs are read:
 * that bounds the walk on hostile images. A link may point back (sfdisk writes
 * such chains when a later logical partition lies before an earlier one, and
 * Linux reads them).
 */
async function readLogicals(
  device: BlockDevice,
  extended: PartitionRecord,
  sectorSize: number,
  warnings: string[],
): Promise<PartitionRecord[]> {
  const logicals: PartitionRecord[] = [];
  // Sector 0 is the MBR itself, not an EBR: sfdisk (libfdisk) reads no logical partitions then.
  if (extended.start === 0) {
    warnings.push('Bad offset in primary extended partition.');
    return logicals;
  }
  const extendedEnd = extended.start + extended.size; // exclusive
  const diskEnd = Math.floor(device.size / sectorSize);
  const visited = new Set<number>();
  let ebrLba = extended.start;
  for (let count = 0; ; count++) {
    if (count >= MAX_EBR_CHAIN) {
      warnings.push(`EBR chain is longer than ${MAX_EBR_CHAIN} entries; stopped at EBR ${ebrLba}`);
      break;
    }
    visited.add(ebrLba);
    if (ebrLba >= diskEnd) {
      warnings.push(`EBR at sector ${ebrLba} lies past the end of the disk; chain ends there`);
      break;
    }
    const sector = await device.read(ebrLba * sectorSize, MBR_SECTOR_BYTES);
    if (!hasBootSignature(sector)) {
      warnings.push(`EBR at sector ${ebrLba} (byte ${ebrLba * sectorSize}) has no 55AA signature; chain ends there`);
      break;
    }
    const [dataEntry, linkEntry] = decodeEntries(sector) as [MbrEntryValue, MbrEntryValue];
    const logical = logicalFromEntry(dataEntry, ebrLba, extendedEnd, 5 + logicals.length, warnings);
    if (logical) logicals.push(logical);
    if (isEmptyEntry(linkEntry)) break;
    const next = extended.start + linkEntry.lbaStart;
    const problem = linkProblem(next, extendedEnd, visited);
    if (problem) {
      warnings.push(`EBR at sector ${ebrLba} links to sector ${next}, ${problem}; chain ends there`);
      break;
    }
    ebrLba = next;
  }
  return logicals;
}

function linkProblem(next: number, extendedEnd: number, visited: Set<number>): string | undefined {
  if (visited.has(next)) return 'an EBR already read (a cycle)';
  if (next >= extendedEnd) return 'outside the extended partition';
  return undefined;
}

function logicalFromEntry(
  entry: MbrEntryValue,
  ebrLba: number,
  extendedEnd: number,
  number: number,
  warnings: string[],
): PartitionRecord | undefined {
  if (isEmptyEntry(entry)) return undefined;
  if (EXTENDED_TYPES.has(entry.type)) {
    warnings.push(`EBR at sector ${ebrLba} has an extended type in its data entry; ignored`);
    return undefined;
  }
  const start = ebrLba + entry.lbaStart;
  if (entry.lbaStart === 0 || start >= extendedEnd || entry.sectors > extendedEnd - start) {
    warnings.push(
      `logical partition in EBR at sector ${ebrLba} (start ${start}, ${entry.sectors} sectors) lies outside the extended partition; ignored`,
    );
    return undefined;
  }
  return record(number, start, entry);
}
