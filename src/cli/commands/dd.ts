/** `platter dd`: like `qemu-img dd`, to raw. */

import type { CliCommand } from '../command.js';
import { PlatterError, UsageError } from '../../core/errors.js';
import { parseSize } from '../../core/size.js';
import { checkOutputFormat } from '../../ops/convert.js';
import { DD_MAX_BLOCK_SIZE, ddToQcow2, ddToRaw, type DdOperands } from '../../ops/dd.js';
import { nodeHost } from '../../node/host.js';
import { FileDevice } from '../../node/file-device.js';
import { nodeByteTests } from '../../node/byte-tests.js';
import { sourceFileAt } from '../source-files.js';
import { openForCli } from '../open.js';
import { boundDecoding } from '../../node/codec-threads.js';
import { resolveImageOperand } from '../image-opts.js';
import { withObjects } from '../objects.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { withFormat } from '../output.js';
import { warn } from '../report.js';
import { withForceShare } from '../force-share.js';

/** dd's operands as given: numbers plus the two file names. */
export interface ParsedDdOperands extends DdOperands {
  input?: string;
  output?: string;
}

const SUFFIX_HINT = 'You may use k, M, G, T, P or E suffixes for kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.';

/** Parses `bs=N count=N skip=N if=FILE of=FILE` with qemu-img's checks and messages. */
export function parseDdOperands(operands: readonly string[]): ParsedDdOperands {
  const parsed: ParsedDdOperands = {};
  for (const operand of operands) {
    const at = operand.indexOf('=');
    const key = at < 0 ? operand : operand.slice(0, at);
    const value = at < 0 ? '' : operand.slice(at + 1);
    if (key === 'if') parsed.input = value;
    else if (key === 'of') parsed.output = value;
    else if (key === 'bs') parsed.blockSize = blockSizeOperand(value);
    else if (key === 'count') parsed.count = numberOperand(value, () => `Invalid count specified. ${SUFFIX_HINT}`);
    else if (key === 'skip') parsed.skip = numberOperand(value, () => `Invalid skip specified. ${SUFFIX_HINT}`);
    else throw new UsageError(`unrecognized operand ${key}`);
  }
  if (!parsed.input || !parsed.output) throw new UsageError('Must specify both input and output files');
  return parsed;
}

function blockSizeOperand(text: string): number {
  // As qemu-img: a size it cannot read gets the suffix hint, a size out of range its bounds.
  const bytes = numberOperand(text, () => `Invalid bs specified. ${SUFFIX_HINT}`);
  if (bytes < 1 || bytes > DD_MAX_BLOCK_SIZE) throw new UsageError(`Invalid bs specified. Must be between 1 and ${DD_MAX_BLOCK_SIZE}.`);
  return bytes;
}

function numberOperand(text: string, message: () => string): number {
  try {
    return parseSize(text);
  } catch {
    throw new UsageError(message());
  }
}

const command: CliCommand = {
  command: 'dd [operands..]',
  describe: 'Copy a range of an image, like qemu-img dd',
  builder: (yargs) =>
    withObjects(withForceShare(withNamedFilePolicy(withFormat(yargs))))
      .option('image-opts', {
        type: 'boolean',
        describe: 'The if= image is named by qemu block options, e.g. driver=qcow2,file.filename=disk.qcow2 (a json:{...} name is read either way)',
      })
      .positional('operands', { type: 'string', array: true, describe: 'bs=SIZE count=N skip=N if=SOURCE of=TARGET' })
      .option('O', { type: 'string', default: 'raw', requiresArg: true, describe: 'Output format: raw, or qcow2 (every block written: fully allocated, as qemu-img dd makes it)' })
      .example('platter dd bs=1M count=64 if=disk.qcow2 of=head.raw', 'The first 64 MiB of the guest disk as a raw file')
      .example('platter dd -f qcow2 bs=512 skip=2048 if=disk.qcow2 of=rest.raw', 'Everything after the first MiB')
      .example('platter dd --image-opts if=driver=raw,offset=1M,file.filename=disk.img of=part.raw', 'A raw disk from its second MiB on, named by qemu block options'),
  async handler(args) {
    const operands = parseDdOperands(((args.operands as unknown[]) ?? []).map(String));
    checkOutputFormat(args.O as string);
    const imageOpts = args['image-opts'] === true;
    if (imageOpts && args.format !== undefined) throw new UsageError('--image-opts and --format are mutually exclusive');
    // As qemu-img dd: --image-opts names the input only.
    const input = resolveImageOperand(operands.input!, imageOpts);
    const source = await openForCli(input.name, { ...namedFilePolicyOf(args), format: input.format ?? (args.format as string | undefined) });
    // No more can be decoded than the source holds: a small copy need not boot codec threads.
    boundDecoding(source.size);
    try {
      // Any file the source reads from, backing and data files included, is off limits.
      if ((await sourceFileAt(source, operands.output!)) !== undefined) {
        throw new UsageError(`refusing to write onto the source image`).inFile(operands.output!);
      }
      const target = await FileDevice.open(operands.output!, { create: true });
      try {
        const result =
          args.O === 'qcow2'
            ? await ddToQcow2(source, target, operands, nodeHost(), { tests: nodeByteTests })
            : await ddToRaw(source, target, operands, { tests: nodeByteTests });
        if (result.skipPastEnd) warn(`${input.name}: cannot skip to specified offset`);
      } catch (error) {
        if (error instanceof PlatterError) error.inFile(operands.output!);
        throw error;
      } finally {
        await target.close();
      }
    } finally {
      await source.close();
    }
  },
};

export default command;
