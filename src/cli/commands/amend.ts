/** `platter amend`: like `qemu-img amend` (the compat option). */

import { parseOptionString } from '../../core/options.js';
import { readHead } from '../../engine/open.js';
import { formats } from '../../engine/formats.js';
import { FileDevice } from '../../node/file-device.js';
import { amendImage } from '../../ops/amend.js';
import type { CliCommand } from '../command.js';
import { withFormat } from '../output.js';
import { createProgress, progressMode } from '../progress.js';
import { withCacheMode, writeFlushes } from '../cache-modes.js';

const command: CliCommand = {
  command: 'amend <image>',
  describe: "Change an image's format options in place",
  builder: (yargs) =>
    withCacheMode(withFormat(yargs), 'writeback')
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .option('p', { type: 'boolean', default: false, describe: 'Show progress on stdout, like qemu-img -p' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing (no -p progress)' })
      .option('force', { type: 'boolean', default: false, describe: "Accepted as qemu-img takes it (it allows changes platter does not make, such as LUKS keys)" })
      .option('o', { alias: 'options', type: 'string', describe: 'Options to change: compat=0.10|1.1', requiresArg: true, demandOption: true })
      .example('platter amend -o compat=1.1 old.qcow2', 'Upgrade a version 2 image to version 3')
      .example('platter amend -o compat=0.10 disk.qcow2', 'Downgrade, when no version 3 feature is in use'),
  async handler(args) {
    const path = args.image as string;
    const device = await FileDevice.open(path, { writable: true, flushes: writeFlushes(args) });
    try {
      const format = (args.format as string | undefined) ?? formats.probe(await readHead(device)).name;
      // One step, from nothing to all, as qemu-img shows an amend that moves no data.
      const progress = createProgress(progressMode(args));
      progress.update(0, 1);
      await amendImage(device, format, parseOptionString(args.options as string | string[]));
      progress.end();
    } finally {
      await device.close();
    }
  },
};

export default command;
