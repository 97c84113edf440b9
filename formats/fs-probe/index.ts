/**
 * Naming what a partition holds, the way blkid does: type, label, UUID and size
 * from the superblock. Probes read one bounded head of the device.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { probeExt } from './ext.js';
import { probeExfat, probeFat, probeNtfs } from './dos-boot.js';
import { probeBtrfs, probeLuks, probeLvm, probeSquashfs, probeSwap, probeXfs } from './misc.js';
import { probeIso9660 } from './iso9660.js';
import { refine } from './labels.js';
import type { FilesystemInfo, Prober } from './types.js';

export type { FilesystemInfo } from './types.js';

/** Bytes read for probing: through the Btrfs superblock at 64 KiB (and ISO 9660's descriptor at 32 KiB). */
export const FS_PROBE_BYTES = 65536 + 4096;

/**
 * Probers in order. Signatures that sit inside another's boot sector come first:
 * LUKS, LVM and XFS claim sector 0 outright; FAT/NTFS/exFAT before ext (whose
 * superblock at 1024 a FAT reserved area could contain); swap last (its page may hold anything).
 */
const PROBERS: readonly Prober[] = [
  probeLuks,
  probeLvm,
  probeXfs,
  probeSquashfs,
  probeNtfs,
  probeExfat,
  probeFat,
  probeExt,
  probeBtrfs,
  probeIso9660,
  probeSwap,
];

/** Probes bytes already read from the start of a device. */
export function probeFilesystemHead(head: Uint8Array): FilesystemInfo | undefined {
  for (const probe of PROBERS) {
    const found = probe(head);
    if (found) return found;
  }
  return undefined;
}

/** Probes the start of `device`; undefined when no known signature is there. */
export async function probeFilesystem(device: BlockDevice): Promise<FilesystemInfo | undefined> {
  if (device.size < 512) return undefined;
  const head = await device.read(0, Math.min(device.size, FS_PROBE_BYTES));
  const found = probeFilesystemHead(head);
  const refined = found && (await refine(device, head, found));
  return refined ? ordered(refined) : undefined;
}

/** The same facts with keys in one order (type, label, uuid, size), for stable JSON. */
function ordered(info: FilesystemInfo): FilesystemInfo {
  const out: FilesystemInfo = { type: info.type };
  // blkid trims trailing white space from every label it sets.
  const label = info.label?.replace(/[ \t\n\v\f\r]+$/, '');
  if (label) out.label = label;
  if (info.uuid !== undefined) out.uuid = info.uuid;
  if (info.size !== undefined) out.size = info.size;
  return out;
}

/** True for filesystems whose first sector ends in 55AA and could pass for an MBR. */
export function isBootSectorFilesystem(info: FilesystemInfo | undefined): boolean {
  return info !== undefined && (info.type === 'vfat' || info.type === 'ntfs' || info.type === 'exfat');
}
