/** `platter resize`: like `qemu-img resize`. */

import { UsageError } from '../../core/errors.js';
import { parseSizeChange } from '../../core/size.js';
import { resizeImage } from '../../ops/resize.js';
import type { CliCommand } from '../command.js';
import { warnProbedRaw, withImage } from '../open.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { printText, withFormat } from '../output.js';
import { withImageOpts } from '../image-opts.js';

const command: CliCommand = {
  command: 'resize <image> [size]',
  describe: "Change an image's virtual size",
  // Like qemu-img, take a trailing `-SIZE` as the size, not as flags.
  prepareArgv(argv) {
    const last = argv[argv.length - 1];
    if (last === undefined || !/^-[0-9]/.test(last)) return argv;
    return [...argv.slice(0, -1).filter((arg) => arg !== '--'), `--size-decrease=${last.slice(1)}`];
  },
  builder: (yargs) =>
    withNamedFilePolicy(withImageOpts(withFormat(yargs), [{ positional: 'image' }]))
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .positional('size', { type: 'string', describe: 'New size, or +SIZE / -SIZE relative to the current one' })
      .option('size-decrease', { type: 'string', hidden: true })
      .option('shrink', { type: 'boolean', default: false, describe: 'Allow making the image smaller (data past the new end is lost)' })
      .option('preallocation', {
        type: 'string',
        requiresArg: true,
        default: 'off',
        describe: 'Growing only: off; metadata (qcow2: host clusters for the new space); falloc (the same; raw: left sparse); full (and zeros written)',
      })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing' })
      .example('platter resize disk.qcow2 +10G', 'Grow by 10 GiB (the new space reads as zeros)')
      .example('platter resize --shrink disk.qcow2 -1G', 'Shrink by 1 GiB, freeing the clusters past the new end')
      .example('platter resize -f raw disk.img 20G', 'Set a raw image to 20 GiB')
      .example('platter resize --preallocation=full disk.qcow2 +1G', 'Grow by 1 GiB, with the new space allocated and zeroed'),
  async handler(args) {
    const path = args.image as string;
    const decrease = args['size-decrease'] as string | undefined;
    const sizeText = decrease !== undefined ? `-${decrease}` : (args.size as string | undefined);
    if (sizeText === undefined) throw new UsageError('a size is required (SIZE, +SIZE or -SIZE)');
    const options = { ...namedFilePolicyOf(args), format: args.format as string | undefined, writable: true };
    await withImage(path, options, (image) => {
      warnProbedRaw(image, path);
      return resizeImage(image, parseSizeChange(sizeText), args.shrink === true, String(args.preallocation));
    });
    if (!args.quiet) printText('Image resized.\n');
  },
};

export default command;
