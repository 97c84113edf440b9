/** `snapshot`: list, create, apply and delete internal snapshots (qemu-img snapshot). */

import { PlatterError, UnsupportedFeatureError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { Qcow2Image } from '../../formats/qcow2/image.js';
import { snapshotInfo, type Qcow2Snapshot } from '../../formats/qcow2/snapshots.js';
import { createSnapshot, type CreateSnapshotOptions } from '../../formats/qcow2/snapshot-create.js';
import { applySnapshot } from '../../formats/qcow2/snapshot-apply.js';
import { deleteSnapshot } from '../../formats/qcow2/snapshot-delete.js';
import { snapshotJson, type SnapshotJson } from './info.js';

export type { SnapshotJson };

/** What `snapshot` does. */
export type SnapshotAction =
  | { kind: 'list' }
  | { kind: 'create'; name: string; date?: CreateSnapshotOptions['date'] }
  | { kind: 'apply'; snapshot: string }
  | { kind: 'delete'; snapshot: string };

/** The outcome: the snapshot list (for 'list'), or the entry created, applied or deleted. */
export interface SnapshotResult {
  snapshots?: SnapshotJson[];
  snapshot?: SnapshotJson;
}

/** The snapshots of an image in qemu-img's JSON shape (none for formats without internal snapshots). */
export function listSnapshots(image: Image): SnapshotJson[] {
  if (!(image instanceof Qcow2Image)) return [];
  return image.metadata.snapshots.map((snapshot) => snapshotJson(snapshotInfo(snapshot)));
}

/**
 * Runs one snapshot action. Changes need a qcow2 image opened writable
 * without an external data file; apply goes by id then name, delete by name
 * then id, as qemu-img does.
 */
export async function snapshot(image: Image, action: SnapshotAction): Promise<SnapshotResult> {
  if (action.kind === 'list') return { snapshots: listSnapshots(image) };
  if (!(image instanceof Qcow2Image)) {
    throw new UnsupportedFeatureError(`${image.format} images have no internal snapshots`, { format: image.format }).inFile(image.name);
  }
  try {
    const changed = await change(image, action);
    await image.flush();
    return { snapshot: snapshotJson(snapshotInfo(changed)) };
  } catch (error) {
    if (error instanceof PlatterError) error.inFile(image.name);
    throw error;
  }
}

function change(image: Qcow2Image, action: Exclude<SnapshotAction, { kind: 'list' }>): Promise<Qcow2Snapshot> {
  if (action.kind === 'create') return createSnapshot(image, action.name, action.date ? { date: action.date } : {});
  if (action.kind === 'apply') return applySnapshot(image, action.snapshot);
  return deleteSnapshot(image, action.snapshot);
}
