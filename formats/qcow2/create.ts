/**
 * New qcow2 images, laid out the way qemu's qcow2_co_create lays them out:
 * header and extensions in cluster 0, a one-cluster refcount table in cluster 1,
 * the first refcount block in cluster 2, then the L1 table. A fresh image with
 * default options is byte-identical to `qemu-img create -f qcow2`'s.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { UsageError } from '../../src/core/errors.js';
import type { ImageHost } from '../../src/core/image.js';
import { EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_FEATURE_TABLE, FeatureNameEntry, encodeExtensions, type RawExtension } from './extensions.js';
import {
  AUTOCLEAR_DATA_FILE_RAW,
  COMPAT_LAZY_REFCOUNTS,
  COMPRESSION_DEFLATE,
  HEADER_V2_BYTES,
  HEADER_V3_BYTES,
  INCOMPAT_COMPRESSION,
  INCOMPAT_DATA_FILE,
  INCOMPAT_EXTENDED_L2,
  encodeHeader,
  type Qcow2Header,
} from './header.js';
import { MAX_BACKING_FILE_NAME, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, MIN_EXTENDED_L2_CLUSTER_BITS } from './limits.js';
import { encodeU64, refcountsPerBlock, setRefcount } from './refcount.js';

/** What a new image looks like (qemu-img create's -o options, parsed). */
export interface Qcow2CreateOptions {
  size: number;
  clusterSize: number;
  version: 2 | 3;
  /** 0 zlib, 1 zstd. */
  compressionType: number;
  extendedL2: boolean;
  refcountBits: number;
  lazyRefcounts: boolean;
  preallocation: 'off' | 'metadata' | 'falloc' | 'full';
  backingFile?: string;
  backingFormat?: string;
  dataFile?: string;
  dataFileRaw: boolean;
}

/** The defaults qemu-img create uses. */
export const QCOW2_CREATE_DEFAULTS: Qcow2CreateOptions = {
  size: 0,
  clusterSize: 65536,
  version: 3,
  compressionType: COMPRESSION_DEFLATE,
  extendedL2: false,
  refcountBits: 16,
  lazyRefcounts: false,
  preallocation: 'off',
  dataFileRaw: false,
};

/** Smallest cluster size whose header cluster gets the feature-name table (observed from qemu-img 7.2). */
export const FEATURE_TABLE_MIN_CLUSTER = 8192;

/** The feature-name table qemu 7.2 writes into every version 3 image, in its order. */
const FEATURE_NAMES: readonly [type: number, bit: number, name: string][] = [
  [0, 0, 'dirty bit'],
  [0, 1, 'corrupt bit'],
  [0, 2, 'external data file'],
  [0, 3, 'compression type'],
  [0, 4, 'extended L2 entries'],
  [1, 0, 'lazy refcounts'],
  [2, 0, 'bitmaps'],
  [2, 1, 'raw external data'],
];

/** The feature-name table extension record. */
export function featureTableExtension(): RawExtension {
  const table = new Uint8Array(FEATURE_NAMES.length * FeatureNameEntry.size);
  FEATURE_NAMES.forEach(([type, bit, name], i) => FeatureNameEntry.encodeInto(table, { type, bit, name }, i * FeatureNameEntry.size));
  return { type: EXT_FEATURE_TABLE, data: table };
}

/** Entries of the L1 table that maps `virtualSize` bytes (each entry points at one L2 table). */
export function l1EntriesFor(virtualSize: number, clusterSize: number, extendedL2: boolean): number {
  const l2Entries = clusterSize / (extendedL2 ? 16 : 8);
  return Math.ceil(virtualSize / clusterSize / l2Entries);
}

/** Refuses a cluster size qemu refuses (its validate_cluster_size), in its words. */
export function checkClusterSize(clusterSize: number, extendedL2: boolean): void {
  const clusterBits = Math.log2(clusterSize);
  if (!Number.isInteger(clusterBits) || clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw new UsageError('Cluster size must be a power of two between 512 and 2048k');
  }
  if (extendedL2 && clusterBits < MIN_EXTENDED_L2_CLUSTER_BITS) {
    throw new UsageError('Extended L2 entries are only supported with cluster sizes of at least 16384 bytes');
  }
}

/** Refuses a refcount width qemu refuses, in its words. */
export function checkRefcountBits(refcountBits: number): void {
  const refcountOrder = Math.log2(refcountBits);
  if (!Number.isInteger(refcountOrder) || refcountOrder < 0 || refcountOrder > 6) {
    throw new UsageError('Refcount width must be a power of two and may not exceed 64 bits');
  }
}

