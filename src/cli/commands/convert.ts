/** `platter convert`: like `qemu-img convert`, to raw or qcow2 (with -c, compressed). */

import type { Args, CliCommand } from '../command.js';
import { parseSize } from '../../core/size.js';
import { UnsupportedFeatureError, UsageError } from '../../core/errors.js';
import { checkOutputFormat, checkParallel, checkSparseSize, convertIntoImage, convertToRaw, DEFAULT_PARALLEL, DEFAULT_SPARSE_SIZE } from '../../ops/convert.js';
import type { Image } from '../../core/image.js';
import { FileDevice } from '../../node/file-device.js';
import { nodeHost } from '../../node/host.js';
import { parseOptionArgs } from '../../core/options.js';
import { checkQcow2Output, convertToQcow2 } from '../../ops/convert-qcow2.js';
import { dataFileCreator } from '../named-files.js';
import { nodeByteTests } from '../../node/byte-tests.js';
import { boundDecoding } from '../../node/codec-threads.js';
import { sourceFileAt } from '../source-files.js';
import { openForCli } from '../open.js';
import { namedFilePolicyOf, withNamedFilePolicy } from '../policy.js';
import { printText, withFormat } from '../output.js';
import { CREATE_OPTIONS, FILE_OPTION_NAMES, NOCOW_NOT_APPLIED, asksNocow, compatVersion, fileSettings, planImage } from '../../ops/create.js';
import { renderOptionHelp } from '../render/option-help.js';
import { createProgress, progressMode, withProgress } from '../progress.js';
import { convertDeltaCli, deltaRequest, topLayerIntoTarget } from '../delta-convert.js';
import { SNAPSHOT_PARAM_HELP, snapshotOf } from '../snapshot-param.js';
import { withForceShare } from '../force-share.js';
import { salvaging, type Loss } from '../../ops/salvage.js';
import { concatImages } from '../../ops/concat.js';
import { parseRateLimit, type WriteLimit } from '../../ops/rate-limit.js';
import { warn } from '../report.js';
import { withCacheMode, withSourceCacheMode, writeFlushes } from '../cache-modes.js';
import { bitmapsToCopy, checkBitmapTarget, copyBitmaps, type BitmapCopy } from '../../ops/bitmaps.js';
import { imageSpec } from '../../core/block-options.js';
import { withImageOpts } from '../image-opts.js';

