/**
 * Hostile partition tables built in memory: MBRs with EBR chains that loop, go
 * backwards or run on, and GPTs with bad CRCs and absurd entry counts. Each
 * case says what `platter partitions --output=json` must answer: the warning
 * sfdisk-like tools give, and the partitions that can still be trusted.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';

/** Sectors of every test disk (1 MiB of 512-byte sectors). */
export const DISK_SECTORS = 2048;
const SECTOR = 512;

/** One 16-byte MBR/EBR entry. */
export interface MbrSlot {
  type: number;
  lbaStart: number;
  sectors: number;
  status?: number;
}

/** Writes `slots` into the table of the sector at `lba`, with the 55AA signature. */
export function writeTable(disk: Uint8Array, lba: number, slots: Array<MbrSlot | undefined>, signature = true): void {
  const view = new DataView(disk.buffer, disk.byteOffset);
  slots.forEach((slot, index) => {
    if (!slot) return;
    const at = lba * SECTOR + 446 + index * 16;
    disk[at] = slot.status ?? 0;
    disk[at + 4] = slot.type;
    view.setUint32(at + 8, slot.lbaStart >>> 0, true);
    view.setUint32(at + 12, slot.sectors >>> 0, true);
  });
  if (signature) disk.set([0x55, 0xaa], lba * SECTOR + 510);
}

/** An empty disk. */
export function blankDisk(): Uint8Array {
  return new Uint8Array(DISK_SECTORS * SECTOR);
}

/** An MBR with one Linux partition and an extended partition [extStart, extStart+extSize). */
export function mbrWithExtended(extStart = 1000, extSize = 1000): Uint8Array {
  const disk = blankDisk();
  writeTable(disk, 0, [
    { type: 0x83, lbaStart: 1, sectors: 900 },
    { type: 0x05, lbaStart: extStart, sectors: extSize },
  ]);
  return disk;
}

/** An EBR at `ebrLba` holding a logical partition `offset` sectors in, and a link (relative to the extended start). */
export function writeEbr(disk: Uint8Array, ebrLba: number, logical: MbrSlot | undefined, linkFromExtendedStart?: number): void {
  const link = linkFromExtendedStart === undefined ? undefined : { type: 0x05, lbaStart: linkFromExtendedStart, sectors: 10 };
  writeTable(disk, ebrLba, [logical, link]);
}

const GPT_ENTRIES = 128;
const ENTRY_SIZE = 128;

/** A GPT disk with one partition (LBA 40..99), primary and backup copies, correct CRCs. */
export function gptDisk(): Uint8Array {
  const disk = blankDisk();
  const last = DISK_SECTORS - 1;
  writeTable(disk, 0, [{ type: 0xee, lbaStart: 1, sectors: last }]);
  const entries = new Uint8Array(GPT_ENTRIES * ENTRY_SIZE);
  const view = new DataView(entries.buffer);
  entries.set([0xaf, 0x3d, 0xc6, 0x0f, 0x83, 0x84, 0x72, 0x47, 0x8e, 0x79, 0x3d, 0x69, 0xd8, 0x47, 0x7d, 0xe4]); // Linux data
  entries.fill(0x11, 16, 32);
  view.setBigUint64(32, 40n, true);
  view.setBigUint64(40, 99n, true);
  disk.set(entries, 2 * SECTOR);
  disk.set(entries, (last - 32) * SECTOR);
  writeGptHeader(disk, 1, last, 2);
  writeGptHeader(disk, last, 1, last - 32);
  return disk;
}

/** Field offsets inside a GPT header. */
export const GPT = { headerSize: 12, headerCrc: 16, myLba: 24, alternateLba: 32, entriesLba: 72, entryCount: 80, entrySize: 84, entriesCrc: 88 } as const;

function writeGptHeader(disk: Uint8Array, lba: number, alternate: number, entriesLba: number): void {
  const at = lba * SECTOR;
  const view = new DataView(disk.buffer, disk.byteOffset + at, SECTOR);
  disk.set(new TextEncoder().encode('EFI PART'), at);
  view.setUint32(8, 0x00010000, true);
  view.setUint32(GPT.headerSize, 92, true);
  view.setBigUint64(GPT.myLba, BigInt(lba), true);
  view.setBigUint64(GPT.alternateLba, BigInt(alternate), true);
  view.setBigUint64(40, 34n, true);
  view.setBigUint64(48, BigInt(DISK_SECTORS - 34), true);
  disk.fill(0x22, at + 56, at + 72);
  view.setBigUint64(GPT.entriesLba, BigInt(entriesLba), true);
  view.setUint32(GPT.entryCount, GPT_ENTRIES, true);
  view.setUint32(GPT.entrySize, ENTRY_SIZE, true);
  view.setUint32(GPT.entriesCrc, crc32(disk.subarray(entriesLba * SECTOR, entriesLba * SECTOR + GPT_ENTRIES * ENTRY_SIZE)), true);
  resealGptHeader(disk, lba);
}

/** Recomputes the header CRC of the GPT header at `lba` (after a poke that should pass the CRC check). */
export function resealGptHeader(disk: Uint8Array, lba: number): void {
  const at = lba * SECTOR;
  const view = new DataView(disk.buffer, disk.byteOffset + at, SECTOR);
  const size = Math.min(view.getUint32(GPT.headerSize, true), SECTOR);
  view.setUint32(GPT.headerCrc, 0, true);
  view.setUint32(GPT.headerCrc, crc32(disk.subarray(at, at + size)), true);
}

/** Writes a GPT header field and reseals the header CRC. */
export function pokeGpt(disk: Uint8Array, lba: number, field: number, value: number | bigint, width: 4 | 8 = 4): void {
  const view = new DataView(disk.buffer, disk.byteOffset + lba * SECTOR, SECTOR);
  if (width === 8) view.setBigUint64(field, BigInt(value), true);
  else view.setUint32(field, Number(value) >>> 0, true);
  resealGptHeader(disk, lba);
}

/** Writes a disk image into `dir` and returns its path. */
export function saveDisk(dir: string, disk: Uint8Array, name = 'disk.img'): string {
  const path = join(dir, name);
  writeFileSync(path, disk);
  return path;
}
