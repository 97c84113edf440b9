/** `platter create`: like `qemu-img create`. */

import { parseOptionArgs } from '../../core/options.js';
import { parseSize } from '../../core/size.js';
import { CREATE_OPTIONS, NOCOW_NOT_APPLIED, asksNocow, planImage, writeImage, type CreateRequest } from '../../ops/create.js';
import { warn } from '../report.js';
import { withObjects } from '../objects.js';
import { PlatterError, UsageError } from '../../core/errors.js';
import { renderOptionHelp } from '../render/option-help.js';
import { FileDevice, removeFile } from '../../node/file-device.js';
import { openImageFile } from '../../node/open.js';
import type { CliCommand } from '../command.js';
import { printText } from '../output.js';
import { besideImage, dataFileCreator, namesImageItself } from '../named-files.js';

/**
 * Refuses an image that would name itself as its backing file (qemu-img's
 * words; it compares the names only, platter also the files they resolve to)
 * or as its external data file (whose guest writes would land on its metadata).
 */
async function refuseSelfReference(path: string, backing: string | undefined, dataFile: string | undefined): Promise<void> {
  if (backing !== undefined && (backing === path || (await namesImageItself(path, backing)))) {
    throw new UsageError('Error: Trying to create an image with the same filename as the backing file').inFile(path);
  }
  if (dataFile && (await namesImageItself(path, dataFile))) {
    throw new UsageError(`the external data file '${dataFile}' is the image itself`).inFile(path);
  }
}

const command: CliCommand = {
  // The image is checked by hand: `-o help` needs none.
  command: 'create [image] [size]',
  describe: 'Create a new, empty image',
  builder: (yargs) =>
    withObjects(yargs)
      .positional('image', { type: 'string', describe: 'Image file to create' })
      .positional('size', { type: 'string', describe: "Virtual size (bytes, or with a suffix K, M, G, T); default: the backing file's" })
      .option('f', { alias: 'format', type: 'string', default: 'raw', describe: 'Image format (raw, qcow2)', requiresArg: true })
      .option('o', { alias: 'options', type: 'string', describe: 'Format options, e.g. cluster_size=64K,compat=1.1 (may repeat)', requiresArg: true })
      .option('b', { alias: 'backing', type: 'string', describe: 'Backing file (qcow2)', requiresArg: true })
      .option('F', { alias: 'backing-format', type: 'string', describe: 'Format of the backing file (required with -b)', requiresArg: true })
      .option('u', { alias: 'unsafe', type: 'boolean', default: false, describe: 'Do not open the backing file (SIZE is then required)' })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing' })
      .example('platter create disk.img 10G', 'A sparse 10 GiB raw image')
      .example('platter create -f qcow2 disk.qcow2 20G', 'A 20 GiB qcow2 image, laid out as qemu-img lays it out')
      .example('platter create -f qcow2 -o cluster_size=4K,refcount_bits=1,lazy_refcounts=on small.qcow2 64M', 'qcow2 options as qemu-img takes them')
      .example('platter create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2', 'An overlay as large as its backing file')
      .example('platter create -f qcow2 -o help', 'The options a qcow2 image takes'),
  async handler(args) {
    const format = args.format as string;
    const options = parseOptionArgs(args.options as string | string[] | undefined);
    if (options.has('help') || options.has('?')) {
      if (format !== 'raw' && format !== 'qcow2') throw new UsageError(`creating ${format} images is not supported`);
      printText(renderOptionHelp(format, CREATE_OPTIONS[format]));
      return;
    }
    if (args.image === undefined) throw new UsageError('Expecting image file name');
    const path = args.image as string;
    const size = args.size === undefined ? undefined : parseSize(String(args.size), 'image size');
    await refuseSelfReference(path, args.backing as string | undefined, options.get('data_file'));
    const request: CreateRequest = {
      format,
      size,
      options,
      backingFile: args.backing as string | undefined,
      backingFormat: args['backing-format'] as string | undefined,
      unsafe: args.unsafe === true,
      async backingSize(name, backingFormat) {
        const backing = await openImageFile(besideImage(path, name), { format: backingFormat, noBacking: true });
        try {
          return backing.size;
        } finally {
          await backing.close();
        }
      },
      createDataFile: dataFileCreator(path),
    };
    // Everything is checked before the file is made: a bad option leaves an existing file as it was.
    const formatting = (settings: [string, string][]) => {
      if (!args.quiet) printText(`Formatting '${path}', ${settings.map(([key, value]) => `${key}=${value}`).join(' ')}\n`);
    };
    const plan = await planImage(request).catch((error: unknown) => {
      if (!(error instanceof PlatterError)) return Promise.reject(error);
      // As qemu-img: values its driver refuses are refused after the "Formatting" line.
      const settings = error.data['formatting'] as [string, string][] | undefined;
      if (settings) formatting(settings);
      return Promise.reject(error.inFile(path));
    });
    if (asksNocow(options)) warn(`${path}: ${NOCOW_NOT_APPLIED}`);
    const device = await FileDevice.open(path, { create: true });
    let result;
    try {
      result = await writeImage(device, plan, request);
      await device.flush();
    } catch (error) {
      // As qemu-img does: no half-made image is left behind (nor the old file, truncated already).
      await device.close().catch(() => {});
      await removeFile(path).catch(() => {});
      throw error;
    }
    await device.close();
    formatting(result.settings);
  },
};

export default command;
