/** `platter mount-offset`: the offset and size limit to mount a partition or LV of an image. */

import type { CliCommand } from '../command.js';
import { mountOffsets, selectTarget, type MountTarget } from '../../ops/mount-offset.js';
import { withImage } from '../open.js';
import { printJson, printText, withFormat, withOutput } from '../output.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { rawCommands, renderMountOffsets } from '../render/mount-offset.js';
import { warn } from '../report.js';
import { bytesAsStored } from '../../../formats/raw/index.js';

function jsonTarget(image: string, format: string, target: MountTarget): Record<string, unknown> {
  const commands = bytesAsStored(format) ? rawCommands(image, target) : undefined;
  return commands ? { ...target, commands } : { ...target };
}

const command: CliCommand = {
  command: 'mount-offset <image> [which]',
  describe: 'Show the byte offset and size limit of partitions and LVM volumes, for mount -o loop',
  builder: (yargs) =>
    withNamedFilePolicy(withOutput(withFormat(yargs)))
      .positional('image', { type: 'string', describe: 'Image file (raw, qcow2, …)', demandOption: true })
      .positional('which', { type: 'string', describe: 'A partition number, LABEL=…, UUID=…, PARTLABEL=… or VG/LV (default: all)' })
      .example('platter mount-offset disk.img 5', 'Offset and sizelimit of partition 5, with ready mount and losetup commands')
      .example('platter mount-offset disk.img LABEL=root', 'The partition or logical volume whose filesystem is labelled root')
      .example('platter mount-offset --output=json disk.qcow2 vg0/home', 'Where an LVM logical volume lies inside a qcow2 virtual disk')
      .example('platter mount-offset --no-backing upload.qcow2', 'Look at the top image alone, opening no file it names'),
  async handler(args) {
    const path = args.image as string;
    await withImage(path, { format: args.format as string | undefined, ...namedFilePolicyOf(args) }, async (image) => {
      const offsets = await mountOffsets(image);
      for (const warning of offsets.warnings) warn(`${path}: ${warning}`);
      const which = args.which === undefined ? undefined : String(args.which);
      const targets = which === undefined ? offsets.targets : [selectTarget(offsets, which)];
      if (args.output === 'json') {
        const list = targets.map((target) => jsonTarget(path, offsets.format, target));
        printJson({ image: path, format: offsets.format, targets: list });
      } else {
        printText(renderMountOffsets(path, offsets, targets));
      }
    });
  },
};

export default command;
