/**
 * Writing the internal snapshot table (qemu's qcow2_write_snapshots): the new
 * table goes to newly allocated clusters, then one header write switches
 * nb_snapshots and snapshots_offset together, then the old table is freed. A
 * crash before the header write leaves the old table in force (and a leak).
 */

import { alignUp } from '../../src/core/bytes.js';
import { LimitExceededError } from '../../src/core/errors.js';
import { MAX_SNAPSHOTS, MAX_SNAPSHOT_TABLE_BYTES } from './limits.js';
import type { Qcow2Image } from './image.js';
import { snapshotAccess } from './snapshot-access.js';
import { SnapshotExtraData, SnapshotHeader, snapshotTableBytes, storedId, storedName, type Qcow2Snapshot } from './snapshots.js';
import type { WriterHost } from './write.js';

/** icount of all ones: "not recorded". */
const NO_ICOUNT = 0xffffffffffffffffn;
const TWO_POW_32 = 0x100000000;

/**
 * The extra data of an entry as qemu writes it: the three known fields from
 * the decoded values (qemu upgrades old, shorter extra data this way), then
 * any bytes past them that a newer writer added, unchanged.
 */
function encodeExtraData(snapshot: Qcow2Snapshot): Uint8Array {
  const known = SnapshotExtraData.encode({
    vmStateSizeLarge: BigInt(snapshot.vmStateSize),
    diskSize: BigInt(snapshot.diskSize),
    icount: snapshot.icount ?? NO_ICOUNT,
  });
  const unknown = snapshot.extraData.subarray(Math.min(snapshot.extraData.length, SnapshotExtraData.size));
  const out = new Uint8Array(known.length + unknown.length);
  out.set(known);
  out.set(unknown, known.length);
  return out;
}

/** Encodes one entry (fixed part, extra data, id, name), not yet padded. */
function encodeEntry(snapshot: Qcow2Snapshot): Uint8Array {
  const id = storedId(snapshot);
  const name = storedName(snapshot);
  if (id.length > 0xffff || name.length > 0xffff) throw new LimitExceededError(`snapshot id or name longer than 65535 bytes`);
  const extra = encodeExtraData(snapshot);
  const fixed = SnapshotHeader.encode({
    l1TableOffset: BigInt(snapshot.l1TableOffset),
    l1Size: snapshot.l1Size,
    idSize: id.length,
    nameSize: name.length,
    dateSec: snapshot.dateSec,
    dateNsec: snapshot.dateNsec,
    vmClockNsec: snapshot.vmClockNsec,
    // The 32-bit field keeps the low bits, as qemu stores it; the full size is in the extra data.
    vmStateSize: snapshot.vmStateSize % TWO_POW_32,
    extraDataSize: extra.length,
  });
  const out = new Uint8Array(fixed.length + extra.length + id.length + name.length);
  out.set(fixed);
  out.set(extra, fixed.length);
  out.set(id, fixed.length + extra.length);
  out.set(name, fixed.length + extra.length + id.length);
  return out;
}

/** Encodes the whole table: entries, each starting on an 8-byte boundary. */
export function encodeSnapshotTable(snapshots: readonly Qcow2Snapshot[]): Uint8Array {
  if (snapshots.length > MAX_SNAPSHOTS) throw new LimitExceededError(`too many snapshots (at most ${MAX_SNAPSHOTS})`);
  const entries = snapshots.map(encodeEntry);
  let size = 0;
  // Each entry starts 8-aligned; the table ends where its last entry does (qemu's snapshots_size).
  for (const entry of entries) size = alignUp(size, 8) + entry.length;
  if (size > MAX_SNAPSHOT_TABLE_BYTES) throw new LimitExceededError(`snapshot table would exceed ${MAX_SNAPSHOT_TABLE_BYTES} bytes`);
  const table = new Uint8Array(size);
  let offset = 0;
  for (const entry of entries) {
    offset = alignUp(offset, 8);
    table.set(entry, offset);
    offset += entry.length;
  }
  return table;
}

/**
 * Replaces the image's snapshot table with `snapshots` (in this order) and
 * updates the in-memory list. Resolves false when the old table could not be
 * freed because some of its clusters hold no reference (a table past the end
 * of the file, or refcounts already wrong): the new table is in force either
 * way, and qemu carries on too, after saying "qcow2_free_clusters failed".
 */
export async function writeSnapshotTable(host: WriterHost, list: readonly Qcow2Snapshot[], writeHeader: () => Promise<void>): Promise<boolean> {
  const { header, clusterSize } = host.metadata;
  // The in-memory entries take the extra data as written, so the table's size is known when it is freed.
  const snapshots = list.map((snapshot) => ({ ...snapshot, extraData: encodeExtraData(snapshot) }));
  const table = encodeSnapshotTable(snapshots);
  const clusters = Math.ceil(table.length / clusterSize);
  let offset = 0;
  if (clusters > 0) {
    offset = await host.allocator.allocateRun(clusters);
    // Only the table itself, as qemu writes it: a table at the end leaves the file ending there.
    await host.device.write!(offset, table);
  }
  await host.device.flush?.();
  const old = { offset: header.snapshotsOffset, bytes: snapshotTableBytes(host.metadata.snapshots) };
  header.snapshotsOffset = offset;
  header.nbSnapshots = snapshots.length;
  await writeHeader();
  await host.device.flush?.();
  host.metadata.snapshots = snapshots;
  return old.offset === 0 || (await host.allocator.releaseIfReferenced(old.offset, old.bytes));
}

/**
 * Writes the snapshot table of `image` again, each entry with the extra data
 * qemu writes (check -r all's repair of version 3 entries that lack it).
 * Resolves false when the old table could not be freed (see writeSnapshotTable).
 */
export async function rewriteSnapshotTable(image: Qcow2Image): Promise<boolean> {
  const { writer, host } = snapshotAccess(image, 'rewrite the snapshot table');
  return writer.serialized(() => writeSnapshotTable(host, host.metadata.snapshots, () => writer.writeHeader()));
}
