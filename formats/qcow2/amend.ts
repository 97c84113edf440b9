/**
 * Changing the options of an existing image in its header cluster (qemu-img
 * amend): the compatibility level (version 2 → 3 always works; 3 → 2 only
 * when nothing version 3 alone can express is in use), lazy refcounts, and
 * the name of an external data file. Cluster 0 (header, extensions, backing
 * file name) is rewritten in one write; nothing else moves.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError, UnsupportedFeatureError } from '../../src/core/errors.js';
import { clusterType, type ClusterType } from './entries.js';
import { l2Tables } from './snapshot-refcount.js';
import { EXT_BACKING_FORMAT, EXT_BITMAPS, EXT_CRYPTO_HEADER, EXT_DATA_FILE, EXT_FEATURE_TABLE, encodeExtensions, type RawExtension } from './extensions.js';
import { AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_EXTENDED_L2 } from './features.js';
import { HEADER_V2_BYTES, HEADER_V3_BYTES, INCOMPAT_DIRTY, encodeHeader, hasDataFile, hasExtendedL2 } from './header.js';
import { readL1Table, type Qcow2Metadata } from './metadata.js';
import { FEATURE_TABLE_MIN_CLUSTER, featureTableExtension } from './create.js';

/** Extension order qemu's qcow2_update_header writes. */
const ORDER = [EXT_BACKING_FORMAT, EXT_DATA_FILE, EXT_CRYPTO_HEADER, EXT_FEATURE_TABLE, EXT_BITMAPS];

function ordered(records: RawExtension[]): RawExtension[] {
  const known = ORDER.flatMap((type) => records.filter((record) => record.type === type));
  return [...known, ...records.filter((record) => !ORDER.includes(record.type))];
}

/** What an amend changes in the header cluster; what is left out stays. */
export interface HeaderAmendment {
  version?: 2 | 3;
  lazyRefcounts?: boolean;
  /** The external data file's new name (the image must have one). */
  dataFile?: string;
  /** False: the data file need no longer stay a valid raw disk (qemu takes off, never on, for an existing image). */
  dataFileRaw?: false;
}

/** Refuses to amend an image that was not closed cleanly: its refcounts may be stale. */
export function requireClean(metadata: Qcow2Metadata): void {
  if ((metadata.header.incompatibleFeatures & INCOMPAT_DIRTY) !== 0n) {
    throw new CorruptImageError("image was not closed cleanly (dirty bit set); run 'platter check -r all' first", 72);
  }
}

