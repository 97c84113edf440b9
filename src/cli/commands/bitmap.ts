/** `platter bitmap`: like `qemu-img bitmap` (add, remove, clear, enable, disable and merge persistent dirty bitmaps). */

import { UsageError } from '../../core/errors.js';
import { parseSize } from '../../core/size.js';
import { editBitmaps, isQcow2, type BitmapAction, type Qcow2Source } from '../../ops/bitmaps.js';
import type { CliCommand } from '../command.js';
import { withImage } from '../open.js';
import { withFormat } from '../output.js';
import { withImageOpts } from '../image-opts.js';

/** The action flags, which qemu-img applies in the order they are given. */
const ACTION_FLAGS = ['add', 'remove', 'clear', 'enable', 'disable', 'merge'] as const;
type ActionFlag = (typeof ACTION_FLAGS)[number];

/** The action flags of the command line, in their order, with --merge's source (yargs keeps only the last of each). */
let flagOrder: { flag: ActionFlag; source?: string }[] = [];

function recordFlagOrder(argv: string[]): string[] {
  flagOrder = [];
  for (let index = 0; index < argv.length; index++) {
    const word = argv[index]!;
    if (word === '--') break;
    const [, name, inline] = /^--([a-z]+)(?:=(.*))?$/.exec(word) ?? [];
    if (!name || !(ACTION_FLAGS as readonly string[]).includes(name)) continue;
    if (name === 'merge') flagOrder.push({ flag: 'merge', source: inline ?? argv[index + 1] });
    else flagOrder.push({ flag: name as ActionFlag });
  }
  return argv;
}

/** The actions asked for, in order (`--add --disable` adds a bitmap, then disables it); merges read from `source` when given. */
function actionsOf(args: Record<string, unknown>, source?: Qcow2Source): BitmapAction[] {
  // As in qemu-img, -g 0 is no granularity given: the default one.
  const granularity = args.g === undefined ? undefined : granularityOf(String(args.g)) || undefined;
  const actions: BitmapAction[] = [];
  for (const { flag, source: name } of flagOrder) {
    if (flag === 'add') actions.push({ kind: 'add', ...(granularity === undefined ? {} : { granularity }) });
    else if (flag === 'merge') actions.push({ kind: 'merge', name: name ?? '', ...(source ? { image: source } : {}) });
    else actions.push({ kind: flag });
  }
  if (actions.length === 0) throw new UsageError('Need at least one of --add, --remove, --clear, --enable, --disable, or --merge');
  if (granularity !== undefined && !flagOrder.some(({ flag }) => flag === 'add')) throw new UsageError('granularity only supported with --add');
  if (args.b !== undefined && !flagOrder.some(({ flag }) => flag === 'merge')) throw new UsageError('Merge bitmap source file only supported with --merge');
  if (args.F !== undefined && args.b === undefined) throw new UsageError('-F only supported with -b');
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
  describe: 'Add, remove, clear, enable, disable or merge persistent dirty bitmaps of a qcow2 image',
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
      .option('merge', { type: 'string', requiresArg: true, describe: 'Set every bit that bitmap SOURCE has set (of this image, or of -b FILE)' })
      .option('b', { type: 'string', requiresArg: true, describe: 'With --merge: the image the source bitmap is in' })
      .option('F', { type: 'string', requiresArg: true, describe: 'Format of the -b image (default: probe)' })
      .option('g', { alias: 'granularity', type: 'string', requiresArg: true, describe: 'With --add: bytes per bit (power of 2, 512 to 2G; default the cluster size within 4k..64k)' })
      .example('platter bitmap --add disk.qcow2 nightly', 'Start tracking changes for incremental backups')
      .example('platter bitmap --add --disable -g 1M disk.qcow2 frozen', 'Add a disabled bitmap of 1 MiB granularity')
      .example('platter bitmap --clear disk.qcow2 nightly', 'Forget what was dirty (after a backup)')
      .example('platter bitmap --remove disk.qcow2 nightly', 'Drop a bitmap, inconsistent ones too')
      .example('platter bitmap --merge monday -b old.qcow2 disk.qcow2 week', 'Add the bits of old.qcow2\'s bitmap monday to week'),
  async handler(args) {
    const path = args.image as string;
    // The flags are checked before any file opens.
    actionsOf(args);
    const edit = (source?: Qcow2Source) =>
      withImage(path, { format: args.format as string | undefined, writable: true, noBacking: true }, (image) => editBitmaps(image, String(args.name), actionsOf(args, source)));
    if (args.b === undefined) return edit();
    // The source bitmap's image, read-only, for as long as the edit takes.
    await withImage(String(args.b), { format: args.F as string | undefined, noBacking: true }, async (source) => {
      if (!isQcow2(source)) throw new UsageError(`Format driver '${source.format}' does not support bitmaps`);
      await edit(source);
    });
  },
};

export default command;
