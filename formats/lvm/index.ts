/** LVM2: physical volume labels, metadata text, and where logical volumes lie. */

import type { BlockDevice } from '../../src/core/device.js';
import { PlatterError } from '../../src/core/errors.js';
import { parseConfig } from './config.js';
import { findPvLabel, formatPvUuid, readMetadataText, type PvLabel } from './label.js';
import { LABEL_SCAN_SECTORS, LABEL_SIZE } from './limits.js';
import { volumeGroupOf, type VolumeGroup } from './metadata.js';

export { parseConfig, type ConfigSection, type ConfigValue } from './config.js';
export { findPvLabel, formatPvUuid, readMetadataText, type PvLabel } from './label.js';
export { volumeGroupOf, lvPlacement, type VolumeGroup, type LogicalVolume, type LvSegment, type LvPlacement } from './metadata.js';

/** A physical volume with the volume group its metadata describes. */
export interface PhysicalVolume {
  label: PvLabel;
  /** The PV UUID, dashed. */
  uuid: string;
  /**
   * The newest copy (highest seqno) among the PV's metadata areas; undefined
   * when it carries none (its VG is described on another PV).
   */
  volumeGroup?: VolumeGroup;
  /** Metadata areas that could not be read while another could. */
  warnings: string[];
}

/**
 * Reads the PV on `device` (a partition or a whole disk); undefined when there
 * is no PV label. Every metadata area is read, as lvm2 does: a damaged or stale
 * copy loses to a good, newer one; when none can be read the first error is thrown.
 */
export async function readPhysicalVolume(device: BlockDevice): Promise<PhysicalVolume | undefined> {
  const head = await device.read(0, Math.min(device.size, LABEL_SCAN_SECTORS * LABEL_SIZE));
  const label = findPvLabel(head);
  if (!label) return undefined;
  const pv: PhysicalVolume = { label, uuid: formatPvUuid(label.uuid), warnings: [] };
  const failures: PlatterError[] = [];
  for (const area of label.metadataAreas) {
    try {
      const text = await readMetadataText(device, area);
      if (text === undefined) continue;
      const vg = volumeGroupOf(parseConfig(text, area.offset));
      if (!pv.volumeGroup || vg.seqno > pv.volumeGroup.seqno) pv.volumeGroup = vg;
    } catch (error) {
      if (!(error instanceof PlatterError)) throw error;
      failures.push(error);
    }
  }
  if (!pv.volumeGroup && failures.length > 0) throw failures[0];
  for (const failure of failures) pv.warnings.push(`a copy of the LVM metadata is unreadable (${failure.message}); another copy is used`);
  return pv;
}