const command: CliCommand = {
  // The files are checked by hand: `-O qcow2 -o help` needs none.
  command: 'convert [files..]',
  describe: 'Convert an image to raw or qcow2, sparsely',
  builder: (yargs) =>
    withSourceCacheMode(withCacheMode(withForceShare(withProgress(withNamedFilePolicy(withImageOpts(withFormat(yargs), [{ positional: 'files', exceptLast: 1 }])))), 'unsafe'))
      .positional('files', {
        type: 'string',
        array: true,
        describe: 'Source image, then the output file; several sources are copied end to end into one output, as qemu-img concatenates them',
      })
      .option('O', { type: 'string', requiresArg: true, describe: 'Output format (raw, qcow2; default raw)' })
      .option('target-image-opts', {
        type: 'boolean',
        describe: 'With -n: the output is named by qemu block options (driver=qcow2,file.filename=disk.qcow2), its driver the output format',
      })
      .option('o', { type: 'string', requiresArg: true, describe: 'Options of a qcow2 output, e.g. cluster_size=64K,compression_type=zstd (may repeat)' })
      .option('c', { type: 'boolean', default: false, describe: 'Compress every data cluster (qcow2 output)' })
      .option('S', {
        type: 'string',
        requiresArg: true,
        describe: 'Zero runs of this size are left as holes (multiple of 512; 0 writes every byte; default 4k)',
      })
      .option('C', {
        type: 'boolean',
        default: false,
        describe: "Copy offloading, as qemu-img takes it: checked, and otherwise without effect (portable file APIs have no copy_file_range; the data goes through memory)",
      })
      .option('r', { type: 'string', requiresArg: true, describe: 'Write at most this many guest bytes per second (k, M, G suffixes; 0: no limit)' })
      .option('m', { type: 'number', requiresArg: true, default: DEFAULT_PARALLEL, describe: 'Requests in flight (1..16)' })
      .option('l', {
        type: 'string',
        requiresArg: true,
        describe: `Convert ${SNAPSHOT_PARAM_HELP}`,
      })
      .option('n', { type: 'boolean', default: false, describe: 'Write into an existing target (raw, or a qcow2 image of at least the source size, which keeps its options); do not create it' })
      .option('target-is-zero', { type: 'boolean', default: false, describe: 'With -n: the existing target reads as zeros, so zero ranges are not written' })
      .option('bitmaps', { type: 'boolean', default: false, describe: "Copy the source's persistent dirty bitmaps into the qcow2 output" })
      .option('skip-broken-bitmaps', { type: 'boolean', default: false, describe: 'With --bitmaps: leave out inconsistent bitmaps (with a warning) instead of failing' })
      .option('salvage', {
        type: 'boolean',
        default: false,
        describe: 'Write zeros where the source cannot be read (a damaged cluster) and go on, with a warning for each run of lost sectors',
      })
      .option('q', { alias: 'quiet', type: 'boolean', default: false, describe: 'Print nothing (no -p progress)' })
      .option('W', {
        type: 'boolean',
        default: false,
        describe: 'Allow out-of-order writes to a qcow2 output (a raw output is always written as reads finish)',
      })
      .option('B', { type: 'string', requiresArg: true, describe: "Output is a qcow2 overlay on this backing file (resolved beside the output); ranges the source's top layer does not hold are left to it (a source without a backing file reads zeros there, and so does the output). With -n: only the source's top layer is written into the existing target" })
      .option('delta-from', { type: 'string', requiresArg: true, describe: 'Output is a qcow2 overlay on this base holding only the clusters where the source differs from it' })
      .option('F', { type: 'string', requiresArg: true, describe: 'Format of the -B backing file (required with -B, as in qemu-img) or of the --delta-from base (probed when left out)' })
      .example('platter convert -O raw disk.qcow2 disk.raw', 'Sparse raw copy of a qcow2 image')
      .example('platter convert -p -O raw disk.qcow2 disk.img', 'The same, with a progress line')
      .example('platter convert -l before-upgrade -O raw vm.qcow2 old.raw', 'Convert the disk as it was in a snapshot')
      .example('platter convert --progress=json -S 0 -O raw disk.qcow2 full.img', 'Fully allocated output, JSON progress on stderr')
      .example('platter convert -O qcow2 disk.raw disk.qcow2', 'A qcow2 copy: zero and unallocated ranges take no space')
      .example('platter convert -c -O qcow2 -o compression_type=zstd disk.raw small.qcow2', 'A compressed qcow2 copy for shipping')
      .example('platter convert -t writeback -O qcow2 disk.raw disk.qcow2', 'Flush the output to disk before exiting')
      .example('platter convert --salvage -O raw damaged.qcow2 rescued.raw', 'Copy what can be read of a damaged image, zeros elsewhere')
      .example('platter convert -r 50M -O raw disk.qcow2 disk.raw', 'Copy at most 50 MiB per second, to spare a shared disk')
      .example('platter convert --bitmaps -O qcow2 vm.qcow2 copy.qcow2', 'A copy that keeps the dirty bitmaps incremental backups rely on')
      .example('platter convert -O raw boot.raw root.qcow2 whole.raw', 'One raw disk of two images, the second after the first')
      .example('platter convert -O qcow2 -o help', 'The options of a qcow2 output')
      .example('platter convert --backing-root /srv/uploads -O raw /srv/uploads/vm.qcow2 vm.raw', 'Follow backing files only inside /srv/uploads'),
  async handler(args) {
    const output = outputOf(args);
    const outputFormat = output.format;
    checkOutputFormat(outputFormat);
    const options = parseOptionArgs(args.o as string | string[] | undefined);
    if (options.has('help') || options.has('?')) {
      printText(renderOptionHelp(outputFormat, CREATE_OPTIONS[outputFormat as 'raw' | 'qcow2']));
      return;
    }
    ignoreSizeOption(options);
    const files = ((args.files as string[] | undefined) ?? []).map(String);
    if (files.length < 2) throw new UsageError('Must specify image file name');
    const sourcePaths = files.slice(0, -1);
    const targetPath = output.name(files.at(-1)!);
    const sparseSize = checkFlags(args, outputFormat, options);
    if (asksNocow(options)) warn(`${targetPath}: ${NOCOW_NOT_APPLIED}`);
    const limit = args.r === undefined ? undefined : parseRateLimit(String(args.r));
    const opened = await openSources(sourcePaths, args);
    // No more can be decoded than the sources hold: a small convert need not boot codec threads.
    boundDecoding(opened.reduce((sum, image) => sum + image.size, 0));
    try {
      const { source, delta, bitmaps } = await prepareSources(opened, sourcePaths, { path: targetPath, format: outputFormat, options }, args);
      const plan: OutputPlan = { path: targetPath, format: outputFormat, options, sparseSize, limit, bitmaps };
      if (delta) return await convertDeltaCli(source, targetPath, delta, progressMode(args), { limit, bitmaps });
      if (args.n === true && outputFormat === 'qcow2') return await convertIntoQcow2(source, plan, args);
      await convertToFile(source, plan, args);
    } finally {
      await Promise.all(opened.map((image) => image.close()));
    }
  },
};

