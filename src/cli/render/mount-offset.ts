/** `platter mount-offset` text: offsets, size limits and the commands that use them. */

import { targetUse, type MountOffsets, type MountTarget, type TargetUse } from '../../ops/mount-offset.js';
import { filesystemCell } from './partitions.js';
import { bytesAsStored } from '../../../formats/raw/index.js';

/** Shell-quotes a path when it needs it. */
export function shellQuote(text: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`;
}

/** Sets up a loop device over a target's bytes of `file` (shell-quoted) and prints its name. */
function losetupCommand(file: string, offset: number, sizelimit: number): string {
  return `losetup -f --show -o ${offset} --sizelimit ${sizelimit} ${file}`;
}

/** The command that puts a target's bytes of `file` (shell-quoted) to use. */
function useCommand(use: TargetUse, file: string, offset: number, sizelimit: number): string {
  switch (use) {
    case 'mount':
      return `mount -o loop,offset=${offset},sizelimit=${sizelimit} ${file} MOUNTPOINT`;
    // swapon and cryptsetup take a block device, not a file and an offset: the loop device losetup prints.
    case 'swapon':
      return `swapon "$(${losetupCommand(file, offset, sizelimit)})"`;
    case 'cryptsetup':
      return `cryptsetup open "$(${losetupCommand(file, offset, sizelimit)})" NAME`;
  }
}

/** What the text adds after a command that leaves a step to do. */
const NEXT_STEP: Partial<Record<TargetUse, string>> = { cryptsetup: '   # then: mount /dev/mapper/NAME MOUNTPOINT' };

/** How the NBD device of `platter serve` is put to use. */
const NBD_STEP: Record<TargetUse, string> = { mount: 'mount', swapon: 'swapon', cryptsetup: 'cryptsetup open' };

/** What the text says instead of commands, for contents no command uses on their own (see targetUse). */
const NOT_USABLE: Record<string, string> = {
  LVM2_member: 'an LVM physical volume: mount its logical volumes, listed separately',
  swsuspend: 'a hibernation image in a swap area: not mountable, and swapon would discard it',
  jbd: 'an external ext3/ext4 journal: not mountable, used by the filesystem that names it',
};

/** The ready-made commands for one target of a raw image: the one that uses it (`mount`, `swapon` or `cryptsetup`) and `losetup`. */
export type RawCommands = Partial<Record<TargetUse, string>> & { losetup: string };

/** The commands for one target of a raw image; undefined when it has no offset or no command uses what it holds. */
export function rawCommands(image: string, target: MountTarget): RawCommands | undefined {
  const use = targetUse(target.filesystem);
  if (!use || !target.contiguous || target.offset === undefined || target.sizelimit === undefined) return undefined;
  const file = shellQuote(image);
  return { [use]: useCommand(use, file, target.offset, target.sizelimit), losetup: losetupCommand(file, target.offset, target.sizelimit) };
}

function title(target: MountTarget): string {
  const what = target.kind === 'partition' ? `partition ${target.name}` : target.kind === 'lv' ? `logical volume ${target.name}` : 'whole disk';
  const fs = filesystemCell(target.filesystem);
  return fs ? `${what}: ${fs}` : what;
}

function targetLines(image: string, offsets: MountOffsets, target: MountTarget): string[] {
  const lines = [title(target)];
  if (!target.contiguous || target.offset === undefined || target.sizelimit === undefined) return [...lines, `  not mountable by offset: ${target.reason ?? 'not contiguous'}`];
  lines.push(`  offset:    ${target.offset}`, `  sizelimit: ${target.sizelimit}`);
  const use = targetUse(target.filesystem);
  if (!use) return [...lines, `  ${NOT_USABLE[target.filesystem!.type]}`];
  const next = NEXT_STEP[use] ?? '';
  const commands = bytesAsStored(offsets.format) ? rawCommands(image, target) : undefined;
  if (commands) return [...lines, `  ${commands[use]}${next}`, `  ${commands.losetup}`];
  const file = shellQuote(image);
  lines.push(
    `  (offsets inside the ${offsets.format} image's virtual disk; ${use === 'mount' ? 'mount' : 'losetup'} needs raw bytes:)`,
    `  platter convert -O raw ${file} disk.raw && ${useCommand(use, 'disk.raw', target.offset, target.sizelimit)}${next}`,
  );
  if (target.kind === 'partition') lines.push(`  platter serve --partition ${target.name} ${file}   # then: nbd-client, or qemu-nbd -c, and ${NBD_STEP[use]} the NBD device`);
  return lines;
}

/** Renders every target, or a message when there is none. */
export function renderMountOffsets(image: string, offsets: MountOffsets, targets: MountTarget[]): string {
  if (targets.length === 0) return 'No partitions, logical volumes or filesystems found.\n';
  return targets.map((target) => targetLines(image, offsets, target).join('\n')).join('\n\n') + '\n';
}
