/**
 * Bit-packed L1 and L2 entries (qcow2.rst, "Cluster mapping"), read straight out
 * of table bytes. Entries are handled as two u32 halves so the hot lookup path
 * stays in plain numbers; only offsets are reassembled, after a range check.
 */

import { CorruptImageError } from '../../src/core/errors.js';

/** Bit 63 of L1 and L2 entries: refcount is exactly one (as a bit of the high word). */
export const COPIED_HI = 0x80000000;
/** Bit 62 of L2 entries: the cluster is compressed. */
const COMPRESSED_HI = 0x40000000;
/** Bit 0 of standard L2 entries (v3): the cluster reads as zeros. */
export const ZERO_LO = 0x1;
/** Bits 9..31 of the low word: the low part of a host offset. */
const OFFSET_LO_MASK = 0xfffffe00;
/** Bits 32..55 (0..23 of the high word): the high part of a host offset. */
const OFFSET_HI_MASK = 0x00ffffff;
/** Bits 56..61 of a standard L2 entry are reserved and must be zero. */
const L2_RESERVED_HI = 0x3f000000;
/** Bits 1..8 of a standard L2 entry are reserved (bit 0 is the zero flag). */
const L2_RESERVED_LO = 0x1fe;
/** Bits 56..62 of an L1 entry are reserved. */
const L1_RESERVED_HI = 0x7f000000;
/** Bits 0..8 of an L1 entry are reserved. */
const L1_RESERVED_LO = 0x1ff;
/** Largest high word of an offset a JS number holds exactly (offset < 2^53). */
const MAX_SAFE_HI = 0x001fffff;

const TWO_POW_32 = 0x100000000;

/** qemu's QCow2SubclusterType: what one (sub)cluster of guest space is. */
export type ClusterType =
  /** Not allocated here: read the backing file, or zeros. */
  | 'unallocated'
  /** Not allocated, but a host cluster is reserved (extended L2 only). */
  | 'unallocated-alloc'
  /** Reads as zeros, no host cluster. */
  | 'zero-plain'
  /** Reads as zeros, host cluster preallocated. */
  | 'zero-alloc'
  /** Stored uncompressed at a host offset. */
  | 'normal'
  /** Stored compressed; see the compressed descriptor. */
  | 'compressed';

/** Reads the high and low 32-bit halves of the big-endian u64 at `byteOffset`. */
function words(table: DataView, byteOffset: number): [hi: number, lo: number] {
  return [table.getUint32(byteOffset, false), table.getUint32(byteOffset + 4, false)];
}

/** Reassembles bits 9..55 into a number; above 2^53 is corruption. */
function offsetOf(hi: number, lo: number, where: number): number {
  const high = hi & OFFSET_HI_MASK;
  if (high > MAX_SAFE_HI) throw new CorruptImageError('table entry points beyond 2^53 bytes', where);
  return high * TWO_POW_32 + ((lo & OFFSET_LO_MASK) >>> 0);
}

/** The L2 table offset of L1 entry `index` (0 = no L2 table). */
export function l1EntryL2Offset(l1: DataView, index: number, tableOffset = 0): number {
  const [hi, lo] = words(l1, index * 8);
  return offsetOf(hi, lo, tableOffset + index * 8);
}

/** True when L1 entry `index` has the COPIED flag (its L2 table's refcount is 1). */
export function l1EntryCopied(l1: DataView, index: number): boolean {
  return (l1.getUint32(index * 8, false) & COPIED_HI) !== 0;
}

/** Byte position of L2 entry `index` inside its table. */
export function l2EntryPosition(index: number, extendedL2: boolean): number {
  return index * (extendedL2 ? 16 : 8);
}

/** True when the L2 entry at `index` is compressed. */
export function l2EntryCompressed(l2: DataView, index: number, extendedL2: boolean): boolean {
  return (l2.getUint32(l2EntryPosition(index, extendedL2), false) & COMPRESSED_HI) !== 0;
}

/** True when the L2 entry at `index` has the COPIED flag. */
export function l2EntryCopied(l2: DataView, index: number, extendedL2: boolean): boolean {
  return (l2.getUint32(l2EntryPosition(index, extendedL2), false) & COPIED_HI) !== 0;
}

/** True when the standard L2 entry at `index` has the reads-as-zero flag (bit 0). */
export function l2EntryZeroFlag(l2: DataView, index: number, extendedL2: boolean): boolean {
  return (l2.getUint32(l2EntryPosition(index, extendedL2) + 4, false) & ZERO_LO) !== 0;
}

/** The host cluster offset of an uncompressed L2 entry (bits 9..55; 0 = none). */
export function l2EntryHostOffset(l2: DataView, index: number, extendedL2: boolean, tableOffset = 0): number {
  const at = l2EntryPosition(index, extendedL2);
  const [hi, lo] = words(l2, at);
  return offsetOf(hi, lo, tableOffset + at);
}

/**
 * True when reserved bits 1..8 or 56..61 of an uncompressed entry are set
 * (qemu-img check counts each such entry as a corruption). As in qemu, the
 * same bits are checked with extended L2 entries.
 */
export function l2EntryHasReservedBits(l2: DataView, index: number, extendedL2: boolean): boolean {
  const [hi, lo] = words(l2, l2EntryPosition(index, extendedL2));
  if ((hi & COMPRESSED_HI) !== 0) return false;
  return (hi & L2_RESERVED_HI) !== 0 || (lo & L2_RESERVED_LO) !== 0;
}

