/** qemu-img's SNAPSHOT_PARAM (`-l` of convert and measure): an internal snapshot to read instead of the disk. */

import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { parseOptionString } from '../core/options.js';
import { Qcow2Image, openSnapshotView, type SnapshotRef } from '../../formats/qcow2/index.js';

/** What `-l` says, for the help text of every command that takes it. */
export const SNAPSHOT_PARAM_HELP = 'an internal snapshot of a qcow2 source (ID or NAME, or snapshot.id=ID and/or snapshot.name=NAME, comma-separated: both must match)';

/**
 * The read-only view of an internal snapshot. qemu-img accepts a bare ID or
 * name (an ID first), or `snapshot.id=ID`, `snapshot.name=NAME` or both,
 * comma-separated (both must then match).
 */
export async function snapshotOf(image: Image, spec: string): Promise<Image> {
  if (!(image instanceof Qcow2Image)) {
    throw new UnsupportedFeatureError(`Failed to load snapshot: ${image.format} images have no internal snapshots`).inFile(image.name);
  }
  return openSnapshotView(image, parseSnapshotParam(spec));
}

/** The snapshot `spec` names: text that starts with `snapshot.` is qemu's option list, anything else a bare ID or name. */
export function parseSnapshotParam(spec: string): SnapshotRef {
  if (!spec.startsWith('snapshot.')) return spec;
  const ref: { id?: string; name?: string } = {};
  for (const [key, value] of parseOptionString(spec)) {
    if (key === 'snapshot.id') ref.id = value;
    else if (key === 'snapshot.name') ref.name = value;
    else throw new UsageError(`Invalid parameter '${key}' in snapshot param '${spec}'`);
  }
  return ref;
}
