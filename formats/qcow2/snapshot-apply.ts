/**
 * Reverting to an internal snapshot (qemu's qcow2_snapshot_goto). Every
 * cluster the snapshot reaches gets one more reference before the active L1
 * table is overwritten with the snapshot's; only then do the clusters of the
 * old active state lose theirs (freed at zero). The COPIED flags are rebuilt
 * last, and the virtual size becomes the one recorded with the snapshot. A
 * crash midway only leaks clusters; COPIED is never set on a shared cluster.
 */

import { ClusterMap } from './clusters.js';
import type { Qcow2Image } from './image.js';
import { readL1Table } from './metadata.js';
import { noSuchSnapshot, snapshotAccess, snapshotByIdOrName } from './snapshot-access.js';
import { updateSnapshotRefcount } from './snapshot-refcount.js';
import type { Qcow2Snapshot } from './snapshots.js';
import type { Qcow2Writer, WriterHost } from './write.js';

/** Makes the active L1 table at least `entries` long (it moves when it grows). */
async function ensureL1Entries(writer: Qcow2Writer, host: WriterHost, entries: number): Promise<void> {
  if (entries > host.metadata.header.l1Size) await writer.growL1(entries);
}

/** Reverts `image` (open writable) to the snapshot `idOrName` (an id first, then the first name); returns it. */
export async function applySnapshot(image: Qcow2Image, idOrName: string): Promise<Qcow2Snapshot> {
  const { writer, host } = snapshotAccess(image, `apply snapshot '${idOrName}'`);
  const { metadata } = host;
  const snapshot = snapshotByIdOrName(metadata.snapshots, idOrName);
  if (!snapshot) throw noSuchSnapshot(image, idOrName);
  const { clusterSize, geometry } = metadata;
  const snapshotL1 = await readL1Table(host.device, snapshot.l1TableOffset, snapshot.l1Size, clusterSize, `L1 table of snapshot ${snapshot.id}`);
  const bytesPerL2 = clusterSize * geometry.l2Entries;
  await ensureL1Entries(writer, host, Math.max(snapshot.l1Size, Math.ceil(snapshot.diskSize / bytesPerL2)));
  // References first: from here on the snapshot's clusters are shared, and its L1 copy says so (no COPIED).
  await updateSnapshotRefcount(host, { l1: snapshotL1, offset: snapshot.l1TableOffset, writeBack: true }, 1);
  const { header } = metadata;
  const activeBytes = new Uint8Array(header.l1Size * 8);
  activeBytes.set(new Uint8Array(snapshotL1.buffer, snapshotL1.byteOffset, snapshotL1.byteLength));
  await host.device.write!(header.l1TableOffset, activeBytes);
  await host.device.flush?.();
  const oldL1 = metadata.l1;
  await updateSnapshotRefcount(host, { l1: oldL1, offset: header.l1TableOffset, writeBack: false }, -1);
  const activeL1 = new DataView(activeBytes.buffer);
  metadata.l1 = activeL1;
  host.setMap(new ClusterMap(geometry, activeL1, header.l1TableOffset, host.l2Cache));
  await updateSnapshotRefcount(host, { l1: activeL1, offset: header.l1TableOffset, writeBack: true }, 0);
  if (snapshot.diskSize !== image.size) {
    header.size = snapshot.diskSize;
    await writer.writeHeader();
    host.setSize(snapshot.diskSize);
  }
  await host.device.flush?.();
  return snapshot;
}
