/**
 * A read-only view of an internal snapshot (qemu's bdrv_snapshot_load_tmp): the
 * same files and the snapshot's L1 table. Closing the view leaves the image it
 * came from open.
 */

import { NotFoundError } from '../../src/core/errors.js';
import { ClusterMap } from './clusters.js';
import { Qcow2Image } from './image.js';
import { L2Cache } from './l2-cache.js';
import { readL1Table } from './metadata.js';
import { describeSnapshotRef, findSnapshot, type SnapshotRef } from './snapshots.js';

/** How to size a snapshot view. */
export interface SnapshotViewOptions {
  /**
   * 'current' (the default) keeps the image's current virtual size, as
   * `qemu-img convert -l` does (only the L1 table is switched); 'snapshot' uses
   * the disk size recorded with the snapshot, as reverting to it would.
   */
  size?: 'current' | 'snapshot';
}

/** Opens the snapshot `ref` (a bare word is an id first, then a name, as qemu looks it up) of `image`. */
export async function openSnapshotView(
  image: Qcow2Image,
  ref: SnapshotRef,
  options: SnapshotViewOptions = {},
): Promise<Qcow2Image> {
  const { metadata } = image;
  const snapshot = findSnapshot(metadata.snapshots, ref);
  if (!snapshot) {
    throw new NotFoundError(`no snapshot ${describeSnapshotRef(ref)} in ${image.name}`, { snapshot: ref }).inFile(image.name);
  }
  const l1 = await readL1Table(image.device, snapshot.l1TableOffset, snapshot.l1Size, metadata.clusterSize, 'snapshot L1 table');
  const cache = new L2Cache(image.device, metadata.clusterSize);
  const map = new ClusterMap(metadata.geometry, l1, snapshot.l1TableOffset, cache);
  return new Qcow2Image({
    device: image.device,
    dataDevice: image.dataDevice,
    metadata,
    map,
    size: options.size === 'snapshot' ? snapshot.diskSize : image.size,
    backing: image.backing,
    host: image.host,
    ownsFiles: false,
  });
}
