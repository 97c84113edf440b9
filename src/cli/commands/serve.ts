/** `platter serve`: export an image (or one partition of it) over NBD, like qemu-nbd. */

import { PlatterError, UsageError } from '../../core/errors.js';
import { formatSize } from '../../core/size.js';
import { serve, type ServeInfo } from '../../ops/serve.js';
import { defaultSocketPath, listenNbd, onShutdownSignals, type NbdEndpoint } from '../../node/nbd-listen.js';
import type { Args, CliCommand } from '../command.js';
import { openForCli, warnProbedRaw } from '../open.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { printJson, printText, withFormat, withOutput } from '../output.js';
import { warn } from '../report.js';
import { parseSnapshotParam, SNAPSHOT_PARAM_HELP } from '../snapshot-param.js';
import { forkServer, isForkedServer, writePidFile } from '../../node/serve-daemon.js';

function endpointFrom(args: Args): NbdEndpoint {
  const port = args.port as number | undefined;
  if (port !== undefined) {
    if (args.socket !== undefined) throw new UsageError('--socket and --port cannot be used together');
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UsageError(`invalid port '${String(args.port)}'`);
    return { port, host: (args.bind as string | undefined) ?? '127.0.0.1' };
  }
  if (args.bind !== undefined) throw new UsageError('--bind needs --port');
  return { socketPath: (args.socket as string | undefined) ?? defaultSocketPath() };
}

function shareCount(args: Args): number {
  const shared = args.shared as number;
  if (!Number.isInteger(shared) || shared < 1) throw new UsageError(`invalid --shared '${String(args.shared)}': expected a count of at least 1`);
  return shared;
}

function renderStart(path: string, info: ServeInfo): string {
  const mode = info.writable ? 'writable' : 'read-only';
  return `serving ${path} (${info.format}, ${formatSize(info['virtual-size'])}, ${mode}) at ${info.uri}\n`;
}

