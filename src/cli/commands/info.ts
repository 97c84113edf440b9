/** `platter info`: like `qemu-img info`. */

import type { CliCommand } from '../command.js';
import { info } from '../../ops/info.js';
import { withImage } from '../open.js';
import { printJson, printText, withFormat, withOutput } from '../output.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { renderInfoChain } from '../render/info.js';
import { withForceShare } from '../force-share.js';
import { withImageOpts } from '../image-opts.js';

const command: CliCommand = {
  command: 'info <image>',
  describe: "Show an image's format, sizes and backing file",
  builder: (yargs) =>
    withForceShare(withNamedFilePolicy(withOutput(withImageOpts(withFormat(yargs), [{ positional: 'image' }]))))
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .option('backing-chain', { type: 'boolean', default: false, describe: 'Also show every image in the backing chain' })
      .example('platter info disk.qcow2', 'Format, virtual size, disk size and backing file')
      .example('platter info --image-opts driver=qcow2,file.filename=disk.qcow2', 'The image named by qemu block options, as qemu-img takes them')
      .example('platter info --output=json --backing-chain top.qcow2', 'The whole chain as a JSON array, top first')
      .example('platter info --backing-chain --backing-root /srv/uploads up.qcow2', 'Follow only backing files inside /srv/uploads'),
  async handler(args) {
    const path = args.image as string;
    const backingChain = args['backing-chain'] === true;
    const policy = namedFilePolicyOf(args);
    // An encrypted image is described without its key, as qemu-img info describes it.
    // The chain qemu-img lists is every name followed, "backing": null in json: names or not.
    const options = { format: args.format as string | undefined, ...policy, noBacking: !backingChain || policy.noBacking === true, describeEncrypted: true, wholeChain: backingChain };
    await withImage(path, options, async (image) => {
      const chain = await info(image, { backingChain });
      if (args.output === 'json') printJson(backingChain ? chain : chain[0]);
      else printText(renderInfoChain(chain));
    });
  },
};

export default command;
