/**
 * Size changes of a qcow2 image (qemu's qcow2_co_truncate and
 * qcow2_grow_l1_table): growing the L1 table, shrinking with the clusters past
 * the new end freed, the initial size of a new image, and metadata
 * preallocation.
 */

import { writeZeros } from '../../src/core/device.js';
import { UnsupportedFeatureError, UsageError } from '../../src/core/errors.js';
import { ClusterMap } from './clusters.js';
import { COPIED_HI, clusterType, l1EntryL2Offset } from './entries.js';
import { AUTOCLEAR_DATA_FILE_RAW } from './features.js';
import { hasDataFile } from './header.js';
import { MAX_L1_BYTES } from './limits.js';
import { setEntry } from './l2-write.js';
import type { Qcow2Writer } from './write.js';
import type { Qcow2CreateOptions } from './create.js';

/**
 * Internal snapshots allow a size change only in v3 images, as in qemu: a v2
 * entry need not record the disk size it was taken at, so applying it could
 * not restore that size. A v3 entry that lacks it anyway (a table cut short
 * by the end of the file reads as zeroed entries) does not stop a resize:
 * qemu resizes, and such an entry reads as the image's current size.
 */
function checkSnapshotsAllowResize(writer: Qcow2Writer): void {
  if (writer.host.metadata.snapshots.length > 0 && writer.header.version < 3) {
    throw new UnsupportedFeatureError("Can't resize a v2 image which has snapshots");
  }
}

/**
 * Refuses a size change qemu refuses (a size in part sectors, a version 2
 * image with snapshots, preallocating while shrinking), before anything is
 * written: a refused resize leaves the image as it was.
 */
export function checkResize(writer: Qcow2Writer, newSize: number, preallocation: ResizePreallocation): void {
  if (newSize % 512 !== 0) throw new UsageError('The new size must be a multiple of 512');
  checkSnapshotsAllowResize(writer);
  if (newSize < writer.host.size() && preallocation !== 'off') throw new UsageError('Preallocation can only be used for growing images');
}

/** How a size change prepares the space it adds (qemu-img resize --preallocation): the modes of a new image. */
export type ResizePreallocation = Qcow2CreateOptions['preallocation'];

/**
 * Changes the virtual size; shrinking frees the clusters past the new end
 * (those a snapshot still uses stay). Growing with a preallocation other than
 * off gives the new clusters host clusters (metadata, falloc) that `full` also
 * fills with zeros.
 */
