/** `platter mount-offset` text: offsets, size limits and the commands that use them. */

import type { MountOffsets, MountTarget } from '../../ops/mount-offset.js';
import { filesystemCell } from './partitions.js';
import { bytesAsStored } from '../../../formats/raw/index.js';

/** Shell-quotes a path when it needs it. */
export function shellQuote(text: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/** The ready-made commands for one target of a raw image. */
export function rawCommands(image: string, target: MountTarget): { mount: string; losetup: string } | undefined {
  if (!target.contiguous || target.offset === undefined || target.sizelimit === undefined) return undefined;
  const file = shellQuote(image);
  return {
    mount: `mount -o loop,offset=${target.offset},sizelimit=${target.sizelimit} ${file} MOUNTPOINT`,
    losetup: `losetup -f --show -o ${target.offset} --sizelimit ${target.sizelimit} ${file}`,
  };
}

function title(target: MountTarget): string {
  const what = target.kind === 'partition' ? `partition ${target.name}` : target.kind === 'lv' ? `logical volume ${target.name}` : 'whole disk';
  const fs = filesystemCell(target.filesystem);
  return fs ? `${what}: ${fs}` : what;
}

function targetLines(image: string, offsets: MountOffsets, target: MountTarget): string[] {
  const lines = [title(target)];
  if (!target.contiguous) return [...lines, `  not mountable by offset: ${target.reason ?? 'not contiguous'}`];
  lines.push(`  offset:    ${target.offset}`, `  sizelimit: ${target.sizelimit}`);
  if (target.filesystem?.type === 'LVM2_member') return [...lines, '  an LVM physical volume: mount its logical volumes, listed separately'];
  const commands = bytesAsStored(offsets.format) ? rawCommands(image, target) : undefined;
  if (commands) return [...lines, `  ${commands.mount}`, `  ${commands.losetup}`];
  const file = shellQuote(image);
  const serve = target.kind === 'partition' ? `platter serve --partition ${target.name} ${file}` : undefined;
  lines.push(
    `  (offsets inside the ${offsets.format} image's virtual disk; mount needs raw bytes:)`,
    `  platter convert -O raw ${file} disk.raw && mount -o loop,offset=${target.offset},sizelimit=${target.sizelimit} disk.raw MOUNTPOINT`,
  );
  if (serve) lines.push(`  ${serve}   # then: nbd-client, or qemu-nbd -c, and mount the NBD device`);
  return lines;
}

/** Renders every target, or a message when there is none. */
export function renderMountOffsets(image: string, offsets: MountOffsets, targets: MountTarget[]): string {
  if (targets.length === 0) return 'No partitions, logical volumes or filesystems found.\n';
  return targets.map((target) => targetLines(image, offsets, target).join('\n')).join('\n\n') + '\n';
}
