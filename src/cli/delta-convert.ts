/** `convert -B` and `convert --delta-from`: a qcow2 overlay holding only what differs from its backing file. */

import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { parseOptionArgs } from '../core/options.js';
import { nodeByteTests } from '../node/byte-tests.js';
import { FileDevice } from '../node/file-device.js';
import { nodeHost } from '../node/host.js';
import { writeDelta } from '../ops/delta.js';
import { planImage } from '../ops/create.js';
import { checkQcow2Output } from '../ops/convert-qcow2.js';
import { dataFileCreator } from './named-files.js';
import type { Args } from './command.js';
import { openForCli } from './open.js';
import { namedFilePolicyOf, type NamedFilePolicy } from './policy.js';
import { createProgress, type ProgressMode } from './progress.js';
import { sourceFileAt } from './source-files.js';
import type { WriteLimit } from '../ops/rate-limit.js';
import type { BitmapCopy } from '../ops/bitmaps.js';

/** A delta conversion asked for on the command line. */
export interface DeltaRequest {
  /** Where to open the backing image from the working directory. */
  openPath: string;
  /** The name to record in the new image (resolves beside it). */
  recordedName: string;
  format?: string;
  /** -B: the source's top layer only. */
  topLayerOnly: boolean;
  options: Map<string, string>;
  /** -c: compress the clusters written. */
  compress: boolean;
  /** Which named files the backing chain may open (--backing-root). */
  policy: NamedFilePolicy;
}

/** The delta request in `args` for the output at `target` (undefined for a plain conversion), checked against the other flags. */
export function deltaRequest(args: Args, outputFormat: string, target: string): DeltaRequest | undefined {
  const options = parseOptionArgs(args.o as string | string[] | undefined);
  // As in qemu-img, -o backing_file=NAME[,backing_fmt=FMT] is -B NAME [-F FMT] by another name (-B wins).
  const backing = (args.B as string | undefined) ?? options.get('backing_file');
  const backingFormat = (args.F as string | undefined) ?? options.get('backing_fmt');
  options.delete('backing_file');
  options.delete('backing_fmt');
  const base = args['delta-from'] as string | undefined;
  if (backing === undefined && base === undefined) {
    if (backingFormat !== undefined) throw new UsageError('Backing format cannot be used without backing file');
    return undefined;
  }
  if (backing !== undefined && base !== undefined) throw new UsageError('-B and --delta-from cannot be used together');
  if (args.n === true) {
    if (base !== undefined) throw new UsageError('-n cannot be used with --delta-from');
    if (args['target-is-zero'] === true) throw new UsageError('Cannot use --target-is-zero when the destination image has a backing file');
    // -n -B: the existing target keeps its own backing file (see topLayerIntoTarget).
    return undefined;
  }
  if (outputFormat !== 'qcow2') throw new UsageError(`a backing file needs -O qcow2 (the ${outputFormat} format has no backing file)`);
  // As qemu-img (since 6.1): a new overlay names its backing format; probing it could misread a raw file.
  if (backing !== undefined && backingFormat === undefined) throw new UsageError('Use of backing file requires explicit backing format');
  const format = backingFormat;
  const policy = namedFilePolicyOf(args);
  if (backing !== undefined) {
    // qemu-img's -B: the name is recorded as given and resolves beside the output.
    const openPath = isAbsolute(backing) ? backing : join(dirname(target), backing);
    return { openPath, recordedName: backing, format, topLayerOnly: true, options, compress: args.c === true, policy };
  }
  // --delta-from names a file from the working directory; the image records it relative to itself.
  const recordedName = isAbsolute(base!) ? base! : relative(dirname(resolve(target)), resolve(base!));
  return { openPath: base!, recordedName, format, topLayerOnly: false, options, compress: args.c === true, policy };
}

/**
 * True for `convert -n -B`: as in qemu-img, the existing target is taken to
 * stand on the backing file already (its own backing file is not changed, and
 * the -B file is not opened), so only what the source's top layer holds is
 * written into it.
 */
export function topLayerIntoTarget(args: Args): boolean {
  return args.n === true && args.B !== undefined;
}

/** Writes the delta of `source` over the requested backing image into a new qcow2 file at `targetPath`. */
export async function convertDeltaCli(
  source: Image,
  targetPath: string,
  request: DeltaRequest,
  mode: ProgressMode,
  extra: { limit?: WriteLimit; bitmaps?: BitmapCopy } = {},
): Promise<void> {
  const base = await openForCli(request.openPath, { ...request.policy, format: request.format });
  try {
    const clash = await sourceFileAt(base, targetPath);
    if (clash !== undefined) throw new UsageError(`refusing to write over the backing chain file ${clash}`).inFile(targetPath);
    // Checked before the file is made: a bad option leaves an existing file as it was.
    checkQcow2Output({ compress: request.compress === true, options: request.options });
    await planImage({ format: 'qcow2', size: source.size, options: request.options, backingFile: request.recordedName, backingFormat: base.format, unsafe: true });
    const target = await FileDevice.open(targetPath, { create: true });
    const progress = createProgress(mode);
    try {
      await writeDelta(source, base, target, {
        backingFile: request.recordedName,
        backingFormat: base.format,
        options: request.options,
        topLayerOnly: request.topLayerOnly,
        compress: request.compress,
        host: nodeHost(),
        tests: nodeByteTests,
        limit: extra.limit,
        bitmaps: extra.bitmaps,
        createDataFile: dataFileCreator(targetPath),
        onProgress: (done, total) => progress.update(done, total),
      });
      progress.end();
    } finally {
      await target.close();
    }
  } finally {
    await base.close();
  }
}
