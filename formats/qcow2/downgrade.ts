/**
 * Writing out zero clusters before a downgrade to version 2, which has no
 * zero flag (qemu's qcow2_expand_zero_clusters). Every L2 table that an L1
 * table reaches, the active one's and each snapshot's, is walked:
 *
 * - a zero cluster with no host cluster becomes unallocated when the image
 *   has no backing file (it reads as zeros either way); with one, it gets a
 *   new cluster written with zeros, counted once per L1 table that shares
 *   the L2 table;
 * - a zero cluster with a host cluster has that cluster written with zeros
 *   and becomes a plain data cluster; when another table (a snapshot's)
 *   reaches that cluster too, its data stays for that table and the entry
 *   gets a new zeroed cluster instead (qemu-img zeroes the shared cluster,
 *   and the snapshot loses its data there).
 *
 * Each new or reused cluster holds zeros before the entry that points at it
 * is written, and a cluster the entry leaves is released after the table is
 * written, so an interruption leaves at worst leaked clusters.
 */

import { UnsupportedFeatureError } from '../../src/core/errors.js';
import { COPIED_HI, clusterType, l2EntryHostOffset, l2EntryPosition } from './entries.js';
import { setEntry } from './l2-write.js';
import type { Qcow2Image } from './image.js';
import { readL1Table } from './metadata.js';
import { snapshotAccess } from './snapshot-access.js';
import { l2Tables } from './snapshot-refcount.js';
import type { WriterHost } from './write.js';

/** Rewrites every zero cluster of `image` (open for writing) as version 2 can hold it. */
export async function expandZeroClusters(image: Qcow2Image): Promise<void> {
  const { writer, host } = snapshotAccess(image, 'write out zero clusters');
  // Subclusters carry their own zero bits, which version 2 cannot hold either (a downgrade refuses them first).
  if (host.metadata.geometry.extendedL2) throw new UnsupportedFeatureError('cannot write out the zero clusters of an image with extended L2 entries');
  await writer.serialized(async () => {
    const { metadata } = host;
    const tables = [
      { l1: metadata.l1, offset: metadata.header.l1TableOffset },
      ...(await Promise.all(
        metadata.snapshots.map(async (snapshot) => ({
          l1: await readL1Table(host.device, snapshot.l1TableOffset, snapshot.l1Size, metadata.clusterSize, `L1 table of snapshot ${snapshot.id}`),
          offset: snapshot.l1TableOffset,
        })),
      )),
    ];
    const zeros = new Uint8Array(metadata.clusterSize);
    for (const { l1, offset } of tables) {
      for (const [l1Index, tableOffset] of l2Tables(l1, offset, metadata.clusterSize)) await expandTable(host, l1Index, tableOffset, zeros);
    }
    await host.device.flush?.();
  });
}

/** Expands the zero clusters of the L2 table at L1 index `l1Index`, and writes it back when it changed. */
async function expandTable(host: WriterHost, l1Index: number, tableOffset: number, zeros: Uint8Array): Promise<void> {
  const { metadata, allocator, device } = host;
  const { clusterSize, geometry } = metadata;
  const table = await host.l2Cache.get(tableOffset);
  // A table shared by several L1 tables counts each of its clusters once per table.
  const sharers = await allocator.refcounts.get(tableOffset / clusterSize);
  const backed = metadata.backingFileName !== undefined;
  // Clusters this table stops pointing at: released once the table no longer names them.
  const left: number[] = [];
  let changed = false;
  for (let index = 0; index < geometry.l2Entries; index++) {
    const type = clusterType(table, index, false, false);
    if (type !== 'zero-plain' && type !== 'zero-alloc') continue;
    const at = l2EntryPosition(index, false);
    changed = true;
    if (type === 'zero-plain' && !backed) {
      setEntry(table, at, 0, 0);
      continue;
    }
    let hostOffset = type === 'zero-alloc' ? l2EntryHostOffset(table, index, false, tableOffset) : 0;
    const references = hostOffset === 0 ? 0 : await allocator.refcounts.get(hostOffset / clusterSize);
    // Zeroed in place only when this table's references are all the cluster has. One that another table
    // (a snapshot's) reaches too keeps its data there; one counted less (a damaged image, or a cluster past
    // the end of the file) is not written at all. Either way the entry gets a new cluster.
    if (references !== sharers) {
      if (references > sharers) left.push(hostOffset);
      hostOffset = await allocator.allocate();
      if (sharers > 1) await allocator.refcounts.set(hostOffset / clusterSize, sharers);
    }
    // A damaged image's zero cluster may point at metadata: zeros must not land there.
    host.overlap.check(hostOffset, clusterSize, (l1Index * geometry.l2Entries + index) * clusterSize);
    await device.write!(hostOffset, zeros);
    const copied = sharers === 1 && (await allocator.refcounts.get(hostOffset / clusterSize)) === 1;
    setEntry(table, at, hostOffset, copied ? COPIED_HI : 0);
  }
  if (changed) await device.write!(tableOffset, new Uint8Array(table.buffer, table.byteOffset, table.byteLength).slice());
  for (const old of left) for (let reference = 0; reference < sharers; reference++) await allocator.release(old, clusterSize);
}