export async function resizeQcow2(writer: Qcow2Writer, newSize: number, preallocation: ResizePreallocation = 'off'): Promise<void> {
  checkResize(writer, newSize, preallocation);
  const oldSize = writer.host.size();
  if (newSize < oldSize) {
    await shrink(writer, newSize, oldSize);
    return resizeDataFile(writer, newSize);
  }
  // A raw data file must read as the disk: the qcow2 side maps all of it, new space included, as qemu maps it.
  if (preallocation === 'off' && hasDataFile(writer.header) && (writer.header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n) preallocation = 'metadata';
  // Grown first: no entry written below may map a data file offset past its end, whatever fails after.
  await resizeDataFile(writer, newSize);
  const bytesPerL2 = writer.clusterSize * writer.geometry.l2Entries;
  const entries = Math.ceil(newSize / bytesPerL2);
  if (entries > writer.header.l1Size) await growL1(writer, entries);
  writer.header.size = newSize;
  await writer.writeHeader();
  writer.host.setSize(newSize);
  // The new area must read as zeros: the old tail cluster may hold bytes, a backing file may be longer.
  const zeroEnd = Math.min(newSize, Math.max(Math.ceil(oldSize / writer.clusterSize) * writer.clusterSize, writer.host.backingSize() ?? 0));
  if (zeroEnd > oldSize) await writer.zeroRange(oldSize, zeroEnd - oldSize);
  if (preallocation !== 'off') await preallocateRange(writer, oldSize, newSize, preallocation === 'full');
}

/**
 * An external data file takes the new size too, as qemu truncates it (guest
 * offset = host offset there): grown sparse before anything maps the new
 * space, or cut once the shrink has unmapped what lay past the new end.
 */
async function resizeDataFile(writer: Qcow2Writer, newSize: number): Promise<void> {
  if (!hasDataFile(writer.header)) return;
  const data = writer.host.dataDevice();
  if (!data?.truncate) throw new UnsupportedFeatureError('the external data file cannot be resized');
  await data.truncate(newSize);
}


/** Moves the L1 table to a new, larger place (qemu's qcow2_grow_l1_table with an exact size). */
export async function growL1(writer: Qcow2Writer, entries: number): Promise<void> {
  if (entries * 8 > MAX_L1_BYTES) throw new UnsupportedFeatureError(`the disk is too large: its L1 table would exceed ${MAX_L1_BYTES} bytes`);
  const oldOffset = writer.header.l1TableOffset;
  const oldEntries = writer.header.l1Size;
  const oldL1 = writer.host.metadata.l1;
  const table = new Uint8Array(entries * 8);
  table.set(new Uint8Array(oldL1.buffer, oldL1.byteOffset, oldL1.byteLength));
  const offset = await writer.host.allocator.allocateRun(Math.ceil(table.length / writer.clusterSize));
  await writer.host.device.write!(offset, table);
  await writer.host.device.flush?.();
  writer.header.l1Size = entries;
  writer.header.l1TableOffset = offset;
  await writer.writeHeader();
  const view = new DataView(table.buffer);
  writer.host.metadata.l1 = view;
  writer.host.setMap(new ClusterMap(writer.geometry, view, offset, writer.host.l2Cache));
  if (oldEntries > 0) await writer.host.allocator.release(oldOffset, Math.ceil((oldEntries * 8) / writer.clusterSize) * writer.clusterSize);
}


/** Sets the size of a new, empty image: the L1 table, no zeroing (qemu's create-time truncate). */
export async function setInitialSize(writer: Qcow2Writer, size: number): Promise<void> {
  const entries = Math.ceil(size / (writer.clusterSize * writer.geometry.l2Entries));
  if (entries > writer.header.l1Size) await growL1(writer, entries);
  writer.header.size = size;
  await writer.writeHeader();
  writer.host.setSize(size);
}

/**
 * Preallocation of the guest range [from, to), for a new image (the whole
 * disk) and for the space a resize adds: every unallocated cluster gets a host
 * cluster (qemu's preallocate_co for preallocation=metadata). With the data in
 * this file, the file then reaches the last of them, sparse, or with `zeros`
 * (preallocation=full) zeros written into each; with an external data file
 * (guest offset = host offset) the entries are all there is to do.
 */
export async function preallocateRange(writer: Qcow2Writer, from: number, to: number, zeros: boolean): Promise<void> {
  const added = await allocateRange(writer, from, to);
  if (hasDataFile(writer.header)) return;
  const device = writer.host.device;
  if (zeros) for (const [start, length] of added.runs) await writeZeros(device, start, length);
  // qemu-img check wants no reference past the end of the file.
  if (device.size < added.end) await device.truncate!(added.end);
}

/**
 * Host clusters for the unallocated clusters of [from, to); returns them as
 * runs of adjacent clusters ([start, length] each, in allocation order: few,
 * as new clusters come one after another) and the end of the last one.
 * As qemu's handle_alloc, each span of unallocated clusters within one L2
 * table gets one run of host clusters (the table first, when it is new), and
 * its entries are written at once: a 64 GiB resize of an image with a raw data
 * file took 50 s one entry at a time (qemu-img 0.1 s).
 */
async function allocateRange(writer: Qcow2Writer, from: number, to: number): Promise<{ runs: Array<[number, number]>; end: number }> {
  const { clusterSize } = writer;
  const bytesPerL2 = clusterSize * writer.geometry.l2Entries;
  const dataFile = hasDataFile(writer.header);
  const unallocated = (table: DataView, index: number) => clusterType(table, index, writer.geometry.extendedL2, dataFile) === 'unallocated';
  const runs: Array<[number, number]> = [];
  let end = 0;
  for (let tableStart = from - (from % clusterSize); tableStart < to; ) {
    const tableEnd = Math.min(to, (Math.floor(tableStart / bytesPerL2) + 1) * bytesPerL2);
    const slot = await writer.tables.slot(tableStart, true);
    for (let at = tableStart, index = slot.index; at < tableEnd; ) {
      const limit = Math.ceil((tableEnd - at) / clusterSize);
      let count = 0;
      while (count < limit && unallocated(slot.table, index + count)) count++;
      if (count === 0) {
        at += clusterSize;
        index++;
        continue;
      }
      const hostOffset = dataFile ? at : await writer.host.allocator.allocateRun(count);
      await writer.tables.setDataRun({ ...slot, index }, count, hostOffset);
      const last = runs[runs.length - 1];
      if (last && last[0] + last[1] === hostOffset) last[1] += count * clusterSize;
      else runs.push([hostOffset, count * clusterSize]);
      end = Math.max(end, hostOffset + count * clusterSize);
      at += count * clusterSize;
      index += count;
    }
    tableStart = tableEnd;
  }
  return { runs, end };
}


async function shrink(writer: Qcow2Writer, newSize: number, oldSize: number): Promise<void> {
  const firstFree = Math.ceil(newSize / writer.clusterSize) * writer.clusterSize;
  if (firstFree < oldSize) await writer.discardRange(firstFree, oldSize - firstFree);
  // L2 tables wholly past the new end go too.
  const bytesPerL2 = writer.clusterSize * writer.geometry.l2Entries;
  const l1 = writer.host.metadata.l1;
  for (let l1Index = Math.ceil(newSize / bytesPerL2); l1Index < writer.header.l1Size; l1Index++) {
    const tableOffset = l1EntryL2Offset(l1, l1Index, writer.header.l1TableOffset);
    if (tableOffset === 0) continue;
    setEntry(l1, l1Index * 8, 0, 0);
    writer.host.overlap.l1EntryChanged(tableOffset, 0);
    await writer.host.device.write!(writer.header.l1TableOffset + l1Index * 8, new Uint8Array(8));
    writer.host.l2Cache.invalidate(tableOffset);
    await writer.host.allocator.release(tableOffset, writer.clusterSize);
  }
  writer.header.size = newSize;
  await writer.writeHeader();
  writer.host.setSize(newSize);
  await cutFreedTail(writer);
}

/**
 * As qemu does after a shrink: the file is cut after its last referenced
 * cluster, once the tables that no longer point past it are on disk.
 */
async function cutFreedTail(writer: Qcow2Writer): Promise<void> {
  const { device, allocator } = writer.host;
  const { refcounts } = allocator;
  const end = ((await refcounts.lastReferenced(Math.ceil(device.size / writer.clusterSize))) + 1) * writer.clusterSize;
  if (end >= device.size || !device.truncate) return;
  await device.flush?.();
  await device.truncate(end);
  refcounts.endCluster = end / writer.clusterSize;
}
