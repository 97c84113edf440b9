/**
 * Reading a GPT: the primary header at LBA 1, falling back to the backup at the
 * last LBA when the primary or its entry array fails its checks. 512-byte and
 * 4096-byte sectors are told apart by where a valid header (MyLBA = 1, good CRC) sits.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { u64ToNumber } from '../../src/core/bytes.js';
import { crc32 } from '../../src/core/crc32.js';
import { CorruptImageError } from '../../src/core/errors.js';
import type { PartitionRecord, PartitionTable } from '../partition-table/model.js';
import {
  GPT_SECTOR_SIZES,
  MAX_ENTRY_ARRAY_BYTES,
  MAX_ENTRY_SIZE,
  MIN_ENTRY_SIZE,
  MIN_HEADER_SIZE,
} from './limits.js';
import { GPT_SIGNATURE, GptEntry, GptHeader, NIL_GUID, type GptHeaderValue } from './struct.js';

/** A header that passed its checks, with its numbers converted. */
interface CheckedHeader {
  header: GptHeaderValue;
  sectorSize: number;
  myLba: number;
  alternateLba: number;
  entriesLba: number;
  firstUsable: number;
  lastUsable: number;
}

/** The header CRC: over `headerSize` bytes with the CRC field taken as zero. */
export function headerCrc(sector: Uint8Array, headerSize: number): number {
  const copy = sector.slice(0, headerSize);
  copy.fill(0, 16, 20);
  return crc32(copy);
}

/**
 * Reads and checks the header at `lba`; undefined when it is not a valid GPT
 * header there (including one whose CRC holds but whose LBAs are out of range,
 * so the backup still gets its chance).
 */
async function readHeader(device: BlockDevice, sectorSize: number, lba: number): Promise<CheckedHeader | undefined> {
  try {
    return await readCheckedHeader(device, sectorSize, lba);
  } catch (error) {
    if (error instanceof CorruptImageError) return undefined;
    throw error;
  }
}

async function readCheckedHeader(device: BlockDevice, sectorSize: number, lba: number): Promise<CheckedHeader | undefined> {
  if (lba < 1 || lba >= Math.floor(device.size / sectorSize)) return undefined;
  const sector = await device.read(lba * sectorSize, sectorSize);
  const header = GptHeader.decode(sector);
  if (header.signature !== GPT_SIGNATURE) return undefined;
  if (header.headerSize < MIN_HEADER_SIZE || header.headerSize > sectorSize) return undefined;
  if (headerCrc(sector, header.headerSize) !== header.headerCrc32) return undefined;
  // An LBA no disk can have makes this copy invalid, like a bad CRC: the other copy may still be good.
  const lbas = [header.myLba, header.alternateLba, header.firstUsableLba, header.lastUsableLba, header.entriesLba];
  if (lbas.some((value) => value > BigInt(Number.MAX_SAFE_INTEGER))) return undefined;
  const where = lba * sectorSize;
  const checked: CheckedHeader = {
    header,
    sectorSize,
    myLba: u64ToNumber(header.myLba, 'GPT MyLBA', where + 24),
    alternateLba: u64ToNumber(header.alternateLba, 'GPT AlternateLBA', where + 32),
    firstUsable: u64ToNumber(header.firstUsableLba, 'GPT FirstUsableLBA', where + 40),
    lastUsable: u64ToNumber(header.lastUsableLba, 'GPT LastUsableLBA', where + 48),
    entriesLba: u64ToNumber(header.entriesLba, 'GPT PartitionEntryLBA', where + 72),
  };
  return checked.myLba === lba && usableRangeSane(checked, device.size) && entryArrayFits(checked, device.size) ? checked : undefined;
}

/**
 * libfdisk's sanity check of a header's usable range: in order, on the disk,
 * and not around the primary header (a primary that claims space past the end
 * of a disk cut short loses to the backup, as in sfdisk).
 */
function usableRangeSane(checked: CheckedHeader, deviceSize: number): boolean {
  const lastLba = Math.floor(deviceSize / checked.sectorSize) - 1;
  const { firstUsable, lastUsable } = checked;
  if (lastUsable < firstUsable || firstUsable > lastLba || lastUsable > lastLba) return false;
  return !(firstUsable < 1 && 1 < lastUsable);
}

function entryArrayFits(checked: CheckedHeader, deviceSize: number): boolean {
  const { entrySize, entryCount } = checked.header;
  if (entrySize < MIN_ENTRY_SIZE || entrySize > MAX_ENTRY_SIZE || entrySize % 8 !== 0) return false;
  if (entryCount === 0 || entryCount > Math.floor(MAX_ENTRY_ARRAY_BYTES / entrySize)) return false;
  const arrayOffset = checked.entriesLba * checked.sectorSize;
  return checked.entriesLba >= 1 && arrayOffset < deviceSize && entryCount * entrySize <= deviceSize - arrayOffset;
}

