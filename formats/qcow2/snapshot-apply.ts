/**
 * Reverting to an internal snapshot (qemu's qcow2_snapshot_goto). Every
 * cluster the snapshot reaches gets one more reference first; then the new
 * active L1 table (a copy of the snapshot's) is written to new clusters, and
 * one header write switches the L1 table and the virtual size together; only
 * then do the clusters of the old active state lose their references (freed
 * at zero), and COPIED flags are rebuilt. Unlike qemu, which overwrites the
 * active L1 in place, a crash at any point leaves either the old state or the
 * snapshot's, with at worst leaked clusters.
 */

import { ClusterMap } from './clusters.js';
import type { Qcow2Image } from './image.js';
import { MAX_L1_BYTES } from './limits.js';
import { readL1Table } from './metadata.js';
import { noSuchSnapshot, snapshotAccess, snapshotByIdOrName } from './snapshot-access.js';
import { preflightSnapshotRefcount, updateSnapshotRefcount } from './snapshot-refcount.js';
import type { Qcow2Snapshot } from './snapshots.js';
import type { Qcow2Writer, WriterHost } from './write.js';
import { UnsupportedFeatureError, UsageError } from '../../src/core/errors.js';

/** Writes `l1` (padded to whole clusters) to newly allocated clusters; returns their offset. */
async function writeNewL1(host: WriterHost, l1: Uint8Array): Promise<number> {
  const { clusterSize } = host.metadata;
  const clusters = Math.ceil(l1.length / clusterSize);
  if (clusters === 0) return 0;
  const offset = await host.allocator.allocateRun(clusters);
  const padded = new Uint8Array(clusters * clusterSize);
  padded.set(l1);
  await host.device.write!(offset, padded);
  await host.device.flush?.();
  return offset;
}

/** Reverts `image` (open writable) to the snapshot `idOrName` (an id first, then the first name); returns it. */
export async function applySnapshot(image: Qcow2Image, idOrName: string): Promise<Qcow2Snapshot> {
  const { writer, host } = snapshotAccess(image, `apply snapshot '${idOrName}'`);
  return writer.serialized(() => applySnapshotNow(writer, host, image, idOrName));
}

async function applySnapshotNow(writer: Qcow2Writer, host: WriterHost, image: Qcow2Image, idOrName: string): Promise<Qcow2Snapshot> {
  const { metadata } = host;
  // As qemu, before the name is looked up: a persistent bitmap (enabled or not) would describe a disk the image no longer has.
  if (metadata.bitmaps.length > 0) throw new UsageError(`Could not apply snapshot '${idOrName}': Device has active dirty bitmaps`);
  const snapshot = snapshotByIdOrName(metadata.snapshots, idOrName);
  if (!snapshot) throw noSuchSnapshot(image, idOrName);
  const { clusterSize, geometry, header } = metadata;
  const snapshotL1 = await readL1Table(host.device, snapshot.l1TableOffset, snapshot.l1Size, clusterSize, `L1 table of snapshot ${snapshot.id}`);
  // The active table keeps at least its length (qemu pads a shorter snapshot table with zeros) and covers the disk.
  const entries = Math.max(header.l1Size, snapshot.l1Size, Math.ceil(snapshot.diskSize / (clusterSize * geometry.l2Entries)));
  if (entries * 8 > MAX_L1_BYTES) throw new UnsupportedFeatureError(`snapshot ${snapshot.id} needs an L1 table over ${MAX_L1_BYTES} bytes`);
  await preflightSnapshotRefcount(host, snapshotL1, snapshot.l1TableOffset, 1);
  // References first: from here on the snapshot's clusters are shared, and its L1 copy says so (no COPIED).
  await updateSnapshotRefcount(host, { l1: snapshotL1, offset: snapshot.l1TableOffset, writeBack: true }, 1);
  const activeBytes = new Uint8Array(entries * 8);
  activeBytes.set(new Uint8Array(snapshotL1.buffer, snapshotL1.byteOffset, snapshotL1.byteLength));
  const newOffset = await writeNewL1(host, activeBytes);
  const old = { l1: metadata.l1, offset: header.l1TableOffset, entries: header.l1Size };
  header.l1TableOffset = newOffset;
  header.l1Size = entries;
  header.size = snapshot.diskSize;
  await writer.writeHeader();
  await host.device.flush?.();
  const activeL1 = new DataView(activeBytes.buffer);
  metadata.l1 = activeL1;
  host.setMap(new ClusterMap(geometry, activeL1, newOffset, host.l2Cache));
  host.setSize(snapshot.diskSize);
  await updateSnapshotRefcount(host, { l1: old.l1, offset: old.offset, writeBack: false }, -1);
  if (old.entries > 0) await host.allocator.release(old.offset, Math.ceil((old.entries * 8) / clusterSize) * clusterSize);
  await updateSnapshotRefcount(host, { l1: activeL1, offset: newOffset, writeBack: true }, 0);
  return snapshot;
}
