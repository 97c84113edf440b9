/** `platter check`: like `qemu-img check`, with its exit statuses (0 clean, 2 corrupt, 3 leaks, 63 no check). */

import { checkExitStatus, checkImage, NoCheckError } from '../../ops/check.js';
import { readHead } from '../../engine/open.js';
import { formats } from '../../engine/formats.js';
import { NotFoundError, PlatterError } from '../../core/errors.js';
import type { Image } from '../../core/image.js';
import { FileDevice } from '../../node/file-device.js';
import type { RepairMode } from '../../ops/check.js';
import type { CliCommand } from '../command.js';
import { printJson, printText, withFormat, withOutput } from '../output.js';
import { reportError } from '../report.js';
import { checkJson, renderCheck } from '../render/check.js';
import { refuseSharedWrite, withForceShare } from '../force-share.js';
import { checkSourceCacheMode, withSourceCacheMode } from '../cache-modes.js';
import { rawWindowNamed, withImageOpts } from '../image-opts.js';
import { openForCli } from '../open.js';

/** qemu-img's exit status for formats without a check. */
const NO_CHECK_STATUS = 63;

/**
 * Fails as qemu-img check fails when a file the image names (its backing
 * file, its external data file) cannot be found: qemu-img opens the image
 * with them before it checks anything. Whatever else goes wrong opening the
 * image is left to the check, which reports it as it finds it.
 */
async function requireNamedFiles(path: string): Promise<void> {
  let image: Image;
  try {
    // Quiet: what this open would warn of (a dirty or corrupt image) is the check's to report.
    image = await openForCli(path, { format: 'qcow2', quiet: true });
  } catch (error) {
    if (error instanceof NotFoundError && error.data['name'] !== undefined) throw error;
    return;
  }
  await image.close();
}

const command: CliCommand = {
  command: 'check <image>',
  describe: 'Check an image for consistency, and optionally repair it',
  builder: (yargs) =>
    withSourceCacheMode(withForceShare(withOutput(withImageOpts(withFormat(yargs), [{ positional: 'image' }]))))
      .positional('image', { type: 'string', describe: 'Image file', demandOption: true })
      .option('r', { alias: 'repair', choices: ['leaks', 'all'] as const, describe: 'Repair leaked clusters, or everything that can be repaired' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing; the exit status tells' })
      .example('platter check disk.qcow2', 'Report corruptions and leaked clusters (exit 0 clean, 2 corrupt, 3 leaks)')
      .example('platter check --output=json disk.qcow2', "The same report as qemu-img check's JSON")
      .example('platter check -r leaks disk.qcow2', 'Free clusters nothing refers to')
      .example('platter check -r all disk.qcow2', 'Also fix wrong refcounts and COPIED flags'),
  async handler(args) {
    const path = args.image as string;
    const mode = (args.repair as RepairMode | undefined) ?? 'none';
    refuseSharedWrite(args, path, mode !== 'none');
    checkSourceCacheMode(args);
    // A raw image that is part of a file (--image-opts driver=raw,offset=...) is raw, which has no check.
    const part = rawWindowNamed(path);
    const device = await FileDevice.open(part?.path ?? path, { writable: mode !== 'none' });
    try {
      const format = part ? 'raw' : ((args.format as string | undefined) ?? formats.probe(await readHead(device)).name);
      if (format === 'qcow2') await requireNamedFiles(path);
      const report = await checkImage(device, format, mode);
      for (const line of [...report.repairMessages, ...report.messages]) process.stderr.write(`${line}\n`);
      // As qemu-img: a check that stopped short prints no report, only why.
      if (report.failure !== undefined) {
        process.stderr.write(`platter: ${path}: Check failed: ${report.failure}\n`);
        return 1;
      }
      if (args.output === 'json') printJson(checkJson(report, path));
      else if (!args.quiet) printText(renderCheck(report));
      // As qemu-img: a check that could not look at everything says so, and exits 1.
      if (report.checkErrors > 0) process.stderr.write(`platter: ${path}: Check failed\n`);
      await device.flush();
      return checkExitStatus(report);
    } catch (error) {
      if (error instanceof NoCheckError) {
        reportError(error.inFile(path), { json: args.output === 'json' });
        return NO_CHECK_STATUS;
      }
      // An image too broken to check is named like every other command names it.
      throw error instanceof PlatterError ? error.inFile(path) : error;
    } finally {
      await device.close();
    }
  },
};

export default command;
