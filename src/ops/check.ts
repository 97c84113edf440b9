/** `check`: consistency check and repair of an image (qemu-img check). */

import { borrowed } from '../core/borrowed.js';
import type { BlockDevice } from '../core/device.js';
import type { ImageHost } from '../core/image.js';
import { UnsupportedFeatureError } from '../core/errors.js';
import { checkQcow2, type Qcow2CheckResult, type RepairMode } from '../../formats/qcow2/check.js';

export type { RepairMode };
import { openQcow2 } from '../../formats/qcow2/index.js';
import { readMetadata } from '../../formats/qcow2/metadata.js';
import { rewriteSnapshotTable } from '../../formats/qcow2/snapshot-table-write.js';

/** The outcome, with qemu-img check's fields. */
export interface CheckReport extends Qcow2CheckResult {
  format: string;
  /** Lines of the repairing pass (before the double check), when a repair ran. */
  repairMessages: string[];
  /** True when a repair changed something and the image was checked again. */
  repaired: boolean;
}

/** Thrown for formats that have no consistency check (qemu-img exits 63). */
export class NoCheckError extends UnsupportedFeatureError {
  constructor(format: string) {
    super('This image format does not support checks', { format });
  }
}

/**
 * Checks the image on `device` (format already known). With a repair mode the
 * device must be writable; after a repair that fixed anything the image is
 * checked again and the fixed counts are carried over, as qemu-img does.
 */
export async function checkImage(device: BlockDevice, format: string, mode: RepairMode = 'none'): Promise<CheckReport> {
  if (format !== 'qcow2') throw new NoCheckError(format);
  const first = await checkQcow2(device, await readMetadata(device, { forCheck: true }), mode);
  if (mode === 'all' && first.snapshotTableCorruptions > 0 && first.checkErrors === 0) {
    // qemu's words when the old table's clusters hold no reference; the repair goes on.
    if (!(await repairSnapshotTable(device))) first.messages.push('qcow2_free_clusters failed: Invalid argument');
    first.corruptionsFixed += first.snapshotTableCorruptions;
    first.corruptions -= first.snapshotTableCorruptions;
  }
  // A check that stopped short is not checked again: qemu-img reports only its failure.
  const settled = first.failure !== undefined || (first.leaksFixed === 0 && first.corruptionsFixed === 0);
  if (settled) return { ...first, format, repairMessages: [], repaired: false };
  await device.flush?.();
  const second = await checkQcow2(device, await readMetadata(device, { forCheck: true }), 'none');
  return {
    ...second,
    leaksFixed: first.leaksFixed,
    corruptionsFixed: first.corruptionsFixed,
    format,
    repairMessages: first.messages,
    repaired: true,
  };
}

/**
 * Writes the snapshot table again (qemu-img check -r all does, after its
 * refcount repairs, when entries lack extra data), through a writer opened on
 * the image as it now is. Nothing is decoded and no backing file is opened.
 */
async function repairSnapshotTable(device: BlockDevice): Promise<boolean> {
  await device.flush?.();
  const image = await openQcow2(borrowed(device), { host: WRITER_ONLY_HOST, writable: true, noBacking: true });
  try {
    return await rewriteSnapshotTable(image);
  } finally {
    await image.close();
  }
}

/** A host for a writer that touches no compressed data and no other file. */
const WRITER_ONLY_HOST: ImageHost = {
  codecs: {
    inflateRaw: () => Promise.reject(new UnsupportedFeatureError('no decompression while repairing')),
    zstdDecompress: () => Promise.reject(new UnsupportedFeatureError('no decompression while repairing')),
  },
  warn: () => {},
};

/** qemu-img check's exit status: 0 clean, 2 corruptions, 3 leaks only, 1 check errors. */
export function checkExitStatus(report: Qcow2CheckResult): number {
  if (report.checkErrors > 0) return 1;
  if (report.corruptions > 0) return 2;
  if (report.leaks > 0) return 3;
  return 0;
}
