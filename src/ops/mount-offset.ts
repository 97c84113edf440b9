/**
 * `mount-offset`: where each partition and each contiguous LVM logical volume
 * starts and ends in an image's virtual disk — the `offset=` and `sizelimit=`
 * that `mount -o loop` and `losetup` need.
 */

import { SliceDevice, type BlockDevice } from '../core/device.js';
import { NotFoundError, PlatterError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { probeFilesystem, type FilesystemInfo } from '../../formats/fs-probe/index.js';
import { lvPlacement, readPhysicalVolume } from '../../formats/lvm/index.js';
import { isExtendedType } from '../../formats/partition-table/model.js';
import { readPartitionTable } from '../engine/partition-table.js';

/** One thing that can be mounted (or, for a scattered LV, cannot be by offset). */
export interface MountTarget {
  /** `5` for a partition, `vg0/home` for a logical volume, `disk` for the whole disk. */
  name: string;
  kind: 'partition' | 'lv' | 'disk';
  /** Partition number; for an LV, the partition holding its PV. */
  partition?: number;
  /** GPT partition name. */
  partlabel?: string;
  /** Byte offset inside the virtual disk; absent when not contiguous. */
  offset?: number;
  /** Byte length; absent when not contiguous. */
  sizelimit?: number;
  contiguous: boolean;
  /** Why there is no single offset. */
  reason?: string;
  filesystem?: FilesystemInfo;
}

/** The answer for one image. */
export interface MountOffsets {
  format: string;
  targets: MountTarget[];
  warnings: string[];
}

/**
 * Probes what sits at [offset, offset+size) of the disk. A read that fails there
 * (a corrupt cluster of a qcow2 image) becomes a warning: the other partitions still count.
 */
export async function probeRange(image: Image, offset: number, size: number, warnings: string[]): Promise<FilesystemInfo | undefined> {
  try {
    return await probeFilesystem(new SliceDevice(image, offset, size));
  } catch (error) {
    if (!(error instanceof PlatterError)) throw error;
    warnings.push(`cannot probe the contents at byte ${offset}: ${error.message}`);
    return undefined;
  }
}

/** The logical volumes of the PV occupying [base, base+size) of the disk. */
async function lvTargets(image: Image, base: number, size: number, partition: number | undefined, warnings: string[]): Promise<MountTarget[]> {
  const device: BlockDevice = new SliceDevice(image, base, size);
  let pv;
  try {
    pv = await readPhysicalVolume(device);
  } catch (error) {
    warnings.push(`LVM metadata at byte ${base}: ${error instanceof Error ? error.message : String(error)}`);
    return [];
  }
  const vg = pv?.volumeGroup;
  if (!pv || !vg) return [];
  const targets: MountTarget[] = [];
  for (const lv of vg.logicalVolumes) {
    const target: MountTarget = { name: `${vg.name}/${lv.name}`, kind: 'lv', contiguous: false };
    if (partition !== undefined) target.partition = partition;
    const placement = lvPlacement(vg, lv);
    if (!placement.contiguous) {
      target.reason = placement.reason;
    } else if (placement.pv !== pv.uuid) {
      target.reason = `it lies on another physical volume (${placement.pv})`;
    } else if (placement.offset > size || placement.size > size - placement.offset) {
      target.reason = 'its extents run past the end of the physical volume';
    } else {
      Object.assign(target, { contiguous: true, offset: base + placement.offset, sizelimit: placement.size });
      const found = await probeRange(image, base + placement.offset, placement.size, warnings);
      if (found) target.filesystem = found;
    }
    targets.push(target);
  }
  return targets;
}

/** Every partition and logical volume of `image`, with offsets. */
export async function mountOffsets(image: Image): Promise<MountOffsets> {
  const table = await readPartitionTable(image);
  const warnings = [...(table?.warnings ?? [])];
  const targets: MountTarget[] = [];
  if (!table) {
    const found = await probeRange(image, 0, image.size, warnings);
    if (found) targets.push({ name: 'disk', kind: 'disk', offset: 0, sizelimit: found.size ?? image.size, contiguous: true, filesystem: found });
    if (found?.type === 'LVM2_member') targets.push(...(await lvTargets(image, 0, image.size, undefined, warnings)));
    return { format: image.format, targets, warnings };
  }
  for (const partition of table.partitions) {
    if (table.label === 'dos' && isExtendedType(partition.type)) continue;
    const offset = partition.start * table.sectorSize;
    const sizelimit = partition.size * table.sectorSize;
    const target: MountTarget = { name: String(partition.number), kind: 'partition', partition: partition.number, offset, sizelimit, contiguous: true };
    if (partition.name !== undefined) target.partlabel = partition.name;
    const found = await probeRange(image, offset, sizelimit, warnings);
    if (found) target.filesystem = found;
    targets.push(target);
    if (found?.type === 'LVM2_member') targets.push(...(await lvTargets(image, offset, sizelimit, partition.number, warnings)));
  }
  return { format: image.format, targets, warnings };
}

/** Picks the targets WHICH names: a partition number, LABEL=, UUID=, PARTLABEL= or VG/LV. */
export function selectTarget(offsets: MountOffsets, which: string): MountTarget {
  const [key, value] = which.includes('=') ? [which.slice(0, which.indexOf('=')).toUpperCase(), which.slice(which.indexOf('=') + 1)] : ['', which];
  const match = offsets.targets.find((target) => {
    switch (key) {
      case 'LABEL':
        return target.filesystem?.label === value;
      case 'UUID':
        return target.filesystem?.uuid?.toLowerCase() === value.toLowerCase();
      case 'PARTLABEL':
        return target.partlabel === value;
      default:
        return /^[0-9]+$/.test(value) ? target.kind === 'partition' && target.partition === Number(value) : target.name === value;
    }
  });
  if (!match) throw new NotFoundError(`no partition or logical volume matches '${which}'`, { which });
  return match;
}
