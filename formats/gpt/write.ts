/**
 * Encoding a GPT: protective MBR, primary header and array at LBA 1–2, backup
 * array and header at the end of the disk, both CRCs. Attributes are written
 * as given, all 64 bits, so bits this code does not know survive a rewrite.
 */

import { UsageError } from '../../src/core/errors.js';
import { crc32 } from '../../src/core/crc32.js';
import { GPT_PROTECTIVE_TYPE, type PartitionTable, type SectorWrite } from '../partition-table/model.js';
import { BOOT_SIGNATURE_OFFSET, DISK_SIGNATURE_OFFSET, ENTRIES_OFFSET, MbrEntry, encodeChs } from '../mbr/struct.js';
import { DEFAULT_ENTRY_COUNT, DEFAULT_ENTRY_SIZE } from './limits.js';
import { headerCrc } from './parse.js';
import { GPT_REVISION, GPT_SIGNATURE, GptEntry, GptHeader } from './struct.js';
import { randomGuid } from './guid.js';

/** The usable area a GPT of `entryCount` entries leaves on a disk of `totalSectors`. */
export function gptGeometry(totalSectors: number, sectorSize: number, entryCount = DEFAULT_ENTRY_COUNT) {
  const arraySectors = Math.ceil((entryCount * DEFAULT_ENTRY_SIZE) / sectorSize);
  return {
    arraySectors,
    firstUsable: 2 + arraySectors,
    lastUsable: totalSectors - 2 - arraySectors,
    backupArrayLba: totalSectors - 1 - arraySectors,
    backupHeaderLba: totalSectors - 1,
  };
}

function encodeArray(table: PartitionTable, entryCount: number, firstUsable: number, lastUsable: number): Uint8Array {
  const array = new Uint8Array(entryCount * DEFAULT_ENTRY_SIZE);
  for (const partition of table.partitions) {
    if (partition.number < 1 || partition.number > entryCount) {
      throw new UsageError(`partition number ${partition.number} is outside the GPT's ${entryCount} entries`);
    }
    const last = partition.start + partition.size - 1;
    if (partition.size < 1 || partition.start < firstUsable || last > lastUsable) {
      throw new UsageError(
        `partition ${partition.number} (sectors ${partition.start}–${last}) is outside the usable area ${firstUsable}–${lastUsable}`,
      );
    }
    GptEntry.encodeInto(
      array,
      {
        typeGuid: partition.type,
        uniqueGuid: partition.uuid ?? randomGuid(),
        firstLba: BigInt(partition.start),
        lastLba: BigInt(last),
        attributes: partition.attributes ?? 0n,
        name: partition.name ?? '',
      },
      (partition.number - 1) * DEFAULT_ENTRY_SIZE,
    );
  }
  return array;
}

function encodeHeader(fields: Omit<Parameters<typeof GptHeader.encode>[0], 'headerCrc32'>, sectorSize: number): Uint8Array {
  const sector = new Uint8Array(sectorSize);
  GptHeader.encodeInto(sector, { ...fields, headerCrc32: 0 });
  new DataView(sector.buffer).setUint32(16, headerCrc(sector, GptHeader.size), true);
  return sector;
}

/**
 * The protective entry's last CHS address as libfdisk writes it, whatever the
 * disk's size: all ones, "not representable" (sgdisk works one out instead).
 */
const PROTECTIVE_CHS_LAST = Uint8Array.of(0xff, 0xff, 0xff);

/** Sector 0 as a protective MBR: one 0xEE entry over the whole disk; boot code kept. */
export function encodeProtectiveMbr(totalSectors: number, existingSector0?: Uint8Array): Uint8Array {
  const sector = new Uint8Array(512);
  if (existingSector0) sector.set(existingSector0.subarray(0, DISK_SIGNATURE_OFFSET));
  const size = Math.min(totalSectors - 1, 0xffffffff);
  MbrEntry.encodeInto(
    sector,
    { status: 0, chsFirst: encodeChs(1), type: GPT_PROTECTIVE_TYPE, chsLast: PROTECTIVE_CHS_LAST, lbaStart: 1, sectors: size },
    ENTRIES_OFFSET,
  );
  sector[BOOT_SIGNATURE_OFFSET] = 0x55;
  sector[BOOT_SIGNATURE_OFFSET + 1] = 0xaa;
  return sector;
}

/** Encodes `table` (label gpt) for a disk of `totalSectors` sectors of `table.sectorSize` bytes. */
export function encodeGpt(table: PartitionTable, totalSectors: number, existingSector0?: Uint8Array): SectorWrite[] {
  const sectorSize = table.sectorSize;
  const entryCount = table.entryCount ?? DEFAULT_ENTRY_COUNT;
  const geometry = gptGeometry(totalSectors, sectorSize, entryCount);
  const firstUsable = Math.max(table.firstLba ?? geometry.firstUsable, geometry.firstUsable);
  const lastUsable = Math.min(table.lastLba ?? geometry.lastUsable, geometry.lastUsable);
  if (lastUsable < firstUsable) throw new UsageError(`the disk (${totalSectors} sectors) is too small for a GPT`);
  const array = encodeArray(table, entryCount, firstUsable, lastUsable);
  const common = {
    signature: GPT_SIGNATURE,
    revision: GPT_REVISION,
    headerSize: GptHeader.size,
    reserved: 0,
    firstUsableLba: BigInt(firstUsable),
    lastUsableLba: BigInt(lastUsable),
    diskGuid: table.id,
    entryCount,
    entrySize: DEFAULT_ENTRY_SIZE,
    entriesCrc32: crc32(array),
  };
  const primary = { ...common, myLba: 1n, alternateLba: BigInt(geometry.backupHeaderLba), entriesLba: 2n };
  const backup = {
    ...common,
    myLba: BigInt(geometry.backupHeaderLba),
    alternateLba: 1n,
    entriesLba: BigInt(geometry.backupArrayLba),
  };
  return [
    { offset: 0, data: encodeProtectiveMbr(totalSectors, existingSector0) },
    { offset: sectorSize, data: encodeHeader(primary, sectorSize) },
    { offset: 2 * sectorSize, data: array },
    { offset: geometry.backupArrayLba * sectorSize, data: array },
    { offset: geometry.backupHeaderLba * sectorSize, data: encodeHeader(backup, sectorSize) },
  ];
}
