/** `platter compare`: like `qemu-img compare` (exit 0 identical, 1 different, 2 an image cannot be opened, 3 or 4 it cannot be read). */

import type { CliCommand } from '../command.js';
import { PlatterError } from '../../core/errors.js';
import type { Image } from '../../core/image.js';
import { compareImages, type CompareResult } from '../../ops/compare.js';
import { nodeByteTests } from '../../node/byte-tests.js';
import { openForCli } from '../open.js';
import { boundDecoding } from '../../node/codec-threads.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { printText, withFormat } from '../output.js';
import { createProgress, progressMode, withProgress } from '../progress.js';
import { checkSourceCacheMode, withSourceCacheMode } from '../cache-modes.js';
import { withForceShare } from '../force-share.js';
import { withImageOpts } from '../image-opts.js';

/** qemu-img compare's messages for an outcome, in the order it prints them. */
export function compareMessages(result: CompareResult): string[] {
  const mismatch = result.mismatch;
  if (mismatch?.kind === 'size') return ['Strict mode: Image size mismatch!'];
  const lines = result.extraPartChecked ? ['Warning: Image size mismatch!'] : [];
  if (!mismatch) lines.push('Images are identical.');
  else if (mismatch.kind === 'content') lines.push(`Content mismatch at offset ${mismatch.offset}!`);
  else lines.push(`Strict mode: Offset ${mismatch.offset} block status mismatch!`);
  return lines;
}

const command: CliCommand = {
  command: 'compare <first> <second>',
  describe: 'Compare the guest contents of two images',
  // qemu-img compare: 2 when an image cannot be opened, 3 when its allocation cannot be read, 4 when its data cannot;
  // 1 for a command line it cannot parse (a missing or extra file name, an unknown option).
  errorExitCode: (error) => {
    if (error instanceof PlatterError && error.data.commandLine === true) return 1;
    const step = error instanceof PlatterError ? error.data.step : undefined;
    return step === 'block status' ? 3 : step === 'read' ? 4 : 2;
  },
  builder: (yargs) =>
    withSourceCacheMode(withForceShare(withProgress(withNamedFilePolicy(withImageOpts(withFormat(yargs), [{ positional: 'first' }, { positional: 'second', formatFlag: 'F' }])))))
      .option('F', { type: 'string', requiresArg: true, describe: 'Format of the second image (default: probe)' })
      .option('s', { type: 'boolean', default: false, describe: 'Strict: sizes and allocation must match too' })
      .option('q', { type: 'boolean', default: false, describe: 'Quiet: only the exit status tells' })
      .positional('first', { type: 'string', describe: 'First image', demandOption: true })
      .positional('second', { type: 'string', describe: 'Second image', demandOption: true })
      .example('platter compare disk.qcow2 disk.raw', 'Exit 0 when the guest sees the same bytes, 1 when not')
      .example('platter compare -s -f qcow2 -F qcow2 a.qcow2 b.qcow2', 'Also require the same size and allocation'),
  async handler(args) {
    checkSourceCacheMode(args);
    const strict = args.s === true;
    const first = await openForCli(args.first as string, { ...namedFilePolicyOf(args), format: args.format as string | undefined });
    let second: Image | undefined;
    try {
      second = await openForCli(args.second as string, { ...namedFilePolicyOf(args), format: args.F as string | undefined });
      // No more can be decoded than both images hold: a small compare need not boot codec threads.
      boundDecoding(first.size + second.size);
      const mode = progressMode(args);
      const progress = createProgress(mode);
      const result = await compareImages(first, second, {
        strict,
        tests: nodeByteTests,
        onProgress: (done, total) => progress.update(done, total),
      });
      if (mode === 'json') progress.end();
      if (args.q !== true) printText(compareMessages(result).map((line) => line + '\n').join(''));
      // qemu-img ends its progress line after the verdict.
      if (mode === 'human') printText('\n');
      return result.identical ? 0 : 1;
    } finally {
      await second?.close();
      await first.close();
    }
  },
};

export default command;
