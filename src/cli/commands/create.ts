/** `platter create`: like `qemu-img create`. */

import { parseOptionString } from '../../core/options.js';
import { parseSize } from '../../core/size.js';
import { createImage } from '../../ops/create.js';
import { FileDevice } from '../../node/file-device.js';
import type { CliCommand } from '../command.js';
import { printText } from '../output.js';

const command: CliCommand = {
  command: 'create <image> <size>',
  describe: 'Create a new, empty image',
  builder: (yargs) =>
    yargs
      .positional('image', { type: 'string', describe: 'Image file to create', demandOption: true })
      .positional('size', { type: 'string', describe: 'Virtual size (bytes, or with a suffix K, M, G, T)', demandOption: true })
      .option('f', { alias: 'format', type: 'string', default: 'raw', describe: 'Image format', requiresArg: true })
      .option('o', { alias: 'options', type: 'string', describe: 'Format options, e.g. preallocation=full (may repeat)', requiresArg: true })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing' })
      .example('platter create disk.img 10G', 'A sparse 10 GiB raw image')
      .example('platter create -f raw -o preallocation=full small.img 64M', 'A raw image with every byte written'),
  async handler(args) {
    const path = args.image as string;
    const format = args.format as string;
    const size = parseSize(String(args.size), 'image size');
    const options = parseOptionString(args.options as string | string[] | undefined);
    const device = await FileDevice.open(path, { create: true });
    try {
      await createImage(device, { format, size, options });
      await device.flush();
    } finally {
      await device.close();
    }
    if (!args.quiet) printText(`Formatting '${path}', fmt=${format} size=${size}\n`);
  },
};

export default command;
