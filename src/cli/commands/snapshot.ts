/** `platter snapshot`: like `qemu-img snapshot` (list, create, apply, delete internal snapshots). */

import { NotFoundError, UsageError } from '../../core/errors.js';
import { snapshot, type SnapshotAction } from '../../ops/snapshot.js';
import type { CliCommand } from '../command.js';
import { withImage } from '../open.js';
import { printJson, printText, withOutput } from '../output.js';
import { renderSnapshotTable } from '../render/info.js';
import { refuseSharedWrite, withForceShare } from '../force-share.js';
import { withImageOpts } from '../image-opts.js';
import { REPEATED_FLAGS } from '../run.js';

/** Bytes of a name qemu-img snapshot -c keeps (its buffer holds 256 with the NUL). */
const CREATED_NAME_BYTES = 255;

/** The name as qemu-img stores it for -c: its first 255 bytes (here never cut inside a character). */
function cutName(name: string): string {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length <= CREATED_NAME_BYTES) return name;
  let end = CREATED_NAME_BYTES;
  // Back up to the start of a UTF-8 sequence: continuation bytes are 10xxxxxx.
  while (end > 0 && (bytes[end]! & 0xc0) === 0x80) end--;
  return new TextDecoder().decode(bytes.subarray(0, end));
}

/** The one action the flags ask for (-l when none). */
function actionOf(args: Record<string, unknown>): SnapshotAction {
  const chosen: SnapshotAction[] = [];
  // -l is counted: qemu-img refuses it given twice, as it refuses any action given twice.
  const lists = typeof args.l === 'number' ? args.l : 0;
  if (lists > 0) chosen.push({ kind: 'list' });
  if (typeof args.c === 'string') chosen.push({ kind: 'create', name: cutName(args.c) });
  if (typeof args.a === 'string') chosen.push({ kind: 'apply', snapshot: args.a });
  if (typeof args.d === 'string') chosen.push({ kind: 'delete', snapshot: args.d });
  // One action, given once: qemu-img refuses a repeat too (-d s1 -d s2), rather than taking the last.
  const repeated = (args as Record<symbol, Set<string> | undefined>)[REPEATED_FLAGS];
  const again = lists > 1 || ['c', 'a', 'd'].some((flag) => repeated?.has(flag));
  if (chosen.length > 1 || again) throw new UsageError("Cannot mix '-l', '-a', '-c', '-d'");
  return chosen[0] ?? { kind: 'list' };
}

/** A snapshot that is not there, said as qemu-img says it for -a and -d (without the file: qemu-img names none). */
function inQemuWords(error: unknown, action: SnapshotAction): unknown {
  if (!(error instanceof NotFoundError) || error.data.snapshot === undefined) return error;
  if (action.kind === 'apply') return new NotFoundError(`Could not apply snapshot '${action.snapshot}': Failed to load snapshot: No such file or directory`, error.data);
  if (action.kind === 'delete') return new NotFoundError(`Could not delete snapshot '${action.snapshot}': snapshot not found`, error.data);
  return error;
}

const command: CliCommand = {
  command: 'snapshot <image>',
  describe: 'List, create, apply or delete internal snapshots of a qcow2 image',
  builder: (yargs) =>
    // No -f: qemu-img snapshot has none (it probes, or takes the driver of --image-opts).
    withForceShare(withOutput(withImageOpts(yargs, [{ positional: 'image' }])))
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .option('l', { alias: 'list', type: 'count', describe: 'List the snapshots (the default)' })
      .option('c', { alias: 'create', type: 'string', describe: 'Create a snapshot named NAME of the current state' })
      .option('a', { alias: 'apply', type: 'string', describe: 'Revert the disk to snapshot ID or NAME (its id first, then the first name)' })
      .option('d', { alias: 'delete', type: 'string', describe: 'Delete the first snapshot named NAME (or with id ID)' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Quiet (qemu-img\'s flag: snapshot prints nothing but the list anyway)' })
      .example('platter snapshot disk.qcow2', 'List the snapshots, as qemu-img snapshot -l prints them')
      .example('platter snapshot -c before-upgrade disk.qcow2', 'Record the current disk contents as a snapshot')
      .example('platter snapshot -a before-upgrade disk.qcow2', 'Revert the disk to that snapshot')
      .example('platter snapshot -d before-upgrade disk.qcow2', 'Delete the snapshot and free what only it used')
      .example('platter snapshot --output=json disk.qcow2', 'The list as JSON, in qemu-img info\'s snapshot shape'),
  async handler(args) {
    const path = args.image as string;
    const action = actionOf(args);
    const options = { format: args.format as string | undefined, writable: action.kind !== 'list', noBacking: true };
    refuseSharedWrite(args, path, options.writable);
    const result = await withImage(path, options, (image) => snapshot(image, action)).catch((error: unknown) => Promise.reject(inQemuWords(error, action)));
    if (action.kind !== 'list') return;
    const list = result.snapshots ?? [];
    if (args.output === 'json') printJson(list);
    // Like qemu-img: nothing at all when there are no snapshots; -q silences messages, not the list.
    else if (list.length > 0) printText(['Snapshot list:', ...renderSnapshotTable(list)].join('\n') + '\n');
  },
};

export default command;