const command: CliCommand = {
  command: 'serve <image>',
  describe: 'Export an image or one of its partitions over NBD',
  builder: (yargs) =>
    withOutput(withNamedFilePolicy(withFormat(yargs)))
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .option('socket', { alias: 'k', type: 'string', requiresArg: true, describe: 'Listen on this unix socket (the default, in the temp directory)' })
      .option('port', { alias: 'p', type: 'number', requiresArg: true, describe: 'Listen on this TCP port instead' })
      .option('bind', { alias: 'b', type: 'string', requiresArg: true, describe: 'TCP address to bind (default 127.0.0.1)' })
      .option('partition', { alias: 'P', type: 'string', requiresArg: true, describe: 'Export only this partition: a number, LABEL=, UUID=, PARTLABEL= or VG/LV' })
      .option('snapshot', { alias: 'l', type: 'string', requiresArg: true, describe: `Export ${SNAPSHOT_PARAM_HELP}, read-only` })
      .option('writable', { alias: 'w', type: 'boolean', default: false, describe: 'Accept writes (default read-only)' })
      .option('read-only', { alias: 'r', type: 'boolean', describe: "Refuse writes (the default; qemu-nbd's flag, taken for scripts written for it)" })
      .option('fork', { type: 'boolean', describe: 'Return once the server listens, and leave it serving in the background (as qemu-nbd --fork)' })
      .option('pid-file', { type: 'string', requiresArg: true, describe: "Write the server's process id to this file while it serves" })
      .option('discard', { choices: ['ignore', 'unmap'], default: 'ignore', describe: 'What TRIM does: nothing, or free what the range stores' })
      .option('shared', { alias: 'e', type: 'number', default: 1, describe: 'Clients served at once' })
      .option('allocation-depth', { alias: 'A', type: 'boolean', default: false, describe: 'Also offer the qemu:allocation-depth metadata context (the chain layer holding each range)' })
      .option('bitmap', { alias: 'B', type: 'string', requiresArg: true, describe: 'Also offer this persistent dirty bitmap as qemu:dirty-bitmap:NAME (repeatable)' })
      .option('persistent', { alias: 't', type: 'boolean', default: false, describe: 'Keep serving after the last client leaves' })
      .option('export-name', { alias: 'x', type: 'string', default: '', describe: "The export's name (clients naming none get it too)" })
      .option('description', { alias: 'D', type: 'string', requiresArg: true, describe: "The export's description, as clients list it (default: the image's name)" })
      .example('platter serve --socket /tmp/disk.sock disk.img', "Serve the disk read-only; then: qemu-img convert -O raw 'nbd+unix:///?socket=/tmp/disk.sock' copy.raw")
      .example('platter serve --writable --persistent -k /tmp/d.sock disk.img', 'Accept writes, and keep serving until SIGINT, SIGTERM or SIGHUP')
      .example('platter serve -w --discard=unmap -k /tmp/d.sock vm.qcow2', "Let the client's TRIM free clusters of the qcow2 file")
      .example('platter serve --port 10809 --shared 4 disk.img', 'Serve on 127.0.0.1:10809 to up to 4 clients at once')
      .example('platter serve --partition 5 -k /tmp/p5.sock disk.img', 'Serve only partition 5 (a logical partition here)')
      .example('platter serve --snapshot snap1 -k /tmp/s.sock vm.qcow2', 'Serve internal snapshot snap1 of a qcow2 image, read-only')
      .example('platter serve -A -k /tmp/d.sock top.qcow2', "Offer allocation depths; then: nbdinfo --map=qemu:allocation-depth 'nbd+unix:///?socket=/tmp/d.sock'")
      .example('platter serve -B backup1 -k /tmp/d.sock vm.qcow2', "Offer bitmap backup1; then: nbdinfo --map=qemu:dirty-bitmap:backup1 'nbd+unix:///?socket=/tmp/d.sock'")
      .example('platter serve --fork --pid-file /tmp/d.pid -t -k /tmp/d.sock disk.img', 'Serve in the background; stop it with kill $(cat /tmp/d.pid)'),
  async handler(args) {
    const path = args.image as string;
    const writable = args.writable === true;
    if (writable && args['read-only'] === true) throw new UsageError('--read-only and --writable cannot be used together');
    if (args.fork === true && !isForkedServer()) return forkServer(process.argv.slice(2), args.output === 'json');
    // In the background (--fork), nothing is printed once the start is: no one reads it any more.
    let quiet = false;
    const endpoint = endpointFrom(args);
    const shared = shareCount(args);
    const image = await openForCli(path, { ...namedFilePolicyOf(args), format: args.format as string | undefined, writable });
    warnProbedRaw(image, path);
    try {
      const handle = await serve(image, {
        exportName: args['export-name'] as string,
        description: args.description as string | undefined,
        writable,
        partition: args.partition as string | undefined,
        snapshot: args.snapshot === undefined ? undefined : parseSnapshotParam(args.snapshot as string),
        unmapOnTrim: args.discard === 'unmap',
        shared,
        allocationDepth: args['allocation-depth'] === true,
        bitmaps: args.bitmap === undefined ? [] : ([] as unknown[]).concat(args.bitmap).map(String),
        listen: (catalog) => listenNbd(catalog, endpoint, { shared, persistent: args.persistent === true, log: (m) => quiet || warn(`${path}: ${m}`) }),
      }).catch((error: unknown) => {
        throw error instanceof PlatterError ? error.inFile(path) : error;
      });
      const removePidFile = args['pid-file'] === undefined ? () => {} : writePidFile(String(args['pid-file']));
      if (args.output === 'json') printJson(handle.info);
      else printText(renderStart(path, handle.info));
      quiet = isForkedServer();
      const removeSignals = onShutdownSignals(() => handle.stop());
      try {
        await handle.done;
      } finally {
        removeSignals();
        removePidFile();
      }
    } finally {
      await image.close();
    }
  },
};

export default command;
