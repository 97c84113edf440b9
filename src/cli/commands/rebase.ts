/** `platter rebase`: like `qemu-img rebase`. */

import type { Image } from '../../core/image.js';
import { UsageError } from '../../core/errors.js';
import { nodeByteTests, sameFile } from '../../node/byte-tests.js';
import { rebaseImage } from '../../ops/rebase.js';
import type { CliCommand } from '../command.js';
import { openForCli } from '../open.js';
import { withFormat } from '../output.js';
import { createProgress, progressMode, withProgress } from '../progress.js';
import { withForceShare } from '../force-share.js';
import { withCacheMode, withSourceCacheMode, writeFlushes } from '../cache-modes.js';
import { withImageOpts } from '../image-opts.js';
import { besideImage } from '../named-files.js';

/** Refuses a new backing chain that contains the image itself: the image would become its own backing file. */
async function refuseLoop(newBacking: Image, path: string): Promise<void> {
  for (let layer: Image | undefined = newBacking; layer; layer = layer.backing) {
    if (await sameFile(layer.device.name, path)) {
      throw new UsageError(`the new backing chain contains the image itself (${layer.device.name}): that would make a cycle`).inFile(path);
    }
  }
}

const command: CliCommand = {
  command: 'rebase <image>',
  describe: 'Change the backing file of an image',
  builder: (yargs) =>
    withSourceCacheMode(withCacheMode(withForceShare(withProgress(withImageOpts(withFormat(yargs), [{ positional: 'image' }]))), 'writeback'))
      .positional('image', { type: 'string', describe: 'Image file (qcow2)', demandOption: true })
      .option('b', { alias: 'backing', type: 'string', requiresArg: false, describe: 'New backing file ("" for none: the image becomes standalone; with -u, left out means "")' })
      .option('F', { alias: 'backing-format', type: 'string', requiresArg: true, describe: 'Format of the new backing file (required with a non-empty -b)' })
      .option('u', { alias: 'unsafe', type: 'boolean', default: false, describe: 'Only rewrite the backing file name; copy no data' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing (no -p progress)' })
      .example('platter rebase -b new-base.qcow2 -F qcow2 overlay.qcow2', 'Move an overlay onto another base, keeping its guest contents')
      .example('platter rebase -u -b /images/moved-base.qcow2 -F qcow2 overlay.qcow2', 'The base file was moved: only fix the name')
      .example('platter rebase -p -b "" overlay.qcow2', 'Pull everything in from the backing chain; the image stands alone'),
  async handler(args) {
    const path = args.image as string;
    const unsafe = args.unsafe === true;
    if (args.backing === undefined && !unsafe) throw new UsageError('Must specify backing file (-b) or use unsafe mode (-u)');
    // As qemu-img: -u without -b is -b "", the image stops naming a backing file.
    const backingFile = String(args.backing ?? '');
    if (backingFile !== '' && args['backing-format'] === undefined) {
      // As qemu-img 7.2: a recorded format keeps the backing file from ever being probed.
      throw new UsageError(`Could not change the backing file to '${backingFile}': backing format must be specified (-F)`).inFile(path);
    }
    const image = await openForCli(path, { format: args.format as string | undefined, writable: true, noBacking: unsafe, flushes: writeFlushes(args) });
    let newBacking: Image | undefined;
    try {
      const backingFormat = args['backing-format'] as string | undefined;
      if (backingFile !== '' && !unsafe) {
        newBacking = await openForCli(besideImage(path, backingFile), { format: backingFormat });
        await refuseLoop(newBacking, path);
      }
      const progress = createProgress(progressMode(args));
      await rebaseImage(image, {
        backingFile,
        backingFormat,
        newBacking,
        unsafe,
        tests: nodeByteTests,
        onProgress: (done, total) => progress.update(done, total),
      });
      progress.end();
    } finally {
      await newBacking?.close();
      await image.close();
    }
  },
};

export default command;
