/**
 * Rebuilding the refcount structure from scratch (qemu's
 * rebuild_refcount_structure), for `check -r all` when refcount blocks are
 * missing or broken: new refcount blocks and a new table go into the first
 * free clusters of the rebuilt counts, then the header switches to them. The
 * old structures become leaks, which the check then frees.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { LimitExceededError } from '../../src/core/errors.js';
import { encodeHeader, type Qcow2Header } from './header.js';
import { MAX_REFCOUNT_TABLE_BYTES } from './limits.js';
import { refcountsPerBlock, setRefcount, writeU64 } from './refcount.js';

/** Rebuilt counts that grow as clusters are taken for the new structures. */
interface Counts {
  values: Uint32Array;
}

/** Takes `count` contiguous clusters that count zero, from `from` on; marks them used (qemu's alloc_clusters_imrt). */
function takeClusters(counts: Counts, count: number, from: number): number {
  let start = from;
  for (let at = from; ; at++) {
    if (at >= counts.values.length) {
      const grown = new Uint32Array(Math.max(at + count, counts.values.length * 2));
      grown.set(counts.values);
      counts.values = grown;
    }
    if (counts.values[at] !== 0) {
      start = at + 1;
      continue;
    }
    if (at - start + 1 === count) break;
  }
  for (let at = start; at < start + count; at++) counts.values[at] = 1;
  return start;
}

/** Writes the refcount blocks covering clusters with references in [first, end); allocates missing ones. */
async function writeBlocks(device: BlockDevice, counts: Counts, table: number[], first: number, end: number, clusterSize: number, order: number): Promise<boolean> {
  const perBlock = refcountsPerBlock(clusterSize, order);
  let grown = false;
  for (let cluster = first; cluster < end; cluster++) {
    if ((counts.values[cluster] ?? 0) === 0) continue;
    const blockIndex = Math.floor(cluster / perBlock);
    while (table.length <= blockIndex) {
      table.push(0);
      grown = true;
    }
    if (table[blockIndex] === 0) table[blockIndex] = takeClusters(counts, 1, 0) * clusterSize;
    const block = new Uint8Array(clusterSize);
    const blockStart = blockIndex * perBlock;
    for (let i = 0; i < perBlock; i++) {
      const value = counts.values[blockStart + i] ?? 0;
      if (value !== 0) setRefcount(block, i, order, value);
    }
    await device.write!(table[blockIndex]!, block);
    cluster = blockStart + perBlock - 1;
  }
  return grown;
}

/**
 * Writes new refcount blocks and a new refcount table for the rebuilt
 * `values` (which it extends with the new structures) and points the header
 * at them.
 */
export async function rebuildRefcountStructure(device: BlockDevice, header: Qcow2Header, values: Uint32Array): Promise<void> {
  const clusterSize = 2 ** header.clusterBits;
  const order = header.refcountOrder;
  const counts: Counts = { values: values.slice() };
  const table: number[] = [];
  await writeBlocks(device, counts, table, 0, counts.values.length, clusterSize, order);
  let tableOffset = 0;
  let tableClusters = 0;
  for (let changed = true; changed; ) {
    tableClusters = Math.ceil((table.length * 8) / clusterSize);
    if (tableClusters * clusterSize > MAX_REFCOUNT_TABLE_BYTES) throw new LimitExceededError('rebuilt refcount table would be too large');
    const first = takeClusters(counts, tableClusters, 0);
    tableOffset = first * clusterSize;
    changed = await writeBlocks(device, counts, table, first, first + tableClusters, clusterSize, order);
    if (changed) for (let at = first; at < first + tableClusters; at++) counts.values[at] = 0; // a larger table goes elsewhere
  }
  const encoded = new Uint8Array(tableClusters * clusterSize);
  const view = new DataView(encoded.buffer);
  table.forEach((offset, i) => writeU64(view, i * 8, offset));
  await device.write!(tableOffset, encoded);
  await device.flush?.();
  header.refcountTableOffset = tableOffset;
  header.refcountTableClusters = tableClusters;
  await device.write!(0, encodeHeader(header));
  await device.flush?.();
}