/** Where and how the output is written. */
interface OutputPlan {
  path: string;
  format: string;
  /** -o options of a new qcow2 output. */
  options: Map<string, string>;
  sparseSize: number;
  limit: WriteLimit | undefined;
  bitmaps: BitmapCopy | undefined;
}

/**
 * The sources as one image to copy (at the snapshot asked for, salvaging if
 * asked), the delta request and the bitmaps, checked as qemu-img checks them
 * once the sources are open; an output that is one of the sources is refused.
 */
async function prepareSources(opened: Image[], paths: string[], output: { path: string; format: string; options: Map<string, string> }, args: Args) {
  if (opened.length > 1 && args.l !== undefined) throw new UsageError('No support for concatenating multiple snapshot');
  const delta = deltaRequest(args, output.format, output.path);
  if (opened.length > 1 && delta) throw new UsageError('Having a backing file for the target makes no sense when concatenating multiple input images');
  const chosen = args.l === undefined ? opened : [await snapshotOf(opened[0]!, String(args.l))];
  let clash: string | undefined;
  for (const image of chosen) clash ??= await sourceFileAt(image, output.path);
  const bitmaps = args.bitmaps === true ? await bitmapsOf(opened, output.format, output.options, args) : undefined;
  if (clash !== undefined) throw new UsageError(`refusing to convert onto the source image ${clash}`).inFile(output.path);
  const readable = args.salvage === true ? chosen.map((image, index) => salvaging(image, (loss) => warn(salvageWarning(paths[index]!, loss)))) : chosen;
  return { source: readable.length === 1 ? readable[0]! : concatImages(readable), delta, bitmaps };
}