/** Reads the entry array of a checked header; undefined when its CRC does not match. */
async function readEntries(device: BlockDevice, checked: CheckedHeader): Promise<Uint8Array | undefined> {
  const { entrySize, entryCount, entriesCrc32 } = checked.header;
  const array = await device.read(checked.entriesLba * checked.sectorSize, entrySize * entryCount);
  return crc32(array) === entriesCrc32 ? array : undefined;
}

function partitionsOf(array: Uint8Array, checked: CheckedHeader, totalSectors: number, warnings: string[]): PartitionRecord[] {
  const partitions: PartitionRecord[] = [];
  const { entrySize, entryCount } = checked.header;
  for (let index = 0; index < entryCount; index++) {
    const entry = GptEntry.decode(array, index * entrySize);
    if (entry.typeGuid === NIL_GUID) continue;
    if (entry.lastLba < entry.firstLba || entry.lastLba > BigInt(Number.MAX_SAFE_INTEGER)) {
      warnings.push(`GPT partition ${index + 1} (LBA ${entry.firstLba}–${entry.lastLba}) ends before it starts or past any disk; ignored`);
      continue;
    }
    // Kept, as sfdisk lists it: an image cut short holds only part of such a partition.
    if (entry.lastLba >= BigInt(totalSectors)) {
      warnings.push(`GPT partition ${index + 1} (LBA ${entry.firstLba}–${entry.lastLba}) ends past the end of the disk (${totalSectors} sectors)`);
    }
    const at = checked.entriesLba * checked.sectorSize + index * entrySize;
    const first = u64ToNumber(entry.firstLba, `GPT entry ${index + 1} first LBA`, at + 32);
    const last = u64ToNumber(entry.lastLba, `GPT entry ${index + 1} last LBA`, at + 40);
    const partition: PartitionRecord = {
      number: index + 1,
      start: first,
      size: last - first + 1,
      type: entry.typeGuid,
      uuid: entry.uniqueGuid,
      attributes: entry.attributes,
    };
    if (entry.name !== '') partition.name = entry.name;
    partitions.push(partition);
  }
  return partitions;
}

function tableOf(device: BlockDevice, checked: CheckedHeader, array: Uint8Array, warnings: string[]): PartitionTable {
  const totalSectors = Math.floor(device.size / checked.sectorSize);
  return {
    label: 'gpt',
    id: checked.header.diskGuid,
    sectorSize: checked.sectorSize,
    firstLba: checked.firstUsable,
    lastLba: checked.lastUsable,
    entryCount: checked.header.entryCount,
    partitions: partitionsOf(array, checked, totalSectors, warnings),
    warnings,
  };
}

/** A valid header and array at `lba`, or undefined. */
async function tryCopy(device: BlockDevice, sectorSize: number, lba: number) {
  const checked = await readHeader(device, sectorSize, lba);
  if (!checked) return undefined;
  const array = await readEntries(device, checked);
  return array ? { checked, array } : undefined;
}

/**
 * Finds a GPT on `device` as libfdisk does: the primary header and entry array
 * (trying each sector size), with the backup its AlternateLBA names checked
 * too; else the backup at the last LBA (only there: a primary that fails
 * cannot be trusted to say where its backup is). Undefined when none is valid.
 */
export async function parseGpt(device: BlockDevice): Promise<PartitionTable | undefined> {
  for (const sectorSize of GPT_SECTOR_SIZES) {
    if (device.size < sectorSize * 3) continue;
    const primary = await tryCopy(device, sectorSize, 1);
    if (!primary) continue;
    const backupGood = (await tryCopy(device, sectorSize, primary.checked.alternateLba)) !== undefined;
    return tableOf(device, primary.checked, primary.array, backupGood ? [] : [`the backup GPT at LBA ${primary.checked.alternateLba} is corrupt; the primary is used`]);
  }
  for (const sectorSize of GPT_SECTOR_SIZES) {
    if (device.size < sectorSize * 3) continue;
    const lastLba = Math.floor(device.size / sectorSize) - 1;
    const backup = await tryCopy(device, sectorSize, lastLba);
    if (backup) {
      const primaryHeader = await readHeader(device, sectorSize, 1);
      const warning = `the primary GPT ${primaryHeader ? 'entry array' : 'header'} is corrupt; using the backup at LBA ${backup.checked.myLba}`;
      return tableOf(device, backup.checked, backup.array, [warning]);
    }
  }
  return undefined;
}
