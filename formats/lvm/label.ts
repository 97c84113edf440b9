/**
 * The LVM2 physical volume label (lvm2 lib/label/label.h, format_text/layout.h):
 * a "LABELONE" sector in the first four, the PV header after it with the data
 * and metadata area lists, and the metadata area header pointing at the text.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { u64ToNumber } from '../../src/core/bytes.js';
import { crc32Update } from '../../src/core/crc32.js';
import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { ascii, defineStruct, u32le, u64le } from '../../src/core/struct.js';
import {
  LABEL_SCAN_SECTORS,
  LABEL_SIZE,
  MAX_DISK_AREAS,
  MAX_METADATA_BYTES,
  MAX_RAW_LOCATIONS,
  MDA_HEADER_SIZE,
} from './limits.js';

/** lvm2's CRC seed (INITIAL_CRC); its CRC has no final inversion. */
export const LVM_INITIAL_CRC = 0xf597a6cf;
/** The metadata area header magic. */
export const FMTT_MAGIC = ' LVM2 x[5A%r0N*>';

/** The label header at the start of the label sector (32 bytes). */
export const LabelHeader = defineStruct('LVM label header', 32, {
  id: [0, ascii(8)], // "LABELONE"
  sector: [8, u64le], // the sector this label is in
  crc: [16, u32le], // over bytes 20..511 of the sector
  contentOffset: [20, u32le], // from the label start to the PV header (32)
  type: [24, ascii(8)], // "LVM2 001"
});

/** A disk location: a byte offset and size (zero offset ends a list). */
export const DiskLocation = defineStruct('LVM disk_locn', 16, { offset: [0, u64le], size: [8, u64le] });

/** The metadata area header (the first 40 bytes of its 512-byte sector). */
export const MdaHeader = defineStruct('LVM mda_header', 40, {
  checksum: [0, u32le], // over bytes 4..511
  magic: [4, ascii(16)],
  version: [20, u32le],
  start: [24, u64le], // absolute byte offset of this area
  size: [32, u64le],
});

/** A raw location of metadata text inside a metadata area (24 bytes). */
export const RawLocation = defineStruct('LVM raw_locn', 24, {
  offset: [0, u64le], // from the area start
  size: [8, u64le],
  checksum: [16, u32le],
  flags: [20, u32le],
});

/** What the PV label says. */
export interface PvLabel {
  /** Sector (0–3) holding the label. */
  labelSector: number;
  /** 32-character PV UUID, without dashes. */
  uuid: string;
  deviceSize: number;
  dataAreas: { offset: number; size: number }[];
  metadataAreas: { offset: number; size: number }[];
}

/** The PV UUID as lvm2 prints it: 6-4-4-4-4-4-6 characters. */
export function formatPvUuid(uuid: string): string {
  const groups = [6, 4, 4, 4, 4, 4, 6];
  const parts: string[] = [];
  let at = 0;
  for (const length of groups) {
    parts.push(uuid.slice(at, at + length));
    at += length;
  }
  return parts.join('-');
}

function readLocations(sector: Uint8Array, at: number, what: string): { list: { offset: number; size: number }[]; next: number } {
  const list: { offset: number; size: number }[] = [];
  for (let count = 0; ; count++) {
    if (at > sector.length - DiskLocation.size) throw new CorruptImageError(`LVM PV header: ${what} list runs past the label sector`);
    if (count > MAX_DISK_AREAS) throw new LimitExceededError(`LVM PV header lists more than ${MAX_DISK_AREAS} ${what}s`);
    const location = DiskLocation.decode(sector, at);
    at += DiskLocation.size;
    if (location.offset === 0n) return { list, next: at };
    list.push({ offset: u64ToNumber(location.offset, `LVM ${what} offset`), size: u64ToNumber(location.size, `LVM ${what} size`) });
  }
}

