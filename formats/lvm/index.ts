/** LVM2: physical volume labels, metadata text, and where logical volumes lie. */

import type { BlockDevice } from '../../src/core/device.js';
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
  /** Undefined when the PV carries no metadata area (its VG is described on another PV). */
  volumeGroup?: VolumeGroup;
}

/** Reads the PV on `device` (a partition or a whole disk); undefined when there is no PV label. */
export async function readPhysicalVolume(device: BlockDevice): Promise<PhysicalVolume | undefined> {
  const head = await device.read(0, Math.min(device.size, LABEL_SCAN_SECTORS * LABEL_SIZE));
  const label = findPvLabel(head);
  if (!label) return undefined;
  const pv: PhysicalVolume = { label, uuid: formatPvUuid(label.uuid) };
  const area = label.metadataAreas[0];
  if (area) {
    const text = await readMetadataText(device, area);
    pv.volumeGroup = volumeGroupOf(parseConfig(text, area.offset));
  }
  return pv;
}
