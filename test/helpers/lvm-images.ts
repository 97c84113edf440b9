/**
 * LVM2 physical volumes built in memory, laid out as pvcreate lays them out
 * (label in sector 1, the first metadata area at 4 KiB, extents from 1 MiB,
 * a second metadata area at the end when asked for): for cases that would
 * take root, loop devices and hand-edited vgcfgrestore files to make with lvm2.
 * lvm2 2.03.16 reads such a PV as its own (pvs shows both metadata areas,
 * lvs the extents, vgck finds nothing wrong; it notes the PV header lacks
 * the extension newer versions add).
 */

import { crc32Update } from '../../src/core/crc32.js';
import { DiskLocation, FMTT_MAGIC, LVM_INITIAL_CRC, LabelHeader, MdaHeader, RawLocation } from '../../formats/lvm/label.js';

const MiB = 1024 * 1024;
const MDA_OFFSET = 4096;
const MDA_SIZE = MiB - MDA_OFFSET;
/** Where extent 0 starts, as `pe_start = 2048` in the metadata says. */
export const PE_START_BYTES = MiB;

/** One metadata area: its text, or a copy marked ignored (vgcreate --vgmetadatacopies). */
export type MetadataCopy = { text: string } | { ignored: true };

function metadataArea(copy: MetadataCopy, areaOffset: number): Uint8Array {
  const area = new Uint8Array(MDA_SIZE);
  const text = 'text' in copy ? new TextEncoder().encode(copy.text) : new Uint8Array(1);
  area.set(text, 512);
  MdaHeader.encodeInto(area, { checksum: 0, magic: FMTT_MAGIC, version: 1, start: BigInt(areaOffset), size: BigInt(MDA_SIZE) });
  RawLocation.encodeInto(area, { offset: 512n, size: BigInt(text.length), checksum: crc32Update(LVM_INITIAL_CRC, text), flags: 'ignored' in copy ? 1 : 0 }, MdaHeader.size);
  new DataView(area.buffer).setUint32(0, crc32Update(LVM_INITIAL_CRC, area.subarray(4, 512)), true);
  return area;
}

/** A PV of `size` bytes with UUID `uuid` (32 characters) and one or two metadata areas (none when `copies` is empty). */
export function physicalVolume(uuid: string, size: number, copies: MetadataCopy[]): Uint8Array {
  const pv = new Uint8Array(size);
  const areas = copies.map((copy, index) => ({ offset: index === 0 ? MDA_OFFSET : size - MDA_SIZE, copy }));
  const sector = new Uint8Array(512);
  LabelHeader.encodeInto(sector, { id: 'LABELONE', sector: 1n, crc: 0, contentOffset: 32, type: 'LVM2 001' });
  sector.set(new TextEncoder().encode(uuid), 32);
  new DataView(sector.buffer).setBigUint64(64, BigInt(size), true);
  let at = 72;
  for (const location of [{ offset: PE_START_BYTES, size: 0 }, undefined, ...areas, undefined]) {
    DiskLocation.encodeInto(sector, { offset: BigInt(location?.offset ?? 0), size: BigInt(location && 'copy' in location ? MDA_SIZE : 0) }, at);
    at += DiskLocation.size;
  }
  new DataView(sector.buffer).setUint32(16, crc32Update(LVM_INITIAL_CRC, sector.subarray(20)), true);
  pv.set(sector, 512);
  for (const { offset, copy } of areas) pv.set(metadataArea(copy, offset), offset);
  return pv;
}