/** A new output file (or, with -n, an existing raw one), raw or qcow2. */
async function convertToFile(source: Image, plan: OutputPlan, args: Args): Promise<void> {
  const existingTarget = args.n === true;
  const flushes = writeFlushes(args);
  // The output's options are checked before the file is made: a bad one leaves an existing file as it was.
  if (plan.format === 'qcow2') {
    checkQcow2Output({ compress: args.c === true, options: plan.options });
    await planImage({ format: 'qcow2', size: source.size, options: plan.options }).catch((error: unknown) =>
      // qemu-img's words for a target its driver will not create.
      Promise.reject(error instanceof UsageError ? new UsageError(`error while converting qcow2: ${error.message}`).inFile(plan.path) : error),
    );
  }
  const target = await FileDevice.open(plan.path, existingTarget ? { writable: true, flushes } : { create: true, flushes });
  const progress = createProgress(progressMode(args));
  const onProgress = (done: number, total: number) => progress.update(done, total);
  try {
    if (plan.format === 'qcow2') {
      await convertToQcow2(source, target, {
        options: plan.options,
        compress: args.c === true,
        host: nodeHost(),
        tests: nodeByteTests,
        unordered: args.W === true,
        fullyAllocated: plan.sparseSize === 0,
        sparseSize: plan.sparseSize,
        limit: plan.limit,
        bitmaps: plan.bitmaps,
        createDataFile: dataFileCreator(plan.path),
        onProgress,
      });
    } else {
      await convertToRaw(source, target, {
        sparseSize: plan.sparseSize,
        parallel: args.m as number,
        existingTarget,
        // An existing target that is one hole reads as zeros already: its zeros need not be written (nor allocated).
        targetIsZero: args['target-is-zero'] === true || (existingTarget && (await target.holdsNoData())),
        topLayerOnly: topLayerIntoTarget(args),
        tests: nodeByteTests,
        limit: plan.limit,
        onProgress,
      });
      await target.flush();
    }
    progress.end();
  } finally {
    await target.close();
  }
}

/** --bitmaps: the bitmaps of the one source, checked as qemu-img checks them before the output is made. */
async function bitmapsOf(opened: Image[], outputFormat: string, options: Map<string, string>, args: Args): Promise<BitmapCopy> {
  if (opened.length > 1) throw new UsageError('Copying bitmaps only possible with single source');
  const copy = await bitmapsToCopy(opened[0]!, args['skip-broken-bitmaps'] === true, warn);
  // A new version 2 image has no room for bitmaps (qemu-img says it of the driver); -n checks the image itself.
  const compat = options.get('compat');
  const version2 = compat !== undefined && compatVersion(compat) === 2;
  if (outputFormat !== 'qcow2' || version2) throw new UsageError(`Format driver '${outputFormat}' does not support bitmaps`);
  return copy;
}

/**
 * The output's format, and how its name is read: a file name, or with
 * --target-image-opts (which needs -n and takes the format from the driver)
 * qemu block options.
 */
function outputOf(args: Args): { format: string; name(word: string): string } {
  if (args['target-image-opts'] !== true) return { format: (args.O as string | undefined) ?? 'raw', name: (word) => word };
  if (args.n !== true) throw new UsageError('--target-image-opts requires use of -n flag');
  if (args.O !== undefined) throw new UsageError('--image-opts and --format are mutually exclusive');
  const files = ((args.files as string[] | undefined) ?? []).map(String);
  const spec = files.length < 2 ? undefined : imageSpec(files.at(-1)!);
  // Not probed: a qcow2 image taken for raw would have its metadata overwritten.
  if (spec && spec.format === undefined) throw new UsageError("the output's driver must be given with --target-image-opts (driver=qcow2 or driver=raw)");
  // The output is written as a file from its start: a part of one would be written in the wrong place.
  if (spec?.window) throw new UnsupportedFeatureError("an output that is a part of a file (the raw driver's offset and size) is not supported");
  return { format: spec?.format ?? 'raw', name: () => spec!.path };
}

/** Opens every source (with -f, all of that format), in order; a failure closes those already open. */
async function openSources(paths: string[], args: Args): Promise<Image[]> {
  const opened: Image[] = [];
  try {
    for (const path of paths) opened.push(await openForCli(path, { ...namedFilePolicyOf(args), format: args.format as string | undefined }));
  } catch (error) {
    await Promise.all(opened.map((image) => image.close()));
    throw error;
  }
  return opened;
}

/**
 * The output is as large as the sources, as qemu-img convert makes it: an
 * `-o size=` must be a size but is otherwise ignored (a smaller one would cut
 * the guest's disk short, a larger one change it).
 */
function ignoreSizeOption(options: Map<string, string>): void {
  const size = options.get('size');
  if (size === undefined) return;
  parseSize(size, 'image size');
  options.delete('size');
}

