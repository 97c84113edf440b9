/**
 * What every internal snapshot change needs: an image open for writing, with
 * no external data file (qemu refuses internal snapshots there: the data file
 * has no refcounts, so a cluster cannot be shared between two states).
 */

import { NotFoundError, ReadOnlyError, UnsupportedFeatureError } from '../../src/core/errors.js';
import { hasDataFile } from './header.js';
import type { Qcow2Image } from './image.js';
import type { Qcow2Snapshot } from './snapshots.js';
import type { Qcow2Writer, WriterHost } from './write.js';

/** The writer of `image` and what it works on, after the checks every snapshot change makes. */
export function snapshotAccess(image: Qcow2Image, action: string): { writer: Qcow2Writer; host: WriterHost } {
  const writer = image.writer;
  if (!writer) throw new ReadOnlyError(`cannot ${action}: ${image.name} is open read-only`);
  if (hasDataFile(image.metadata.header)) {
    throw new UnsupportedFeatureError(`cannot ${action}: internal snapshots are not supported with an external data file`);
  }
  return { writer, host: writer.host };
}

/** Finds a snapshot by id, then by name (qemu's find_snapshot_by_id_or_name, used when reverting). */
export function snapshotByIdOrName(snapshots: readonly Qcow2Snapshot[], idOrName: string): Qcow2Snapshot | undefined {
  return snapshots.find((s) => s.id === idOrName) ?? snapshots.find((s) => s.name === idOrName);
}

/**
 * Finds a snapshot by name, then by id: `qemu-img snapshot -d` looks names up
 * only (the first match wins); an id is accepted when no name matches.
 */
export function snapshotByNameOrId(snapshots: readonly Qcow2Snapshot[], nameOrId: string): Qcow2Snapshot | undefined {
  return snapshots.find((s) => s.name === nameOrId) ?? snapshots.find((s) => s.id === nameOrId);
}

/** The NotFoundError for a snapshot that is not there. */
export function noSuchSnapshot(image: Qcow2Image, what: string): NotFoundError {
  return new NotFoundError(`snapshot '${what}' not found`, { snapshot: what }).inFile(image.name);
}