/** Refuses option combinations qemu refuses, in its words. */
export function validateCreateOptions(options: Qcow2CreateOptions): void {
  checkClusterSize(options.clusterSize, options.extendedL2);
  checkRefcountBits(options.refcountBits);
  if (options.version === 2) {
    if (options.refcountBits !== 16) throw new UsageError('Different refcount widths than 16 bits require compatibility level 1.1 or above (use version=v3 or greater)');
    if (options.lazyRefcounts) throw new UsageError('Lazy refcounts only supported with compatibility level 1.1 and above (use version=v3 or greater)');
    if (options.extendedL2) throw new UsageError('Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
    if (options.compressionType !== COMPRESSION_DEFLATE) throw new UsageError('Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)');
    if (options.dataFile !== undefined) throw new UsageError('External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)');
  }
  if (options.dataFileRaw && options.dataFile === undefined) throw new UsageError('data-file-raw requires data-file');
  if (options.backingFile !== undefined && options.dataFileRaw) throw new UsageError('Backing file and data-file-raw cannot be used at the same time');
  if (options.backingFormat !== undefined && options.backingFile === undefined) {
    throw new UsageError('Backing format cannot be used without backing file');
  }
  if (options.backingFile !== undefined && new TextEncoder().encode(options.backingFile).length > MAX_BACKING_FILE_NAME) {
    throw new UsageError('backing file name too long');
  }
  if (options.size % 512 !== 0) throw new UsageError('image size must be a multiple of 512 bytes');
}

/** The header of a new image, before its L1 table exists. */
export function newHeader(options: Qcow2CreateOptions): Qcow2Header {
  let incompatible = 0n;
  if (options.dataFile !== undefined) incompatible |= INCOMPAT_DATA_FILE;
  if (options.compressionType !== COMPRESSION_DEFLATE) incompatible |= INCOMPAT_COMPRESSION;
  if (options.extendedL2) incompatible |= INCOMPAT_EXTENDED_L2;
  return {
    version: options.version,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: Math.log2(options.clusterSize),
    size: options.size,
    cryptMethod: 0,
    l1Size: 0,
    l1TableOffset: 0,
    refcountTableOffset: options.clusterSize,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: incompatible,
    compatibleFeatures: options.lazyRefcounts ? COMPAT_LAZY_REFCOUNTS : 0n,
    autoclearFeatures: options.dataFileRaw ? AUTOCLEAR_DATA_FILE_RAW : 0n,
    refcountOrder: Math.log2(options.refcountBits),
    headerLength: options.version === 3 ? HEADER_V3_BYTES : HEADER_V2_BYTES,
    compressionType: options.compressionType,
    unknownHeaderBytes: new Uint8Array(0),
  };
}

/** Extension records in qemu's order: backing format, data file, feature names. */
function newExtensions(options: Qcow2CreateOptions): RawExtension[] {
  const records: RawExtension[] = [];
  const encoder = new TextEncoder();
  if (options.backingFormat !== undefined) records.push({ type: EXT_BACKING_FORMAT, data: encoder.encode(options.backingFormat) });
  if (options.dataFile !== undefined) records.push({ type: EXT_DATA_FILE, data: encoder.encode(options.dataFile) });
  // qemu 7.2 leaves the feature-name table out of clusters smaller than 8 KiB (room for the backing name).
  if (options.version === 3 && options.clusterSize >= FEATURE_TABLE_MIN_CLUSTER) records.push(featureTableExtension());
  return records;
}

/** Cluster 0 of a new image: header, extensions, backing file name. */
export function encodeCluster0(options: Qcow2CreateOptions, header: Qcow2Header): Uint8Array {
  const cluster = new Uint8Array(options.clusterSize);
  const extensions = encodeExtensions(newExtensions(options));
  const extensionsAt = header.headerLength;
  if (options.backingFile !== undefined) {
    const name = new TextEncoder().encode(options.backingFile);
    header.backingFileOffset = extensionsAt + extensions.length;
    header.backingFileSize = name.length;
    if (header.backingFileOffset + name.length > options.clusterSize) throw new UsageError('backing file name does not fit in the header cluster');
    cluster.set(name, header.backingFileOffset);
  }
  if (extensionsAt + extensions.length > options.clusterSize) throw new UsageError('header extensions do not fit in the header cluster');
  cluster.set(encodeHeader(header), 0);
  cluster.set(extensions, extensionsAt);
  return cluster;
}

/**
 * Writes the first three clusters of a new image onto an empty device: header,
 * refcount table, and a refcount block counting those three clusters. The L1
 * table (and any preallocation) is added by opening the image writable and
 * resizing it to `options.size`.
 */
export async function writeQcow2Skeleton(device: BlockDevice, options: Qcow2CreateOptions): Promise<void> {
  validateCreateOptions(options);
  const header = newHeader({ ...options });
  header.size = 0;
  const clusterSize = options.clusterSize;
  await device.write!(0, encodeCluster0(options, header));
  const tables = new Uint8Array(2 * clusterSize);
  tables.set(encodeU64(2 * clusterSize), 0);
  const block = tables.subarray(clusterSize);
  const order = header.refcountOrder;
  if (refcountsPerBlock(clusterSize, order) < 3) throw new UsageError('refcount block too small');
  for (let cluster = 0; cluster < 3; cluster++) setRefcount(block, cluster, order, 1);
  await device.write!(clusterSize, tables);
}

/** Names for preallocation modes qemu accepts for qcow2. */
export const PREALLOCATION_MODES = ['off', 'metadata', 'falloc', 'full'] as const;

/** The host services `createQcow2` passes when it reopens the new image. */
export type CreateHost = ImageHost;
