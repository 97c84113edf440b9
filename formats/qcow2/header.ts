/**
 * The qcow2 header (qemu docs/interop/qcow2.rst, "Header"): the 72-byte version 2
 * part, the version 3 fields after it, feature bits, and validation that mirrors
 * the checks qemu's qcow2_open makes before it trusts a single offset.
 */

import { u64ToNumber } from '../../src/core/bytes.js';
import { CorruptImageError, LimitExceededError, UnsupportedFeatureError, WrongFormatError } from '../../src/core/errors.js';
import { bytes, defineStruct, u32be, u64be, u8, type Decoded } from '../../src/core/struct.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
} from './features.js';
import {
  MAX_BACKING_FILE_NAME,
  MAX_CLUSTER_BITS,
  MAX_L1_BYTES,
  MAX_REFCOUNT_ORDER,
  MAX_REFCOUNT_TABLE_BYTES,
  MAX_SNAPSHOTS,
  MIN_CLUSTER_BITS,
  MIN_EXTENDED_L2_CLUSTER_BITS,
} from './limits.js';

export * from './features.js';

/** `QFI\xfb`, the first four bytes of every qcow2 file. */
export const QCOW2_MAGIC = 0x514649fb;

/** Size of the version 2 header; version 3 fields follow it. */
export const HEADER_V2_BYTES = 72;

/** Smallest version 3 header_length (through the header_length field itself). */
export const MIN_HEADER_V3_BYTES = 104;

/** The header_length qemu 7.2 writes: through compression_type and 7 bytes of padding. */
export const HEADER_V3_BYTES = 112;

/** qemu sizes a disk in 512-byte sectors. */
const SECTOR_BYTES = 512;

/**
 * The disk's size as qemu takes it: the header's size in whole sectors
 * (qemu's total_sectors), so a size field that is not a multiple of 512 (only
 * a damaged or hand-made header has one) loses its part sector.
 */
export function virtualSize(header: { size: number }): number {
  return Math.floor(header.size / SECTOR_BYTES) * SECTOR_BYTES;
}

/** Bytes of one snapshot table entry's fixed part (used by the table-size check). */
export const SNAPSHOT_ENTRY_FIXED_BYTES = 40;

/** crypt_method values. */
export const CRYPT_NONE = 0;
export const CRYPT_AES = 1;
export const CRYPT_LUKS = 2;

/** compression_type values. */
export const COMPRESSION_DEFLATE = 0;
export const COMPRESSION_ZSTD = 1;

/** Names qemu-img uses for compression_type. */
export const COMPRESSION_NAMES: Record<number, string> = { 0: 'zlib', 1: 'zstd' };

/** The version 2 header, and the first 72 bytes of every version 3 header. */
export const HeaderV2 = defineStruct('qcow2 header', HEADER_V2_BYTES, {
  magic: [0, u32be],
  version: [4, u32be],
  backingFileOffset: [8, u64be],
  backingFileSize: [16, u32be],
  clusterBits: [20, u32be],
  size: [24, u64be],
  cryptMethod: [32, u32be],
  l1Size: [36, u32be],
  l1TableOffset: [40, u64be],
  refcountTableOffset: [48, u64be],
  refcountTableClusters: [56, u32be],
  nbSnapshots: [60, u32be],
  snapshotsOffset: [64, u64be],
});

/** The version 3 fields, bytes 72..111 of the header (offsets below are relative to 72). */
export const HeaderV3Fields = defineStruct('qcow2 v3 header fields', HEADER_V3_BYTES - HEADER_V2_BYTES, {
  incompatibleFeatures: [0, u64be], // byte 72
  compatibleFeatures: [8, u64be], // byte 80
  autoclearFeatures: [16, u64be], // byte 88
  refcountOrder: [24, u32be], // byte 96
  headerLength: [28, u32be], // byte 100
  compressionType: [32, u8], // byte 104, present when header_length > 104
  padding: [33, bytes(7)], // bytes 105..111
});

