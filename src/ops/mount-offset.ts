/**
 * `mount-offset`: where each partition and each contiguous LVM logical volume
 * starts and ends in an image's virtual disk — the `offset=` and `sizelimit=`
 * that `mount -o loop` and `losetup` need.
 */

import { SliceDevice } from '../core/device.js';
import { NotFoundError, PlatterError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { probeFilesystem, type FilesystemInfo } from '../../formats/fs-probe/index.js';
import { lvPlacement, readPhysicalVolume, type LogicalVolume, type PhysicalVolume, type VolumeGroup } from '../../formats/lvm/index.js';
import { isExtendedType } from '../../formats/partition-table/model.js';
import { partitionDisk, readPartitionTable, type PartitionTable } from '../engine/partition-table.js';

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

/** The command that puts what a target holds to use (see targetUse). */
export type TargetUse = 'mount' | 'swapon' | 'cryptsetup';

/** blkid types no command uses on their own. */
const UNUSABLE_ALONE = new Set(['LVM2_member', 'swsuspend', 'jbd']);

/**
 * What is done with what a target holds, by its blkid type: a filesystem (or
 * what platter does not recognise) is mounted, a swap area enabled with
 * swapon, a LUKS container opened with cryptsetup (it may hold a filesystem,
 * swap or a PV). Undefined where no command applies: an LVM PV (its logical
 * volumes are targets of their own), a hibernation image (swapon would
 * rewrite it as a plain swap area, discarding it) and an external ext3/ext4
 * journal (used by the filesystem that names it).
 */
export function targetUse(filesystem: FilesystemInfo | undefined): TargetUse | undefined {
  if (filesystem?.type === 'swap') return 'swapon';
  if (filesystem?.type === 'crypto_LUKS') return 'cryptsetup';
  return filesystem && UNUSABLE_ALONE.has(filesystem.type) ? undefined : 'mount';
}

/**
 * Probes what sits at [offset, offset+size) of the disk (what of it the image
 * holds). A read that fails there (a corrupt cluster of a qcow2 image) becomes
 * a warning: the other partitions still count.
 */
export async function probeRange(image: Image, offset: number, size: number, warnings: string[]): Promise<FilesystemInfo | undefined> {
  if (offset >= image.size) return undefined;
  try {
    return await probeFilesystem(new SliceDevice(image, offset, Math.min(size, image.size - offset)));
  } catch (error) {
    if (!(error instanceof PlatterError)) throw error;
    warnings.push(`cannot probe the contents at byte ${offset}: ${error.message}`);
    return undefined;
  }
}

/** An LVM physical volume found on the disk: where it lies and what it holds. */
interface FoundPv {
  pv: PhysicalVolume;
  /** Byte offset of the PV (its partition, or 0 for a whole disk) and its length. */
  base: number;
  size: number;
  partition?: number;
}

/** The PV occupying [base, base+size) of the disk, if any; metadata that cannot be read becomes a warning. */
async function findPv(image: Image, base: number, size: number, partition: number | undefined, warnings: string[]): Promise<FoundPv | undefined> {
  let pv: PhysicalVolume | undefined;
  try {
    pv = await readPhysicalVolume(new SliceDevice(image, base, size));
  } catch (error) {
    if (!(error instanceof PlatterError)) throw error;
    warnings.push(`LVM metadata at byte ${base}: ${error.message}`);
    return undefined;
  }
  if (!pv) return undefined;
  warnings.push(...pv.warnings.map((warning) => `LVM metadata at byte ${base}: ${warning}`));
  return { pv, base, size, partition };
}

/**
 * The logical volumes of every volume group whose PVs were found, each listed
 * once, from the newest metadata (highest seqno) any of its PVs holds, keyed by
 * the first PV holding that VG's metadata (they are listed after it). An LV's
 * offset is found on whichever PV of the image holds it. Hidden LVs (the parts
 * of raid, mirror, thin and snapshot volumes, which lvs does not list) are left out.
 */
async function lvTargets(image: Image, pvs: FoundPv[], warnings: string[]): Promise<Map<FoundPv, MountTarget[]>> {
  const groups = new Map<string, { anchor: FoundPv; vg: VolumeGroup }>();
  for (const found of pvs) {
    const vg = found.pv.volumeGroup;
    if (!vg) continue;
    const key = vg.id || vg.name;
    const known = groups.get(key);
    if (!known) groups.set(key, { anchor: found, vg });
    else if (vg.seqno > known.vg.seqno) known.vg = vg;
  }
  const byAnchor = new Map<FoundPv, MountTarget[]>();
  for (const { anchor, vg } of groups.values()) {
    const targets: MountTarget[] = [];
    for (const lv of vg.logicalVolumes.filter((volume) => volume.visible)) targets.push(await lvTarget(image, vg, lv, anchor, pvs, warnings));
    byAnchor.set(anchor, [...(byAnchor.get(anchor) ?? []), ...targets]);
  }
  return byAnchor;
}

/** One LV's target: its offset on the PV of the image that holds it, or why there is none. */
async function lvTarget(image: Image, vg: VolumeGroup, lv: LogicalVolume, anchor: FoundPv, pvs: FoundPv[], warnings: string[]): Promise<MountTarget> {
  const target: MountTarget = { name: `${vg.name}/${lv.name}`, kind: 'lv', contiguous: false };
  const placement = lvPlacement(vg, lv);
  const holder = placement.contiguous ? pvs.find((found) => found.pv.uuid === placement.pv) : undefined;
  const partition = holder ? holder.partition : anchor.partition;
  if (partition !== undefined) target.partition = partition;
  if (!placement.contiguous) {
    target.reason = placement.reason;
  } else if (!holder) {
    target.reason = `it lies on physical volume ${placement.pv}, which is not in this image`;
  } else if (placement.offset > holder.size || placement.size > holder.size - placement.offset) {
    target.reason = 'its extents run past the end of the physical volume';
  } else {
    Object.assign(target, { contiguous: true, offset: holder.base + placement.offset, sizelimit: placement.size });
    const found = await probeRange(image, holder.base + placement.offset, placement.size, warnings);
    if (found) target.filesystem = found;
  }
  return target;
}

/** Every partition and logical volume of `image`, with offsets. */
export async function mountOffsets(image: Image): Promise<MountOffsets> {
  const table = await readPartitionTable(partitionDisk(image));
  const warnings = [...(table?.warnings ?? [])];
  const listed = table ? [...(await hybridIsoTarget(image, table, warnings)), ...(await partitionTargets(image, table, warnings))] : await wholeDiskTargets(image, warnings);
  const pvs = listed.flatMap(({ pv }) => (pv ? [pv] : []));
  const volumes = await lvTargets(image, pvs, warnings);
  // Each volume group's LVs follow the PV they were first found on.
  const targets = listed.flatMap(({ target, pv }) => [target, ...((pv && volumes.get(pv)) ?? [])]);
  return { format: image.format, targets, warnings };
}

/** A partition or whole-disk target, and the PV it holds if any. */
type Listed = { target: MountTarget; pv?: FoundPv };

/**
 * The whole disk as a target for what starts at byte 0: as much as the
 * filesystem says it spans, never past the end of the image (one cut short,
 * or a size field gone wrong).
 */
function wholeDiskTarget(image: Image, found: FilesystemInfo): MountTarget {
  return { name: 'disk', kind: 'disk', offset: 0, sizelimit: Math.min(found.size ?? image.size, image.size), contiguous: true, filesystem: found };
}

/** A disk without a partition table: one entry when a filesystem (or a PV) starts at byte 0. */
async function wholeDiskTargets(image: Image, warnings: string[]): Promise<Listed[]> {
  const found = await probeRange(image, 0, image.size, warnings);
  if (!found) return [];
  return [{ target: wholeDiskTarget(image, found), pv: found.type === 'LVM2_member' ? await findPv(image, 0, image.size, undefined, warnings) : undefined }];
}

/**
 * A hybrid ISO (an ISO 9660 image that also carries a partition table, as
 * Linux install images do) is mounted whole, at offset 0, as blkid reports it
 * beside the table; unless a partition starting at 0 already holds it.
 */
async function hybridIsoTarget(image: Image, table: PartitionTable, warnings: string[]): Promise<Listed[]> {
  if (table.partitions.some((partition) => partition.start === 0)) return [];
  const found = await probeRange(image, 0, image.size, warnings);
  if (found?.type !== 'iso9660') return [];
  return [{ target: wholeDiskTarget(image, found) }];
}

async function partitionTargets(image: Image, table: PartitionTable, warnings: string[]): Promise<Listed[]> {
  const listed: Listed[] = [];
  for (const partition of table.partitions) {
    if (table.label === 'dos' && isExtendedType(partition.type)) continue;
    const offset = partition.start * table.sectorSize;
    const target: MountTarget = { name: String(partition.number), kind: 'partition', partition: partition.number, contiguous: false };
    if (partition.name !== undefined) target.partlabel = partition.name;
    if (offset >= image.size) {
      // A partition table may outlive the end of an image cut short (the table warns of it).
      listed.push({ target: { ...target, reason: 'it starts past the end of the image' } });
      continue;
    }
    // What of the partition the image holds.
    const sizelimit = Math.min(partition.size * table.sectorSize, image.size - offset);
    Object.assign(target, { offset, sizelimit, contiguous: true });
    const found = await probeRange(image, offset, sizelimit, warnings);
    if (found) target.filesystem = found;
    listed.push({ target, pv: found?.type === 'LVM2_member' ? await findPv(image, offset, sizelimit, partition.number, warnings) : undefined });
  }
  return listed;
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
