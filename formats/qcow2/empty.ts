/**
 * Emptying a whole image as qemu's make_completely_empty does (qemu-img
 * commit empties the top image this way when it can): the file is cut back to
 * the header cluster, a one-cluster refcount table, one refcount block and a
 * zeroed L1 table, in that order, whatever it held before. Every step between
 * setting and clearing the dirty bit may leave the refcounts wrong, as in qemu:
 * a crash part-way leaves a dirty image, whose refcounts are rebuilt from its
 * tables when it is next opened for writing.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { encodeHeader, hasDataFile } from './header.js';
import { INCOMPAT_DIRTY } from './features.js';
import type { Qcow2Metadata } from './metadata.js';
import { encodeU64, refcountsPerBlock, setRefcount } from './refcount.js';

/** Clusters the emptied file keeps before its L1 table: header, refcount table, refcount block. */
const LEADING_CLUSTERS = 3;

function l1Clusters(metadata: Qcow2Metadata): number {
  return Math.ceil((metadata.header.l1Size * 8) / metadata.clusterSize);
}

/**
 * qemu's conditions: a version 3 image (the dirty bit), nothing else that
 * holds clusters (snapshots, bitmaps), guest data in this file (no data
 * file), and the new layout refcounted by a single refcount block.
 */
export function canEmptyCompletely(metadata: Qcow2Metadata): boolean {
  const { header, clusterSize } = metadata;
  return (
    header.version >= 3 &&
    metadata.snapshots.length === 0 &&
    metadata.bitmaps.length === 0 &&
    !hasDataFile(header) &&
    LEADING_CLUSTERS + l1Clusters(metadata) <= refcountsPerBlock(clusterSize, header.refcountOrder)
  );
}

/** Empties the image on `device` (see above); `metadata` is updated to the new layout. */
export async function emptyCompletely(device: BlockDevice, metadata: Qcow2Metadata): Promise<void> {
  const { header, clusterSize } = metadata;
  const write = device.write!.bind(device);
  const tableClusters = l1Clusters(metadata);
  header.incompatibleFeatures |= INCOMPAT_DIRTY;
  await write(0, encodeHeader(header));
  await device.flush?.();
  // Nothing may point anywhere from here on: the old L1 table first, then the clusters the new layout takes.
  if (header.l1Size > 0) await write(header.l1TableOffset, new Uint8Array(tableClusters * clusterSize));
  await write(clusterSize, new Uint8Array((LEADING_CLUSTERS - 1 + tableClusters) * clusterSize));
  header.l1TableOffset = LEADING_CLUSTERS * clusterSize;
  header.refcountTableOffset = clusterSize;
  header.refcountTableClusters = 1;
  await write(0, encodeHeader(header));
  await device.flush?.();
  await write(clusterSize, encodeU64(2 * clusterSize));
  const block = new Uint8Array(clusterSize);
  for (let cluster = 0; cluster < LEADING_CLUSTERS + tableClusters; cluster++) setRefcount(block, cluster, header.refcountOrder, 1);
  await write(2 * clusterSize, block);
  await device.flush?.();
  header.incompatibleFeatures &= ~INCOMPAT_DIRTY;
  await write(0, encodeHeader(header));
  await device.truncate!((LEADING_CLUSTERS + tableClusters) * clusterSize);
  await device.flush?.();
  metadata.l1 = new DataView(new ArrayBuffer(header.l1Size * 8));
}