/** A decoded, validated qcow2 header with offsets as plain numbers. */
export interface Qcow2Header {
  version: 2 | 3;
  backingFileOffset: number;
  backingFileSize: number;
  clusterBits: number;
  /** Virtual disk size in bytes. */
  size: number;
  cryptMethod: number;
  l1Size: number;
  l1TableOffset: number;
  refcountTableOffset: number;
  refcountTableClusters: number;
  nbSnapshots: number;
  snapshotsOffset: number;
  incompatibleFeatures: bigint;
  compatibleFeatures: bigint;
  autoclearFeatures: bigint;
  /** log2 of the refcount width in bits (4 for version 2). */
  refcountOrder: number;
  /** Where header extensions start (72 for version 2). */
  headerLength: number;
  compressionType: number;
  /** Header bytes between the known fields and header_length, kept for rewriting. */
  unknownHeaderBytes: Uint8Array;
}

/** Cluster size in bytes. */
export function clusterSizeOf(header: Pick<Qcow2Header, 'clusterBits'>): number {
  return 2 ** header.clusterBits;
}

/** True when L2 entries are 128-bit extended entries with subcluster bitmaps. */
export function hasExtendedL2(header: Pick<Qcow2Header, 'incompatibleFeatures'>): boolean {
  return (header.incompatibleFeatures & INCOMPAT_EXTENDED_L2) !== 0n;
}

/** True when guest data lives in an external data file. */
export function hasDataFile(header: Pick<Qcow2Header, 'incompatibleFeatures'>): boolean {
  return (header.incompatibleFeatures & INCOMPAT_DATA_FILE) !== 0n;
}

