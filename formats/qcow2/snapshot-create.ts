/**
 * Creating an internal snapshot (qemu's qcow2_snapshot_create). The order
 * keeps a crash harmless: the L1 copy is written to new clusters, then every
 * cluster the active L1 reaches gets one more reference (and loses COPIED),
 * then the new snapshot table is written elsewhere, and only then does one
 * header write make the snapshot exist. A crash before that loses the new
 * snapshot and leaks clusters, nothing more.
 */

import type { Qcow2Image } from './image.js';
import { snapshotAccess } from './snapshot-access.js';
import { preflightSnapshotRefcount, updateSnapshotRefcount } from './snapshot-refcount.js';
import { writeSnapshotTable } from './snapshot-table-write.js';
import type { Qcow2Snapshot } from './snapshots.js';
import type { Qcow2Writer, WriterHost } from './write.js';

/** What a new snapshot records besides its name. */
export interface CreateSnapshotOptions {
  /** Wall-clock time of the snapshot (default: now). */
  date?: { sec: number; nsec: number };
}

/** qemu's find_new_snapshot_id: one more than the largest numeric id (non-numeric ids count as 0). */
export function nextSnapshotId(snapshots: readonly Qcow2Snapshot[]): string {
  let max = 0;
  for (const snapshot of snapshots) {
    const numeric = /^\d+/.exec(snapshot.id);
    if (numeric) max = Math.max(max, Number(numeric[0]));
  }
  return String(max + 1);
}

/** The current time as qemu-img records it (microsecond resolution). */
function now(): { sec: number; nsec: number } {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1_000_000 };
}

/** Writes a copy of the active L1 table to new clusters; returns its offset (0 for an empty table). */
async function copyActiveL1(host: WriterHost): Promise<number> {
  const { l1, clusterSize } = host.metadata;
  const bytes = new Uint8Array(l1.buffer, l1.byteOffset, l1.byteLength).slice();
  if (bytes.length === 0) return 0;
  const clusters = Math.ceil(bytes.length / clusterSize);
  const offset = await host.allocator.allocateRun(clusters);
  await host.device.write!(offset, bytes);
  return offset;
}

/** Creates the snapshot `name` of the current state of `image` (open writable); returns its table entry. */
export async function createSnapshot(image: Qcow2Image, name: string, options: CreateSnapshotOptions = {}): Promise<Qcow2Snapshot> {
  const { writer, host } = snapshotAccess(image, `create snapshot '${name}'`);
  return writer.serialized(() => createSnapshotNow(writer, host, image, name, options));
}

async function createSnapshotNow(writer: Qcow2Writer, host: WriterHost, image: Qcow2Image, name: string, options: CreateSnapshotOptions): Promise<Qcow2Snapshot> {
  const { header, snapshots } = host.metadata;
  const date = options.date ?? now();
  await preflightSnapshotRefcount(host, host.metadata.l1, header.l1TableOffset, 1);
  const l1TableOffset = await copyActiveL1(host);
  const snapshot: Qcow2Snapshot = {
    l1TableOffset,
    l1Size: header.l1Size,
    id: nextSnapshotId(snapshots),
    name,
    dateSec: date.sec,
    dateNsec: date.nsec,
    vmClockNsec: 0n,
    vmStateSize: 0,
    diskSize: image.size,
    // qemu-img records an instruction count of 0 (no guest ran).
    icount: 0n,
    extraData: new Uint8Array(0),
  };
  await updateSnapshotRefcount(host, { l1: host.metadata.l1, offset: header.l1TableOffset, writeBack: true }, 1);
  await writeSnapshotTable(host, [...snapshots, snapshot], () => writer.writeHeader());
  return host.metadata.snapshots[host.metadata.snapshots.length - 1]!;
}
