/** `platter commit`: like `qemu-img commit`. */

import { dirname, resolve } from 'node:path';
import type { Image } from '../../core/image.js';
import { UsageError } from '../../core/errors.js';
import { baseDepth, commitImage } from '../../ops/commit.js';
import type { CliCommand } from '../command.js';
import { openForCli } from '../open.js';
import { printText, withFormat } from '../output.js';
import { createProgress, progressMode, withProgress } from '../progress.js';
import { withCacheMode, writeFlushes } from '../cache-modes.js';
import { parseRateLimit } from '../../ops/rate-limit.js';
import { withImageOpts } from '../image-opts.js';

/** The chain layer `name` stands for: as given (from the working directory), or beside the top image. */
function findBase(top: Image, path: string, name: string | undefined): { layer: Image; depth: number } {
  if (name === undefined) {
    if (!top.backing) throw new UsageError('Image does not have a backing file').inFile(path);
    return { layer: top.backing, depth: 1 };
  }
  const keyOf = (image: Image) => resolve(image.device.name);
  let depth: number;
  try {
    depth = baseDepth(top, resolve(name), keyOf, name);
  } catch {
    depth = baseDepth(top, resolve(dirname(path), name), keyOf, name);
  }
  let layer = top;
  for (let step = 0; step < depth; step++) layer = layer.backing!;
  return { layer, depth };
}

const command: CliCommand = {
  command: 'commit <image>',
  describe: 'Write the data of an image into its backing file',
  builder: (yargs) =>
    withCacheMode(withProgress(withImageOpts(withFormat(yargs), [{ positional: 'image' }])), 'writeback')
      .positional('image', { type: 'string', describe: 'Image file (the top of a backing chain)', demandOption: true })
      .option('b', { alias: 'base', type: 'string', requiresArg: true, describe: 'Commit into this image further down the chain (implies -d)' })
      .option('d', { type: 'boolean', default: false, describe: 'Do not empty the image after committing' })
      .option('r', { type: 'string', requiresArg: true, describe: 'Write at most this many bytes per second into the base (k, M, G suffixes; 0: no limit)' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing on success' })
      .example('platter commit overlay.qcow2', 'Merge an overlay into its backing file and empty it')
      .example('platter commit -d -p snap.qcow2', 'Merge, keep the overlay as it is, show progress')
      .example('platter commit -b base.qcow2 top.qcow2', 'Merge the top and middle layers into base.qcow2'),
  async handler(args) {
    const path = args.image as string;
    const baseName = args.base as string | undefined;
    const keep = args.d === true || baseName !== undefined;
    const flushes = writeFlushes(args);
    const limit = args.r === undefined ? undefined : parseRateLimit(String(args.r));
    const top = await openForCli(path, { format: args.format as string | undefined, writable: !keep, flushes });
    try {
      const { layer, depth } = findBase(top, path, baseName);
      // A base whose format was probed is probed again, so a raw one keeps guarding its first sector.
      const base = await openForCli(layer.device.name, { format: layer.probed ? undefined : layer.format, writable: true, flushes });
      try {
        const progress = createProgress(progressMode(args));
        await commitImage(top, base, depth, { keep, limit, onProgress: (done, total) => progress.update(done, total) });
        progress.end();
      } finally {
        await base.close();
      }
    } finally {
      await top.close();
    }
    if (args.quiet !== true) printText('Image committed.\n');
  },
};

export default command;
