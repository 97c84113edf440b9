/** `platter measure`: like `qemu-img measure`. */

import { parseOptionString } from '../../core/options.js';
import { parseSize } from '../../core/size.js';
import { measure } from '../../ops/measure.js';
import type { CliCommand } from '../command.js';
import { openForCli } from '../open.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { printJson, printText, withFormat, withOutput } from '../output.js';
import { qdictOrder } from '../qdict-order.js';

const command: CliCommand = {
  command: 'measure [image]',
  describe: 'Show how large a new image would be',
  builder: (yargs) =>
    withOutput(withNamedFilePolicy(withFormat(yargs)))
      .positional('image', { type: 'string', describe: 'Source image (or give --size)' })
      .option('size', { type: 'string', describe: 'Measure an empty image of this virtual size', requiresArg: true })
      .option('O', { alias: 'target-format', type: 'string', default: 'raw', describe: 'Format of the new image', requiresArg: true })
      .option('o', { alias: 'options', type: 'string', describe: 'Options of the new image, e.g. cluster_size=4K', requiresArg: true })
      .example('platter measure -O qcow2 --size 10G', 'Metadata overhead of an empty 10 GiB qcow2 image')
      .example('platter measure -O qcow2 -o cluster_size=4K disk.raw', 'What converting disk.raw to qcow2 needs')
      .example('platter measure --output=json -O qcow2 disk.qcow2', "qemu-img's JSON"),
  async handler(args) {
    const options = parseOptionString(args.options as string | string[] | undefined);
    const size = args.size === undefined ? undefined : parseSize(String(args.size), 'size');
    const source = args.image === undefined ? undefined : await openForCli(args.image as string, { ...namedFilePolicyOf(args), format: args.format as string | undefined });
    try {
      const result = await measure({ format: args['target-format'] as string, options, size, source });
      if (args.output === 'json') {
        const object: Record<string, number> = {};
        if (result.bitmaps !== undefined) object['bitmaps'] = result.bitmaps;
        object['required'] = result.required;
        object['fully-allocated'] = result.fullyAllocated;
        printJson(qdictOrder(object));
      } else {
        let text = `required size: ${result.required}\nfully allocated size: ${result.fullyAllocated}\n`;
        if (result.bitmaps !== undefined) text += `bitmaps size: ${result.bitmaps}\n`;
        printText(text);
      }
    } finally {
      await source?.close();
    }
  },
};

export default command;
