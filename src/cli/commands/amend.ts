/** `platter amend`: like `qemu-img amend` (compat, lazy_refcounts, size, data_file). */

import { UsageError } from '../../core/errors.js';
import { parseOptionArgs } from '../../core/options.js';
import { readHead } from '../../engine/open.js';
import { formats } from '../../engine/formats.js';
import { FileDevice } from '../../node/file-device.js';
import { nodeHost } from '../../node/host.js';
import { AMEND_OPTIONS, amendImage } from '../../ops/amend.js';
import type { CliCommand } from '../command.js';
import { printText } from '../output.js';
import { warn } from '../report.js';
import { renderOptionHelp } from '../render/option-help.js';
import { withFormat } from '../output.js';
import { createProgress, progressMode } from '../progress.js';
import { withCacheMode, writeFlushes } from '../cache-modes.js';
import { withImageOpts } from '../image-opts.js';

const command: CliCommand = {
  // The image is checked by hand: `-f qcow2 -o help` needs none.
  command: 'amend [image]',
  describe: "Change an image's format options in place",
  builder: (yargs) =>
    withCacheMode(withImageOpts(withFormat(yargs), [{ positional: 'image' }]), 'writeback')
      .positional('image', { type: 'string', describe: 'Image file' })
      .option('p', { type: 'boolean', default: false, describe: 'Show progress on stdout, like qemu-img -p' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing (no -p progress)' })
      .option('force', { type: 'boolean', default: false, describe: "Accepted as qemu-img takes it (it allows changes platter does not make, such as LUKS keys)" })
      .option('o', {
        alias: 'options',
        type: 'string',
        describe: 'Options to change: compat=0.10|1.1, lazy_refcounts=on|off, size=SIZE, data_file=NAME (may repeat; help lists them)',
        requiresArg: true,
        demandOption: true,
      })
      .example('platter amend -o compat=1.1 old.qcow2', 'Upgrade a version 2 image to version 3')
      .example('platter amend -o compat=1.1,lazy_refcounts=on old.qcow2', 'Upgrade, and postpone refcount updates')
      .example('platter amend -o compat=0.10 disk.qcow2', 'Downgrade, when no version 3 feature is in use')
      .example('platter amend -o size=20G disk.qcow2', 'Change the virtual size, as resize does')
      .example('platter amend -f qcow2 -o help', 'The options amend takes'),
  async handler(args) {
    const options = parseOptionArgs(args.options as string | string[]);
    const path = args.image as string | undefined;
    const help = options.has('help') || options.has('?');
    if (help && args.format !== undefined) return showHelp(args.format as string);
    if (path === undefined) throw new UsageError('Expecting one image file name');
    const device = await FileDevice.open(path, { writable: !help, flushes: writeFlushes(args) });
    try {
      const format = (args.format as string | undefined) ?? formats.probe(await readHead(device)).name;
      if (help) return showHelp(format);
      // One step, from nothing to all, as qemu-img shows an amend that moves no data.
      const progress = createProgress(progressMode(args));
      progress.update(0, 1);
      await amendImage(device, format, options, nodeHost({ warn: (message, about) => warn(`${about ?? path}: ${message}`) }));
      progress.end();
    } finally {
      await device.close();
    }
  },
};

/** `-o help`: the options of `format`, as qemu-img lists its amend options. */
function showHelp(format: string): void {
  if (format !== 'qcow2') throw new UsageError(`Format driver '${format}' does not support option amendment`);
  printText(renderOptionHelp(format, AMEND_OPTIONS, 'amend'));
}

export default command;
