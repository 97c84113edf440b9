/** `platter measure`: like `qemu-img measure`. */

import { parseOptionArgs } from '../../core/options.js';
import { UsageError } from '../../core/errors.js';
import { parseSize } from '../../core/size.js';
import { measure } from '../../ops/measure.js';
import type { CliCommand } from '../command.js';
import { openForCli } from '../open.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { printJson, printText, withFormat, withOutput } from '../output.js';
import { qdictOrder } from '../../core/qdict-order.js';
import { withForceShare } from '../force-share.js';
import { SNAPSHOT_PARAM_HELP, snapshotOf } from '../snapshot-param.js';
import { withImageOpts } from '../image-opts.js';

const command: CliCommand = {
  command: 'measure [image]',
  describe: 'Show how large a new image would be',
  builder: (yargs) =>
    withForceShare(withOutput(withNamedFilePolicy(withImageOpts(withFormat(yargs), [{ positional: 'image' }]))))
      .positional('image', { type: 'string', describe: 'Source image (or give --size)' })
      .option('size', { type: 'string', describe: 'Measure an empty image of this virtual size', requiresArg: true })
      .option('O', { alias: 'target-format', type: 'string', default: 'raw', describe: 'Format of the new image', requiresArg: true })
      .option('o', { alias: 'options', type: 'string', describe: 'Options of the new image, e.g. cluster_size=4K', requiresArg: true })
      .option('l', { type: 'string', requiresArg: true, describe: `Measure ${SNAPSHOT_PARAM_HELP}` })
      .example('platter measure -O qcow2 --size 10G', 'Metadata overhead of an empty 10 GiB qcow2 image')
      .example('platter measure -O qcow2 -o cluster_size=4K disk.raw', 'What converting disk.raw to qcow2 needs')
      .example('platter measure --output=json -O qcow2 disk.qcow2', "qemu-img's JSON")
      .example('platter measure -O qcow2 -l before-upgrade vm.qcow2', 'What converting the disk as it was in that snapshot needs'),
  async handler(args) {
    const options = parseOptionArgs(args.options as string | string[] | undefined);
    const size = args.size === undefined ? undefined : parseSize(String(args.size), 'size');
    // Flags about a source with none to apply to: refused, as qemu-img refuses them, rather than ignored.
    if (args.image === undefined && (args.format !== undefined || args['image-opts'] === true || args.l !== undefined)) {
      throw new UsageError('--image-opts, -f, and -l require a filename argument.');
    }
    const opened = args.image === undefined ? undefined : await openForCli(args.image as string, { ...namedFilePolicyOf(args), format: args.format as string | undefined });
    try {
      const source = opened && args.l !== undefined ? await snapshotOf(opened, String(args.l)) : opened;
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
      await opened?.close();
    }
  },
};

export default command;