/** True when the image has lazy refcounts on. */
export function lazyRefcountsOn(metadata: Qcow2Metadata): boolean {
  return (metadata.header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n;
}

/**
 * Applies `change` to the header cluster, in one write; a no-op when nothing
 * changes. A downgrade drops lazy refcounts (version 2 has no such bit).
 */
export async function amendHeader(device: BlockDevice, metadata: Qcow2Metadata, change: HeaderAmendment): Promise<void> {
  const { header } = metadata;
  requireClean(metadata);
  const version = change.version ?? header.version;
  const lazy = version === 2 ? false : (change.lazyRefcounts ?? lazyRefcountsOn(metadata));
  const renamed = change.dataFile !== undefined && change.dataFile !== metadata.extensions.dataFile;
  const unraw = change.dataFileRaw === false && (header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
  if (version === header.version && lazy === lazyRefcountsOn(metadata) && !renamed && !unraw) return;
  if (unraw) header.autoclearFeatures &= ~AUTOCLEAR_DATA_FILE_RAW;
  let records = metadata.extensions.all.filter((record) => record.type !== EXT_FEATURE_TABLE);
  if (renamed) records = records.map((record) => (record.type === EXT_DATA_FILE ? { type: EXT_DATA_FILE, data: new TextEncoder().encode(change.dataFile) } : record));
  if (version === 2 && header.version !== 2) {
    // The caller has checked the downgrade and written out the zero clusters (qemu-img checks as it goes).
    Object.assign(header, { version: 2, headerLength: HEADER_V2_BYTES, incompatibleFeatures: 0n, compatibleFeatures: 0n, autoclearFeatures: 0n, refcountOrder: 4, compressionType: 0, unknownHeaderBytes: new Uint8Array(0) });
  } else if (version === 3) {
    if (header.version !== 3) Object.assign(header, { version: 3, headerLength: HEADER_V3_BYTES, refcountOrder: 4 });
    header.compatibleFeatures = lazy ? header.compatibleFeatures | COMPAT_LAZY_REFCOUNTS : header.compatibleFeatures & ~COMPAT_LAZY_REFCOUNTS;
    if (metadata.clusterSize >= FEATURE_TABLE_MIN_CLUSTER) records = [...records, featureTableExtension()];
  }
  await device.write!(0, encodeHeaderCluster(metadata, records));
  await device.flush?.();
}

/**
 * Cluster 0 of the image as `metadata.header` describes it, with the
 * extension `records` in qemu's order and the backing file name after them.
 */
export function encodeHeaderCluster(metadata: Qcow2Metadata, records: RawExtension[]): Uint8Array {
  const { header, clusterSize } = metadata;
  const extensions = encodeExtensions(ordered(records));
  const name = metadata.backingFileName === undefined ? new Uint8Array(0) : new TextEncoder().encode(metadata.backingFileName);
  const nameAt = header.headerLength + extensions.length;
  if (nameAt + name.length > clusterSize) throw new UnsupportedFeatureError('the header extensions do not fit in the header cluster');
  if (name.length > 0) {
    header.backingFileOffset = nameAt;
    header.backingFileSize = name.length;
  }
  // The whole cluster, zero-padded, as qemu writes it: no stale bytes stay behind the new layout.
  const cluster = new Uint8Array(clusterSize);
  cluster.set(encodeHeader(header), 0);
  cluster.set(extensions, header.headerLength);
  cluster.set(name, nameAt);
  return cluster;
}

/** The largest VM state size a version 2 snapshot entry holds (32 bits). */
const V2_VM_STATE_MAX = 0xffffffff;

/**
 * Refuses a downgrade to version 2 of an image that the rest of the amend
 * leaves with `target`'s size and refcount width, when it uses anything
 * version 2 cannot hold, in qemu-img's words:
 * zero clusters can be written out (expandZeroClusters), a zstd compression
 * type with no compressed cluster is dropped, the rest cannot. Persistent
 * bitmaps are refused too, where qemu drops them and leaks their clusters.
 */
export async function checkDowngrade(device: BlockDevice, metadata: Qcow2Metadata, target: { size: number; refcountOrder: number }): Promise<void> {
  const { header } = metadata;
  const { size } = target;
  const refuse = (message: string) => {
    throw new UnsupportedFeatureError(message);
  };
  if (target.refcountOrder !== 4) refuse('compat=0.10 requires refcount_bits=16');
  if (hasDataFile(header)) refuse('Cannot downgrade an image with a data file');
  if (metadata.snapshots.some((snapshot) => snapshot.vmStateSize > V2_VM_STATE_MAX || snapshot.diskSize !== size)) {
    refuse('Internal snapshots prevent downgrade of image');
  }
  if (hasExtendedL2(header)) refuse(`Cannot downgrade an image with incompatible features 0x${INCOMPAT_EXTENDED_L2.toString(16)} set`);
  if (metadata.extensions.bitmaps !== undefined) refuse('Cannot downgrade an image with persistent bitmaps to compat=0.10');
  if (header.compressionType !== 0 && (await anyEntry(device, metadata, (type) => type === 'compressed'))) {
    refuse('Cannot downgrade an image with zstd compression type and existing compressed clusters');
  }
}

/** True when an L2 entry that any L1 table (active or a snapshot's) reaches is of a type `wanted` accepts. */
export async function anyEntry(device: BlockDevice, metadata: Qcow2Metadata, wanted: (type: ClusterType) => boolean): Promise<boolean> {
  const { header, clusterSize, geometry } = metadata;
  const tables = [{ offset: header.l1TableOffset, size: header.l1Size }, ...metadata.snapshots.map((s) => ({ offset: s.l1TableOffset, size: s.l1Size }))];
  for (const table of tables) {
    if (table.size === 0) continue;
    const l1 = await readL1Table(device, table.offset, table.size, clusterSize);
    for (const [, l2Offset] of l2Tables(l1, table.offset, clusterSize)) {
      const l2 = new DataView((await device.read(l2Offset, clusterSize)).buffer);
      for (let entry = 0; entry < geometry.l2Entries; entry++) {
        if (wanted(clusterType(l2, entry, geometry.extendedL2, false))) return true;
      }
    }
  }
  return false;
}