/** Finds and decodes the PV label in the first sectors held in `head`; undefined when there is none. */
export function findPvLabel(head: Uint8Array): PvLabel | undefined {
  for (let sectorIndex = 0; sectorIndex < LABEL_SCAN_SECTORS; sectorIndex++) {
    const at = sectorIndex * LABEL_SIZE;
    if (at > head.length - LABEL_SIZE) return undefined;
    const sector = head.subarray(at, at + LABEL_SIZE);
    const label = LabelHeader.decode(sector);
    if (label.id !== 'LABELONE' || label.type !== 'LVM2 001') continue;
    if (label.sector !== BigInt(sectorIndex)) continue;
    if (crc32Update(LVM_INITIAL_CRC, sector.subarray(20)) !== label.crc) continue;
    // Room for the UUID (32), the device size (8) and at least one list terminator (16).
    if (label.contentOffset < LabelHeader.size || label.contentOffset > LABEL_SIZE - 56) continue;
    const uuid = new TextDecoder('latin1').decode(sector.subarray(label.contentOffset, label.contentOffset + 32));
    const deviceSize = u64ToNumber(DiskLocation.decode(sector, label.contentOffset + 32).offset, 'LVM device size', at);
    const data = readLocations(sector, label.contentOffset + 40, 'data area');
    const metadata = readLocations(sector, data.next, 'metadata area');
    return { labelSector: sectorIndex, uuid, deviceSize, dataAreas: data.list, metadataAreas: metadata.list };
  }
  return undefined;
}

/**
 * Reads the current metadata text of the metadata area at `area` (byte offsets
 * within `device`); undefined when the area holds none (its copy is marked
 * ignored, as `vgcreate --vgmetadatacopies` leaves it). The text is a ring
 * buffer: it may wrap to just after the header.
 */
export async function readMetadataText(device: BlockDevice, area: { offset: number; size: number }): Promise<string | undefined> {
  if (area.size < MDA_HEADER_SIZE || area.offset > device.size || area.size > device.size - area.offset) {
    throw new CorruptImageError('LVM metadata area lies outside the device', area.offset);
  }
  const sector = await device.read(area.offset, MDA_HEADER_SIZE);
  const header = MdaHeader.decode(sector);
  if (header.magic !== FMTT_MAGIC) throw new CorruptImageError('LVM metadata area header has a bad magic', area.offset + 4);
  if (crc32Update(LVM_INITIAL_CRC, sector.subarray(4)) !== header.checksum) {
    throw new CorruptImageError('LVM metadata area header checksum does not match', area.offset);
  }
  // As lvm2: a header that places its area elsewhere than the PV header does is not this area's.
  if (header.start !== BigInt(area.offset)) throw new CorruptImageError(`LVM metadata area header says it starts at byte ${header.start}`, area.offset + 24);
  const location = currentLocation(sector);
  if (!location) return undefined;
  const offset = u64ToNumber(location.offset, 'LVM metadata offset', area.offset + 40);
  const size = u64ToNumber(location.size, 'LVM metadata size', area.offset + 48);
  if (size > MAX_METADATA_BYTES) throw new LimitExceededError(`LVM metadata text of ${size} bytes exceeds ${MAX_METADATA_BYTES}`);
  const ringSize = area.size - MDA_HEADER_SIZE;
  if (offset < MDA_HEADER_SIZE || offset >= area.size || size > ringSize) {
    throw new CorruptImageError('LVM metadata text lies outside its metadata area', area.offset + 40);
  }
  const first = Math.min(size, area.size - offset);
  const text = new Uint8Array(size);
  text.set(await device.read(area.offset + offset, first));
  if (first < size) text.set(await device.read(area.offset + MDA_HEADER_SIZE, size - first), first);
  if (crc32Update(LVM_INITIAL_CRC, text) !== location.checksum) {
    throw new CorruptImageError('LVM metadata text checksum does not match', area.offset + offset);
  }
  return new TextDecoder('utf-8').decode(text);
}

function currentLocation(sector: Uint8Array) {
  for (let index = 0; index < MAX_RAW_LOCATIONS; index++) {
    const location = RawLocation.decode(sector, MdaHeader.size + index * RawLocation.size);
    if (location.offset === 0n) break;
    // Flag 1 (RAW_LOCN_IGNORED) marks a copy the VG chose not to use.
    if ((location.flags & 1) === 0) return location;
  }
  return undefined;
}
