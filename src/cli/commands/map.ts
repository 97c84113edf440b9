/** `platter map`: like `qemu-img map`. */

import type { CliCommand } from '../command.js';
import { parseSize } from '../../core/size.js';
import { mapImage } from '../../ops/map.js';
import { withImage } from '../open.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { StdoutBatcher, withFormat, withOutput } from '../output.js';
import { MAP_HUMAN_HEADER, mapEntryHuman, mapEntryJson } from '../render/map.js';
import { withForceShare } from '../force-share.js';
import { withImageOpts } from '../image-opts.js';

const command: CliCommand = {
  command: 'map <image>',
  describe: "Show an image's allocation map, like qemu-img map",
  builder: (yargs) =>
    withForceShare(withOutput(withNamedFilePolicy(withImageOpts(withFormat(yargs), [{ positional: 'image' }]))))
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .option('start-offset', { alias: 's', type: 'string', requiresArg: true, describe: 'First guest byte to map' })
      .option('max-length', { alias: 'l', type: 'string', requiresArg: true, describe: 'Map at most this many bytes' })
      .example('platter map disk.qcow2', 'Guest ranges that hold data and where they sit in the file')
      .example('platter map --output=json disk.qcow2', "Every run with qemu-img map's JSON keys")
      .example('platter map --output=json --start-offset 1M --max-length 64k disk.qcow2', 'One window of the disk')
      .example('platter map -s 1M -l 64k disk.qcow2', 'The same window, with the short options')
      .example('platter map --no-backing --output=json top.qcow2', 'What the top image holds, without opening its backing file'),
  async handler(args) {
    const path = args.image as string;
    const startOffset = args['start-offset'] === undefined ? undefined : parseSize(String(args['start-offset']), 'start offset');
    const maxLength = args['max-length'] === undefined ? undefined : parseSize(String(args['max-length']), 'max length');
    await withImage(path, { ...namedFilePolicyOf(args), format: args.format as string | undefined }, async (image) => {
      const out = new StdoutBatcher();
      try {
        const json = args.output === 'json';
        // Entries are printed as they come, so output starts at once and memory stays flat.
        let first = true;
        if (!json) await out.add(MAP_HUMAN_HEADER);
        for await (const entry of mapImage(image, { startOffset, maxLength })) {
          await out.add(json ? (first ? '[' : ',\n') + mapEntryJson(entry) : mapEntryHuman(entry));
          first = false;
        }
        if (json) await out.add(']\n');
      } finally {
        // What was listed before an error stays printed, as with qemu-img.
        await out.flush();
      }
    });
  },
};

export default command;
