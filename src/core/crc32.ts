/**
 * CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), table-driven.
 * GPT uses the standard form (seed 0, final inversion); LVM2 uses the same
 * table with its own seed and no final inversion, so the raw update is exported too.
 */

const CRC_TABLE: Uint32Array = buildTable();

function buildTable(): Uint32Array {
  const table = new Uint32Array(256);
  for (let index = 0; index < 256; index++) {
    let value = index;
    for (let bit = 0; bit < 8; bit++) value = value & 1 ? 0xedb88320 ^ (value >>> 1) : value >>> 1;
    table[index] = value >>> 0;
  }
  return table;
}

/** Feeds `data` into a running CRC register (no pre- or post-inversion). */
export function crc32Update(register: number, data: Uint8Array): number {
  let crc = register >>> 0;
  for (let index = 0; index < data.length; index++) {
    crc = CRC_TABLE[(crc ^ data[index]!) & 0xff]! ^ (crc >>> 8);
  }
  return crc >>> 0;
}

/** The standard CRC-32 of `data` (as zlib, GPT and PNG compute it). */
export function crc32(data: Uint8Array): number {
  return (crc32Update(0xffffffff, data) ^ 0xffffffff) >>> 0;
}
