/** `platter bitmap`: like `qemu-img bitmap` (add, remove, clear, enable, disable persistent dirty bitmaps). */

import { UsageError } from '../../core/errors.js';
import { parseSize } from '../../core/size.js';
import { editBitmaps, type BitmapAction } from '../../ops/bitmaps.js';
import type { CliCommand } from '../command.js';
import { withImage } from '../open.js';
import { withFormat } from '../output.js';
import { withImageOpts } from '../image-opts.js';

/** The action flags, which qemu-img applies in the order they are given. */
const ACTION_FLAGS = ['add', 'remove', 'clear', 'enable', 'disable'] as const;
type ActionFlag = (typeof ACTION_FLAGS)[number];

/** The action flags of the command line, in their order (yargs keeps only whether each was given). */
let flagOrder: ActionFlag[] = [];

function recordFlagOrder(argv: string[]): string[] {
  flagOrder = [];
  for (const word of argv) {
    if (word === '--') break;
    const name = /^--([a-z]+)$/.exec(word)?.[1];
    if (name && (ACTION_FLAGS as readonly string[]).includes(name)) flagOrder.push(name as ActionFlag);
  }
  return argv;
}

/** The actions asked for, in order (`--add --disable` adds a bitmap, then disables it). */
function actionsOf(args: Record<string, unknown>): BitmapAction[] {
  const granularity = args.g === undefined ? undefined : granularityOf(String(args.g));
  const actions: BitmapAction[] = [];
  for (const flag of flagOrder) {
    if (flag === 'add') actions.push({ kind: 'add', ...(granularity === undefined ? {} : { granularity }) });
    else actions.push({ kind: flag });
  }
  if (actions.length === 0) throw new UsageError('Need at least one of --add, --remove, --clear, --enable or --disable');
  if (granularity !== undefined && !flagOrder.includes('add')) throw new UsageError('granularity only supported with --add');
  return actions;
}

function granularityOf(text: string): number {
  try {
    return parseSize(text, 'granularity');
  } catch {
    throw new UsageError('Invalid granularity specified');
  }
}

const command: CliCommand = {
  command: 'bitmap <image> <name>',
  describe: 'Add, remove, clear, enable or disable a persistent dirty bitmap of a qcow2 image',
  prepareArgv: recordFlagOrder,
  builder: (yargs) =>
    withImageOpts(withFormat(yargs), [{ positional: 'image' }])
      .positional('image', { type: 'string', describe: 'Image file (qcow2)', demandOption: true })
      .positional('name', { type: 'string', describe: 'Bitmap name', demandOption: true })
      .option('add', { type: 'boolean', describe: 'Add an empty bitmap, enabled (it will follow the guest writes qemu makes)' })
      .option('remove', { type: 'boolean', describe: 'Remove the bitmap and free its clusters' })
      .option('clear', { type: 'boolean', describe: 'Clear every bit of the bitmap' })
      .option('enable', { type: 'boolean', describe: 'Let the bitmap follow guest writes again' })
      .option('disable', { type: 'boolean', describe: 'Freeze the bitmap: it no longer follows guest writes' })
      .option('g', { alias: 'granularity', type: 'string', requiresArg: true, describe: 'With --add: bytes per bit (power of 2, 512 to 2G; default the cluster size within 4k..64k)' })
      .example('platter bitmap --add disk.qcow2 nightly', 'Start tracking changes for incremental backups')
      .example('platter bitmap --add --disable -g 1M disk.qcow2 frozen', 'Add a disabled bitmap of 1 MiB granularity')
      .example('platter bitmap --clear disk.qcow2 nightly', 'Forget what was dirty (after a backup)')
      .example('platter bitmap --remove disk.qcow2 nightly', 'Drop a bitmap, inconsistent ones too'),
  async handler(args) {
    const path = args.image as string;
    const actions = actionsOf(args);
    await withImage(path, { format: args.format as string | undefined, writable: true, noBacking: true }, (image) => editBitmaps(image, String(args.name), actions));
  },
};

export default command;
