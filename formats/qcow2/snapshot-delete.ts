/**
 * Deleting an internal snapshot (qemu's qcow2_snapshot_delete): the snapshot
 * table without it is written first, so from then on nothing reaches the
 * snapshot's L1 table; then every cluster it reached loses one reference
 * (freed at zero), the active tables get COPIED back where refcounts dropped
 * to one, and the L1 copy is freed. A crash midway only leaks clusters.
 */

import type { Qcow2Image } from './image.js';
import { readL1Table } from './metadata.js';
import { noSuchSnapshot, snapshotAccess, snapshotByNameOrId } from './snapshot-access.js';
import { preflightSnapshotRefcount, updateSnapshotRefcount } from './snapshot-refcount.js';
import { writeSnapshotTable } from './snapshot-table-write.js';
import type { Qcow2Snapshot } from './snapshots.js';
import type { Qcow2Writer, WriterHost } from './write.js';

/** Deletes the snapshot `nameOrId` (the first with that name, else that id); returns the removed entry. */
export async function deleteSnapshot(image: Qcow2Image, nameOrId: string): Promise<Qcow2Snapshot> {
  const { writer, host } = snapshotAccess(image, `delete snapshot '${nameOrId}'`);
  return writer.serialized(() => deleteSnapshotNow(writer, host, image, nameOrId));
}

async function deleteSnapshotNow(writer: Qcow2Writer, host: WriterHost, image: Qcow2Image, nameOrId: string): Promise<Qcow2Snapshot> {
  const { metadata } = host;
  const snapshot = snapshotByNameOrId(metadata.snapshots, nameOrId);
  if (!snapshot) throw noSuchSnapshot(image, nameOrId);
  // Read (and so validate) the L1 copy before the table forgets where it is.
  const l1 = await readL1Table(host.device, snapshot.l1TableOffset, snapshot.l1Size, metadata.clusterSize, `L1 table of snapshot ${snapshot.id}`);
  await preflightSnapshotRefcount(host, l1, snapshot.l1TableOffset, -1);
  await writeSnapshotTable(host, metadata.snapshots.filter((s) => s !== snapshot), () => writer.writeHeader());
  await updateSnapshotRefcount(host, { l1, offset: snapshot.l1TableOffset, writeBack: false }, -1);
  await updateSnapshotRefcount(host, { l1: metadata.l1, offset: metadata.header.l1TableOffset, writeBack: true }, 0);
  if (snapshot.l1Size > 0) {
    const bytes = Math.ceil((snapshot.l1Size * 8) / metadata.clusterSize) * metadata.clusterSize;
    await host.allocator.release(snapshot.l1TableOffset, bytes);
  }
  await host.device.flush?.();
  return snapshot;
}