/** True when reserved bits 0..8 or 56..62 of L1 entry `index` are set. */
export function l1EntryHasReservedBits(l1: DataView, index: number): boolean {
  const [hi, lo] = words(l1, index * 8);
  return (hi & L1_RESERVED_HI) !== 0 || (lo & L1_RESERVED_LO) !== 0;
}

/** The 64-bit subcluster bitmap of an extended L2 entry: [allocated bits 0..31, zero bits 32..63]. */
export function l2EntryBitmap(l2: DataView, index: number): { allocated: number; zero: number } {
  const at = index * 16 + 8;
  return { zero: l2.getUint32(at, false), allocated: l2.getUint32(at + 4, false) };
}

/**
 * The type of a whole cluster (qemu's qcow2_get_cluster_type). `dataFile`:
 * with an external data file, offset 0 is a real offset, told apart from
 * "unallocated" by the COPIED flag (every data file cluster has refcount 1).
 */
export function clusterType(l2: DataView, index: number, extendedL2: boolean, dataFile: boolean): ClusterType {
  const at = l2EntryPosition(index, extendedL2);
  const hi = l2.getUint32(at, false);
  const lo = l2.getUint32(at + 4, false);
  if ((hi & COMPRESSED_HI) !== 0) return 'compressed';
  const hasOffset = (hi & OFFSET_HI_MASK) !== 0 || (lo & OFFSET_LO_MASK) !== 0;
  if (!extendedL2 && (lo & ZERO_LO) !== 0) return hasOffset ? 'zero-alloc' : 'zero-plain';
  if (!hasOffset) return dataFile && (hi & COPIED_HI) !== 0 ? 'normal' : 'unallocated';
  return 'normal';
}

/**
 * The type of subcluster `subcluster` (0..31) of an extended L2 entry
 * (qemu's qcow2_get_subcluster_type); throws on the combinations qemu calls invalid.
 */
export function subclusterType(
  l2: DataView,
  index: number,
  subcluster: number,
  dataFile: boolean,
  tableOffset = 0,
): ClusterType {
  const type = clusterType(l2, index, true, dataFile);
  if (type === 'compressed') return type;
  const { allocated, zero } = l2EntryBitmap(l2, index);
  const bit = 2 ** subcluster;
  const where = tableOffset + index * 16 + 8;
  if (type === 'normal') {
    if ((allocated & zero) !== 0) throw new CorruptImageError('subcluster both allocated and zero', where);
    if (Math.floor(allocated / bit) % 2 === 1) return 'normal';
    return Math.floor(zero / bit) % 2 === 1 ? 'zero-alloc' : 'unallocated-alloc';
  }
  if (allocated !== 0) throw new CorruptImageError('subclusters allocated without a host cluster', where);
  return Math.floor(zero / bit) % 2 === 1 ? 'zero-plain' : 'unallocated';
}

/** Where a compressed cluster's stream is: a byte offset and how many bytes may hold it. */
export interface CompressedDescriptor {
  hostOffset: number;
  /** Bytes from hostOffset to the end of the last sector the descriptor names. */
  length: number;
}

/**
 * Decodes a compressed cluster descriptor (qcow2.rst: x = 62 - (cluster_bits - 8);
 * bits 0..x-1 host byte offset, bits x..61 the number of additional 512-byte sectors).
 */
export function compressedDescriptor(l2: DataView, index: number, clusterBits: number, extendedL2: boolean, tableOffset = 0): CompressedDescriptor {
  const at = l2EntryPosition(index, extendedL2);
  const { hostOffset, length } = compressedExtent(l2.getBigUint64(at, false), clusterBits);
  if (hostOffset > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new CorruptImageError('compressed cluster descriptor points beyond 2^53 bytes', tableOffset + at);
  }
  return { hostOffset: Number(hostOffset), length };
}

/**
 * A compressed cluster descriptor decoded whole, its offset as a bigint: the
 * check reports an offset past 2^53 like any other reference past the end of
 * the file, where the reader refuses it.
 */
export function compressedExtent(entry: bigint, clusterBits: number): { hostOffset: bigint; length: number } {
  const offsetBits = BigInt(62 - (clusterBits - 8));
  const hostOffset = entry & ((1n << offsetBits) - 1n);
  const sectors = Number((entry >> offsetBits) & ((1n << BigInt(clusterBits - 8)) - 1n)) + 1;
  return { hostOffset, length: sectors * 512 - Number(hostOffset % 512n) };
}

/** Encodes a compressed descriptor (for writers and tests). */
export function encodeCompressedDescriptor(hostOffset: number, length: number, clusterBits: number): bigint {
  const offsetBits = BigInt(62 - (clusterBits - 8));
  const sectors = Math.ceil(((hostOffset % 512) + length) / 512);
  return COMPRESSED_BIT | (BigInt(sectors - 1) << offsetBits) | BigInt(hostOffset);
}

/** Bit 63 as a bigint, for writers composing entries. */
export const COPIED_BIT = 1n << 63n;
/** Bit 62 as a bigint. */
export const COMPRESSED_BIT = 1n << 62n;
/** Bit 0 as a bigint. */
export const ZERO_BIT = 1n;
/** Bits 9..55 as a bigint. */
export const OFFSET_MASK = 0x00fffffffffffe00n;
