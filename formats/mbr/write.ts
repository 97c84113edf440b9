/**
 * Encoding an MBR and its EBR chain. The first EBR sits at the start of the
 * extended partition, each later one where the caller places it (sfdisk
 * leaves 1 MiB between an EBR and its partition) or else in the sector just
 * before its logical partition; CHS fields use the 255/63 geometry fdisk uses
 * for images.
 */

import { UsageError } from '../../src/core/errors.js';
import type { PartitionRecord, PartitionTable, SectorWrite } from '../partition-table/model.js';
import { isExtendedType } from '../partition-table/model.js';
import { MBR_SECTOR_BYTES } from './limits.js';
import { BOOT_SIGNATURE_OFFSET, DISK_SIGNATURE_OFFSET, ENTRIES_OFFSET, MbrEntry, encodeChs } from './struct.js';

const MAX_U32 = 0xffffffff;

/** The type of an EBR's link to the next one. */
const EBR_LINK_TYPE = 0x05;

/** The sector chosen for a logical partition's EBR, by partition number. */
export type EbrPlacement = ReadonlyMap<number, number>;

/** Parses a `0x…` disk signature (or plain hex) into a number. */
export function parseDiskId(id: string): number {
  const text = id.toLowerCase().replace(/^0x/, '');
  if (!/^[0-9a-f]{1,8}$/.test(text)) throw new UsageError(`invalid MBR disk identifier '${id}' (want 0x and up to 8 hex digits)`);
  return parseInt(text, 16);
}

/** Puts one entry at `slot` of an MBR/EBR sector; `relativeStart` is what the field stores. */
function putEntry(sector: Uint8Array, slot: number, absoluteStart: number, relativeStart: number, size: number, type: number, bootable: boolean): void {
  if (relativeStart > MAX_U32 || size > MAX_U32) {
    throw new UsageError(`partition at sector ${absoluteStart} of ${size} sectors does not fit an MBR's 32-bit fields`);
  }
  MbrEntry.encodeInto(
    sector,
    {
      status: bootable ? 0x80 : 0,
      chsFirst: encodeChs(absoluteStart),
      type,
      chsLast: encodeChs(absoluteStart + size - 1),
      lbaStart: relativeStart,
      sectors: size,
    },
    ENTRIES_OFFSET + slot * MbrEntry.size,
  );
}

function typeByte(partition: PartitionRecord): number {
  const type = parseInt(partition.type, 16);
  if (!/^[0-9a-fA-F]{1,2}$/.test(partition.type) || type === 0) {
    throw new UsageError(`partition ${partition.number}: invalid MBR type '${partition.type}'`);
  }
  return type;
}

/**
 * Where each EBR goes: the extended start for the first logical; for the
 * others the sector `placed` names, else the sector before the partition. The
 * chain follows the partition numbers, so a link may point back (as sfdisk
 * writes it when a later logical partition lies before an earlier one); each
 * EBR needs a sector of its own inside the extended partition, before its
 * partition and outside every logical partition.
 */
function ebrPositions(extended: PartitionRecord, logicals: PartitionRecord[], placed: EbrPlacement): number[] {
  const extendedEnd = extended.start + extended.size;
  const inData = (lba: number) => logicals.some((other) => lba >= other.start && lba < other.start + other.size);
  const positions: number[] = [];
  logicals.forEach((logical, index) => {
    const fits = (lba: number) => lba >= extended.start && lba < logical.start && !inData(lba) && !positions.includes(lba);
    const wanted = index === 0 ? [extended.start] : [placed.get(logical.number), logical.start - 1];
    const ebrLba = wanted.find((lba): lba is number => lba !== undefined && fits(lba));
    if (ebrLba === undefined || logical.size > extendedEnd - logical.start) {
      throw new UsageError(`logical partition ${logical.number} (start ${logical.start}) needs a free sector before it inside the extended partition for its EBR`);
    }
    positions.push(ebrLba);
  });
  return positions;
}

function encodeEbrs(extended: PartitionRecord, logicals: PartitionRecord[], sectorSize: number, placed: EbrPlacement): SectorWrite[] {
  const positions = ebrPositions(extended, logicals, placed);
  if (logicals.length === 0) positions.push(extended.start);
  return positions.map((ebrLba, index) => {
    const sector = new Uint8Array(MBR_SECTOR_BYTES);
    const logical = logicals[index];
    if (logical) putEntry(sector, 0, logical.start, logical.start - ebrLba, logical.size, typeByte(logical), logical.bootable === true);
    const next = logicals[index + 1];
    const nextEbr = positions[index + 1];
    if (next && nextEbr !== undefined) {
      // The link covers the next EBR through the end of its logical partition and has
      // type 5 whatever the extended partition's type (0f, 85), as fdisk writes it.
      putEntry(sector, 1, nextEbr, nextEbr - extended.start, next.start + next.size - nextEbr, EBR_LINK_TYPE, false);
    }
    sector[BOOT_SIGNATURE_OFFSET] = 0x55;
    sector[BOOT_SIGNATURE_OFFSET + 1] = 0xaa;
    return { offset: ebrLba * sectorSize, data: sector };
  });
}

/**
 * Encodes `table` (label dos) as the writes that put it on a disk. `existingSector0`
 * keeps the boot code in bytes 0–439; the disk signature comes from `table.id`;
 * `placed` gives the EBR sector of logical partitions (by number) after the first.
 */
export function encodeMbr(table: PartitionTable, existingSector0?: Uint8Array, placed: EbrPlacement = new Map()): SectorWrite[] {
  const sector0 = new Uint8Array(MBR_SECTOR_BYTES);
  if (existingSector0) sector0.set(existingSector0.subarray(0, DISK_SIGNATURE_OFFSET));
  new DataView(sector0.buffer).setUint32(DISK_SIGNATURE_OFFSET, parseDiskId(table.id), true);
  sector0[BOOT_SIGNATURE_OFFSET] = 0x55;
  sector0[BOOT_SIGNATURE_OFFSET + 1] = 0xaa;
  const primaries = table.partitions.filter((partition) => partition.number <= 4);
  const logicals = table.partitions.filter((partition) => partition.number > 4).sort((a, b) => a.number - b.number);
  const extendeds = primaries.filter((partition) => isExtendedType(partition.type));
  if (extendeds.length > 1) throw new UsageError('an MBR may hold only one extended partition');
  for (const partition of primaries) {
    if (partition.number < 1) throw new UsageError(`invalid partition number ${partition.number}`);
    putEntry(sector0, partition.number - 1, partition.start, partition.start, partition.size, typeByte(partition), partition.bootable === true);
  }
  const writes: SectorWrite[] = [{ offset: 0, data: sector0 }];
  const extended = extendeds[0];
  if (!extended) {
    if (logicals.length > 0) throw new UsageError('logical partitions need an extended partition');
    return writes;
  }
  return writes.concat(encodeEbrs(extended, logicals, table.sectorSize, placed));
}
