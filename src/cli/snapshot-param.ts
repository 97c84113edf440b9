/** qemu-img's SNAPSHOT_PARAM (`-l` of convert and measure): an internal snapshot to read instead of the disk. */

import { UnsupportedFeatureError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { Qcow2Image, openSnapshotView } from '../../formats/qcow2/index.js';

/** What `-l` says, for the help text of every command that takes it. */
export const SNAPSHOT_PARAM_HELP = 'an internal snapshot of a qcow2 source (ID or NAME, or snapshot.id=ID / snapshot.name=NAME)';

/**
 * The read-only view of an internal snapshot. qemu-img accepts a bare ID or
 * name, or `snapshot.id=` / `snapshot.name=`; a bare word is tried as an ID first.
 */
export async function snapshotOf(image: Image, spec: string): Promise<Image> {
  if (!(image instanceof Qcow2Image)) {
    throw new UnsupportedFeatureError(`Failed to load snapshot: ${image.format} images have no internal snapshots`).inFile(image.name);
  }
  const match = /^snapshot\.(id|name)=(.*)$/.exec(spec);
  return openSnapshotView(image, match ? match[2]! : spec);
}