/** True when the external data file is a valid raw image by itself. */
export function isDataFileRaw(header: Pick<Qcow2Header, 'autoclearFeatures'>): boolean {
  return (header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
}

/** Refcount width in bits. */
export function refcountBitsOf(header: Pick<Qcow2Header, 'refcountOrder'>): number {
  return 2 ** header.refcountOrder;
}

/** Bytes per L2 entry: 8, or 16 with extended L2. */
export function l2EntryBytes(header: Pick<Qcow2Header, 'incompatibleFeatures'>): number {
  return hasExtendedL2(header) ? 16 : 8;
}

/** Entries per L2 table. */
export function l2EntriesOf(header: Pick<Qcow2Header, 'clusterBits' | 'incompatibleFeatures'>): number {
  return clusterSizeOf(header) / l2EntryBytes(header);
}

/** The fewest L1 entries that cover `size` guest bytes. */
export function minL1Entries(header: Pick<Qcow2Header, 'clusterBits' | 'incompatibleFeatures' | 'size'>): number {
  const bytesPerL1Entry = clusterSizeOf(header) * l2EntriesOf(header);
  return Math.ceil(header.size / bytesPerL1Entry);
}

/** Decodes the fixed header fields without validating them (for tools that inspect broken files). */
export function decodeHeader(head: Uint8Array): Qcow2Header {
  if (head.length < HEADER_V2_BYTES) {
    throw new CorruptImageError(`qcow2 header truncated: ${head.length} of ${HEADER_V2_BYTES} bytes`, 0);
  }
  const v2 = HeaderV2.decode(head);
  const version = v2.version === 2 ? 2 : 3;
  const header: Qcow2Header = {
    version,
    backingFileOffset: u64ToNumber(v2.backingFileOffset, 'backing_file_offset', 8),
    backingFileSize: v2.backingFileSize,
    clusterBits: v2.clusterBits,
    size: u64ToNumber(v2.size, 'virtual size', 24),
    cryptMethod: v2.cryptMethod,
    l1Size: v2.l1Size,
    l1TableOffset: u64ToNumber(v2.l1TableOffset, 'l1_table_offset', 40),
    refcountTableOffset: u64ToNumber(v2.refcountTableOffset, 'refcount_table_offset', 48),
    refcountTableClusters: v2.refcountTableClusters,
    nbSnapshots: v2.nbSnapshots,
    snapshotsOffset: u64ToNumber(v2.snapshotsOffset, 'snapshots_offset', 64),
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: HEADER_V2_BYTES,
    compressionType: COMPRESSION_DEFLATE,
    unknownHeaderBytes: new Uint8Array(0),
  };
  if (version === 3) decodeV3Fields(head, header);
  return header;
}

function decodeV3Fields(head: Uint8Array, header: Qcow2Header): void {
  if (head.length < MIN_HEADER_V3_BYTES) {
    throw new CorruptImageError(`qcow2 v3 header truncated: ${head.length} of ${MIN_HEADER_V3_BYTES} bytes`, 0);
  }
  const padded = new Uint8Array(HEADER_V3_BYTES);
  padded.set(head.subarray(0, Math.min(head.length, HEADER_V3_BYTES)));
  const v3 = HeaderV3Fields.decode(padded, HEADER_V2_BYTES);
  header.incompatibleFeatures = v3.incompatibleFeatures;
  header.compatibleFeatures = v3.compatibleFeatures;
  header.autoclearFeatures = v3.autoclearFeatures;
  header.refcountOrder = v3.refcountOrder;
  header.headerLength = v3.headerLength;
  // compression_type exists only when the header is long enough to hold it.
  if (v3.headerLength > MIN_HEADER_V3_BYTES) header.compressionType = v3.compressionType;
  if (v3.headerLength > HEADER_V3_BYTES && head.length >= v3.headerLength) {
    header.unknownHeaderBytes = head.slice(HEADER_V3_BYTES, v3.headerLength);
  }
}

/**
 * Encodes a header: 72 bytes for version 2, `headerLength` bytes for version 3
 * (unknown trailing header bytes are written back as they were read).
 */
export function encodeHeader(header: Qcow2Header): Uint8Array {
  const length = header.version === 2 ? HEADER_V2_BYTES : Math.max(header.headerLength, MIN_HEADER_V3_BYTES);
  const out = new Uint8Array(Math.max(length, header.version === 2 ? 0 : HEADER_V3_BYTES));
  HeaderV2.encodeInto(out, {
    magic: QCOW2_MAGIC,
    version: header.version,
    backingFileOffset: BigInt(header.backingFileOffset),
    backingFileSize: header.backingFileSize,
    clusterBits: header.clusterBits,
    size: BigInt(header.size),
    cryptMethod: header.cryptMethod,
    l1Size: header.l1Size,
    l1TableOffset: BigInt(header.l1TableOffset),
    refcountTableOffset: BigInt(header.refcountTableOffset),
    refcountTableClusters: header.refcountTableClusters,
    nbSnapshots: header.nbSnapshots,
    snapshotsOffset: BigInt(header.snapshotsOffset),
  });
  if (header.version === 2) return out;
  const v3: Decoded<typeof HeaderV3Fields.fields> = {
    incompatibleFeatures: header.incompatibleFeatures,
    compatibleFeatures: header.compatibleFeatures,
    autoclearFeatures: header.autoclearFeatures,
    refcountOrder: header.refcountOrder,
    headerLength: length,
    compressionType: length > MIN_HEADER_V3_BYTES ? header.compressionType : 0,
    padding: new Uint8Array(7),
  };
  HeaderV3Fields.encodeInto(out, v3, HEADER_V2_BYTES);
  if (length > HEADER_V3_BYTES) out.set(header.unknownHeaderBytes.subarray(0, length - HEADER_V3_BYTES), HEADER_V3_BYTES);
  return out.subarray(0, length);
}

/**
 * Decodes and validates a header the way qcow2_open does. `fileSize`, when
 * given, also requires every table to lie inside the file. An encrypted image
 * passes only with `describeEncrypted`; a header without a refcount table
 * only with `forCheck`, as qemu opens an image for checking.
 * Incompatible feature bits are checked separately (`checkIncompatibleFeatures`),
 * once the feature-name table has been read.
 */
export function parseHeader(head: Uint8Array, fileSize?: number, describeEncrypted = false, forCheck = false): Qcow2Header {
  if (head.length < 4 || new DataView(head.buffer, head.byteOffset, 4).getUint32(0) !== QCOW2_MAGIC) {
    throw new WrongFormatError('not a qcow2 image (bad magic)');
  }
  if (head.length < HEADER_V2_BYTES) {
    throw new CorruptImageError(`qcow2 header truncated: ${head.length} of ${HEADER_V2_BYTES} bytes`, 0);
  }
  const version = new DataView(head.buffer, head.byteOffset + 4, 4).getUint32(0);
  if (version !== 2 && version !== 3) {
    throw new UnsupportedFeatureError(`unsupported qcow2 version ${version}`, { version });
  }
  const header = decodeHeader(head);
  validateLayout(header);
  validateCrypt(header, describeEncrypted);
  validateTables(header, fileSize, forCheck);
  return header;
}

function validateLayout(header: Qcow2Header): void {
  if (header.clusterBits < MIN_CLUSTER_BITS || header.clusterBits > MAX_CLUSTER_BITS) {
    throw new CorruptImageError(
      `cluster_bits ${header.clusterBits} is outside ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`,
      20,
    );
  }
  const clusterSize = clusterSizeOf(header);
  if (header.version === 3) {
    if (header.headerLength < MIN_HEADER_V3_BYTES) {
      throw new CorruptImageError(`qcow2 header too short (header_length ${header.headerLength})`, 100);
    }
    if (header.headerLength > clusterSize) {
      throw new CorruptImageError(`qcow2 header exceeds the cluster size (header_length ${header.headerLength})`, 100);
    }
    // qcow2.rst: "at least 104 bytes and must be a multiple of 8"; extensions start 8-aligned.
    if (header.headerLength % 8 !== 0) {
      throw new CorruptImageError(`qcow2 header_length ${header.headerLength} is not a multiple of 8`, 100);
    }
    if (header.refcountOrder > MAX_REFCOUNT_ORDER) {
      throw new CorruptImageError(`refcount_order ${header.refcountOrder} is larger than ${MAX_REFCOUNT_ORDER}`, 96);
    }
  }
  if (header.backingFileOffset > clusterSize) {
    throw new CorruptImageError(`invalid backing file offset ${header.backingFileOffset}`, 8);
  }
  if (header.backingFileOffset !== 0) {
    if (header.backingFileSize > Math.min(MAX_BACKING_FILE_NAME, clusterSize - header.backingFileOffset)) {
      throw new CorruptImageError(`backing file name too long (${header.backingFileSize} bytes)`, 16);
    }
  }
  validateCompression(header);
  if (hasExtendedL2(header) && header.clusterBits < MIN_EXTENDED_L2_CLUSTER_BITS) {
    throw new CorruptImageError(`extended L2 entries need clusters of at least 16 KiB (cluster_bits ${header.clusterBits})`, 20);
  }
  if (isDataFileRaw(header) && !hasDataFile(header)) {
    throw new CorruptImageError('data-file-raw is set without an external data file', 88);
  }
}

function validateCompression(header: Qcow2Header): void {
  const flagged = (header.incompatibleFeatures & INCOMPAT_COMPRESSION) !== 0n;
  if (header.compressionType !== COMPRESSION_DEFLATE && header.compressionType !== COMPRESSION_ZSTD) {
    throw new UnsupportedFeatureError(`unknown compression type ${header.compressionType}`, {
      compressionType: header.compressionType,
    });
  }
  if (header.compressionType === COMPRESSION_DEFLATE && flagged) {
    throw new CorruptImageError('compression type feature bit set with deflate compression', 72);
  }
  if (header.compressionType !== COMPRESSION_DEFLATE && !flagged) {
    throw new CorruptImageError('compression type feature bit missing for a non-deflate compression type', 72);
  }
}

/** An encrypted image is refused, unless only described (`info` shows its encryption header without the key). */
function validateCrypt(header: Qcow2Header, describeEncrypted: boolean): void {
  if ((header.cryptMethod === CRYPT_AES || header.cryptMethod === CRYPT_LUKS) && !describeEncrypted) {
    throw new UnsupportedFeatureError('encrypted images are not supported', { cryptMethod: header.cryptMethod });
  }
  if (header.cryptMethod !== CRYPT_NONE && header.cryptMethod !== CRYPT_AES && header.cryptMethod !== CRYPT_LUKS) {
    throw new UnsupportedFeatureError(`unsupported encryption method ${header.cryptMethod}`, {
      cryptMethod: header.cryptMethod,
    });
  }
}

function validateTables(header: Qcow2Header, fileSize: number | undefined, forCheck: boolean): void {
  const clusterSize = clusterSizeOf(header);
  if (header.l1Size > MAX_L1_BYTES / 8) {
    throw new LimitExceededError(`active L1 table too large (${header.l1Size} entries)`, { l1Size: header.l1Size });
  }
  if (header.l1Size < minL1Entries(header)) {
    throw new CorruptImageError(`L1 table is too small (${header.l1Size} entries for ${header.size} bytes)`, 36);
  }
  validateTableOffset(header.l1TableOffset, header.l1Size * 8, clusterSize, fileSize, 'L1 table', 40);
  if (header.refcountTableClusters === 0 && !forCheck) {
    throw new CorruptImageError('image does not contain a reference count table', 56);
  }
  if (header.refcountTableClusters > MAX_REFCOUNT_TABLE_BYTES / clusterSize) {
    throw new LimitExceededError(`reference count table too large (${header.refcountTableClusters} clusters)`, {
      refcountTableClusters: header.refcountTableClusters,
    });
  }
  const refcountTableBytes = header.refcountTableClusters * clusterSize;
  validateTableOffset(header.refcountTableOffset, refcountTableBytes, clusterSize, fileSize, 'reference count table', 48);
  if (header.nbSnapshots > MAX_SNAPSHOTS) {
    throw new LimitExceededError(`too many snapshots (${header.nbSnapshots})`, { nbSnapshots: header.nbSnapshots });
  }
  const snapshotBytes = header.nbSnapshots * SNAPSHOT_ENTRY_FIXED_BYTES;
  // Not held to the file's size: a table past the end reads as zeros, as in qemu (see snapshots.ts).
  validateTableOffset(header.snapshotsOffset, snapshotBytes, clusterSize, undefined, 'snapshot table', 64);
}

/**
 * qemu's validate_table_offset: cluster-aligned, no overflow, and (when the file
 * size is known) inside the file. `fieldOffset` is where the offset is stored.
 * The offset must be aligned even for an empty table (no snapshots, a
 * zero-length L1 table): qemu refuses such a header all the same.
 */
export function validateTableOffset(
  offset: number,
  length: number,
  clusterSize: number,
  fileSize: number | undefined,
  what: string,
  fieldOffset: number,
): void {
  if (offset % clusterSize !== 0) {
    throw new CorruptImageError(`${what} offset ${offset} is not cluster-aligned`, fieldOffset);
  }
  if (length === 0) return;
  if (length > Number.MAX_SAFE_INTEGER - offset) {
    throw new CorruptImageError(`${what} at ${offset} (${length} bytes) overflows`, fieldOffset);
  }
  if (fileSize !== undefined && (offset > fileSize || length > fileSize - offset)) {
    throw new CorruptImageError(`${what} at ${offset} (${length} bytes) lies past the end of the file (${fileSize} bytes)`, fieldOffset);
  }
}
