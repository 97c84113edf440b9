/**
 * Changing the width of the refcounts of an existing image (qemu-img amend -o
 * refcount_bits=N, qemu's qcow2_change_refcount_order): every cluster keeps
 * its count, written again at the new width into new refcount blocks and a new
 * table, allocated through the old counts at the first free places. The header
 * then switches to them in one write, and the old structures are freed through
 * the new ones. A crash before the switch leaves the new structures as leaks;
 * one after it, the old ones.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { LimitExceededError, UsageError } from '../../src/core/errors.js';
import { encodeHeader } from './header.js';
import { MAX_REFCOUNT_TABLE_BYTES } from './limits.js';
import type { Qcow2Metadata } from './metadata.js';
import { ClusterAllocator } from './allocate.js';
import { maxRefcount, Refcounts, refcountBits, refcountsPerBlock, setRefcount, writeU64 } from './refcount.js';

/** Where the new structures go: a block per block index the counts need, and the table. */
interface Placement {
  blocks: Map<number, number>;
  tableOffset: number;
  tableClusters: number;
}

/**
 * Allocates the new refcount blocks and table through the old counts, as qemu
 * does: walking the clusters in order, a block for each new block index that
 * has a cluster in use, each at the first free place; then the table as one
 * run. Every allocation is itself a cluster in use, so the walk is repeated
 * until nothing new is needed (a table that became too small is given back
 * and taken again).
 */
async function placeNewStructures(old: Refcounts, order: number): Promise<Placement> {
  const { clusterSize } = old;
  const perBlock = refcountsPerBlock(clusterSize, order);
  const allocator = new ClusterAllocator(old);
  const blocks = new Map<number, number>();
  let table: { offset: number; clusters: number } | undefined;
  for (let changed = true; changed; ) {
    changed = false;
    for (let cluster = 0; cluster < old.endCluster; cluster++) {
      if ((await old.get(cluster)) === 0) continue;
      const index = Math.floor(cluster / perBlock);
      if (!blocks.has(index)) {
        blocks.set(index, await allocator.allocate());
        changed = true;
      }
      cluster = (index + 1) * perBlock - 1;
    }
    const clusters = Math.ceil(((Math.max(...blocks.keys()) + 1) * 8) / clusterSize);
    if (clusters * clusterSize > MAX_REFCOUNT_TABLE_BYTES) throw new LimitExceededError('the new refcount table would be too large');
    if (table && table.clusters < clusters) {
      await allocator.release(table.offset, table.clusters * clusterSize);
      table = undefined;
    }
    if (!table) {
      table = { offset: await allocator.allocateRun(clusters), clusters };
      changed = true;
    }
  }
  return { blocks, tableOffset: table!.offset, tableClusters: table!.clusters };
}

/** Re-encodes the image's refcounts at `2^order` bits; a no-op when that is the width already. */
export async function changeRefcountOrder(device: BlockDevice, metadata: Qcow2Metadata, order: number): Promise<void> {
  const { header, clusterSize } = metadata;
  if (header.refcountOrder === order) return;
  const load = (tableOffset: number, tableClusters: number, refcountOrder: number) =>
    Refcounts.load(device, { clusterSize, refcountOrder, tableOffset, tableClusters }, async () => {}, { blocksInsideFile: true });
  const old = await load(header.refcountTableOffset, header.refcountTableClusters, header.refcountOrder);
  // Every count must fit before anything is written.
  for (let cluster = 0; cluster < old.endCluster; cluster++) {
    const value = await old.get(cluster);
    if (value > maxRefcount(order)) {
      throw new UsageError(`Cannot decrease refcount entry width to ${refcountBits(order)} bits: Cluster at offset 0x${(cluster * clusterSize).toString(16)} has a refcount of ${value}`);
    }
  }
  const placed = await placeNewStructures(old, order);
  const values = new Uint32Array(old.endCluster);
  for (let cluster = 0; cluster < values.length; cluster++) values[cluster] = await old.get(cluster);
  const perBlock = refcountsPerBlock(clusterSize, order);
  const table = new Uint8Array(placed.tableClusters * clusterSize);
  const tableView = new DataView(table.buffer);
  for (const [index, offset] of placed.blocks) {
    const block = new Uint8Array(clusterSize);
    for (let i = 0; i < perBlock && index * perBlock + i < values.length; i++) {
      const value = values[index * perBlock + i]!;
      if (value !== 0) setRefcount(block, i, order, value);
    }
    await device.write!(offset, block);
    writeU64(tableView, index * 8, offset);
  }
  await device.write!(placed.tableOffset, table);
  await device.flush?.();
  const oldTable = { offset: header.refcountTableOffset, clusters: header.refcountTableClusters };
  const oldBlocks = Array.from({ length: old.tableEntries }, (_, index) => old.blockOffset(index)).filter((offset) => offset !== 0);
  Object.assign(header, { refcountOrder: order, refcountTableOffset: placed.tableOffset, refcountTableClusters: placed.tableClusters });
  await device.write!(0, encodeHeader(header));
  await device.flush?.();
  // The old structures are referenced by nothing now: they are freed through the new counts.
  const now = await load(header.refcountTableOffset, header.refcountTableClusters, order);
  for (const offset of oldBlocks) await now.adjust(offset / clusterSize, 1, -1);
  await now.adjust(oldTable.offset / clusterSize, oldTable.clusters, -1);
  await device.flush?.();
}