/** Refuses the combinations qemu-img refuses, with its messages, in its order; returns the -S size in bytes. */
function checkFlags(args: Args, outputFormat: string, options: Map<string, string>): number {
  if (args.n === true && args.o !== undefined) throw new UsageError('-o has no effect when skipping image creation');
  if (outputFormat !== 'qcow2' && args.c === true) throw new UsageError('Compression not supported for this file format');
  const rawFull = outputFormat === 'raw' && rawPreallocation(options) === 'full';
  if (outputFormat === 'qcow2' && args.n === true && args.c === true) {
    throw new UsageError('-c is not supported with -n and -O qcow2 (compressed clusters go only into a new image)');
  }
  if (args['target-is-zero'] === true && args.n !== true) throw new UsageError('--target-is-zero requires use of -n flag');
  if (args['skip-broken-bitmaps'] === true && args.bitmaps !== true) throw new UsageError('Use of --skip-broken-bitmaps requires --bitmaps');
  if (args.C === true && args.c === true) throw new UsageError('Cannot enable copy offloading when -c is used');
  if (args.C === true && args.S !== undefined) throw new UsageError('Cannot enable copy offloading when -S is used');
  checkParallel(args.m as number);
  // A raw output preallocated in full holds every byte: what -S 0 writes.
  if (rawFull) return 0;
  return args.S === undefined ? DEFAULT_SPARSE_SIZE : parseSparse(args.S as string);
}

/** What --salvage says about sectors it could not read (qemu-img warns once per sector; runs are joined here). */
function salvageWarning(path: string, loss: Loss): string {
  return `${path}: error while reading offset ${loss.offset} (${loss.length} bytes written as zeros): ${loss.reason}`;
}

/** convert -n -O qcow2: into the existing image at the plan's path, which keeps its size and options. */
async function convertIntoQcow2(source: Image, plan: OutputPlan, args: Args): Promise<void> {
  const target = await openForCli(plan.path, { ...namedFilePolicyOf(args), format: 'qcow2', writable: true, flushes: writeFlushes(args) });
  const progress = createProgress(progressMode(args));
  try {
    // Before anything is written: a refused copy leaves the image as it was.
    if (plan.bitmaps) checkBitmapTarget(plan.bitmaps, target);
    await convertIntoImage(source, target, {
      sparseSize: plan.sparseSize,
      parallel: args.m as number,
      targetIsZero: args['target-is-zero'] === true,
      topLayerOnly: topLayerIntoTarget(args),
      tests: nodeByteTests,
      limit: plan.limit,
      onProgress: (done, total) => progress.update(done, total),
    });
    if (plan.bitmaps) await copyBitmaps(plan.bitmaps, target);
    await target.flush?.();
    progress.end();
  } finally {
    await target.close();
  }
}

/**
 * The option a raw output takes (`-o preallocation=MODE`, and the file
 * options, checked), as qemu's file driver takes it: `full` writes every
 * byte; `falloc` cannot reserve blocks without fallocate in a portable file
 * API and leaves holes, which read the same; anything else is refused with
 * qemu-img's words.
 */
function rawPreallocation(options: Map<string, string>): string {
  for (const name of options.keys()) if (name !== 'preallocation' && !FILE_OPTION_NAMES.includes(name)) throw new UsageError(`Invalid parameter '${name}'`);
  fileSettings(options);
  const mode = options.get('preallocation') ?? 'off';
  if (mode === 'metadata') throw new UsageError('Unsupported preallocation mode: metadata');
  if (!['off', 'falloc', 'full'].includes(mode)) throw new UsageError(`invalid parameter value: ${mode}`);
  return mode;
}

/** Parses -S: a size with qemu's suffixes, checked as qemu-img does. */
function parseSparse(text: string): number {
  let bytes: number;
  try {
    bytes = parseSize(text, 'sparse size');
  } catch {
    bytes = -1;
  }
  checkSparseSize(bytes);
  return bytes;
}

export default command;
