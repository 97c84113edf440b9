/** `convert`: copy an image's guest bytes into a raw target, sparsely, at the speed of the disk. */

import { alignUp } from '../core/bytes.js';
import type { BlockDevice } from '../core/device.js';
import { IoError, UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { portableByteTests, type ByteTests } from './bytes-accel.js';
import { copyImage, type CopyStats } from './copy.js';
import { outsideTopLayer, walkRuns } from './extents.js';
import type { ProgressCallback } from './progress.js';
import type { WriteLimit } from './rate-limit.js';

/** qemu-img's default -S: zero runs of 4 KiB (one file system block) are left as holes. */
export const DEFAULT_SPARSE_SIZE = 4096;
/** qemu-img refuses -S above 16 MiB (and any value not a multiple of 512). */
export const MAX_SPARSE_SIZE = 16 * 1024 * 1024;
/** qemu-img's default -m: requests in flight. */
export const DEFAULT_PARALLEL = 8;
/** qemu-img allows 1..16 coroutines. */
export const MAX_PARALLEL = 16;
/** Bytes per request: large enough that per-call overhead vanishes, small enough for 16 in flight. */
export const DEFAULT_IO_SIZE = 2 * 1024 * 1024;
/** qemu sizes block devices in 512-byte sectors: a raw output is rounded up to a whole sector. */
export const SECTOR_SIZE = 512;

/** Output formats `convert` knows by name. */
const KNOWN_OUTPUT_FORMATS = new Set(['raw', 'qcow2']);

/** Options of `convert`. */
export interface ConvertOptions {
  /** -S: zero runs of this size are skipped (multiple of 512, ≤ 16 MiB; 0 writes everything). */
  sparseSize?: number;
  /** -m: requests in flight (1..16). */
  parallel?: number;
  /** Bytes per request. */
  ioSize?: number;
  /** -n: the target exists and keeps its size; it is not assumed to read as zeros. */
  existingTarget?: boolean;
  /** --target-is-zero (with -n): the existing target reads as zeros, so zeros need not be written. */
  targetIsZero?: boolean;
  /**
   * -n with -B: only what the source's top layer holds is written into the
   * existing target (zeros as zeros); the rest of the target stays as it is.
   */
  topLayerOnly?: boolean;
  /** Native byte tests; the portable ones by default. */
  tests?: ByteTests;
  /** `-r`: guest bytes written per second at most (none by default). */
  limit?: WriteLimit;
  onProgress?: ProgressCallback;
}

/** What `convert` did. */
export interface ConvertResult extends CopyStats {
  /** Size of the output in bytes. */
  outputSize: number;
}

/** Refuses output formats `convert` cannot write, with qemu-img's wording for unknown ones. */
export function checkOutputFormat(format: string): void {
  if (!KNOWN_OUTPUT_FORMATS.has(format)) throw new UsageError(`Unknown file format '${format}'`, { format });
  if (format !== 'raw' && format !== 'qcow2') throw new UnsupportedFeatureError(`output format ${format} is not supported yet`, { format });
}

/** Checks -S as qemu-img does. */
export function checkSparseSize(bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes < 0 || bytes % SECTOR_SIZE !== 0 || bytes > MAX_SPARSE_SIZE) {
    throw new UsageError(
      `Invalid buffer size for sparse output specified. Valid sizes are multiples of ${SECTOR_SIZE} up to ` +
        `${MAX_SPARSE_SIZE}. Select 0 to disable sparse detection (fully allocates output).`,
      { sparseSize: bytes },
    );
  }
}

/** Checks -m as qemu-img does. */
export function checkParallel(count: number): void {
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_PARALLEL) {
    throw new UsageError(`Invalid number of coroutines. Allowed number of coroutines is between 1 and ${MAX_PARALLEL}`);
  }
}

/** Size of the raw output for a guest of `size` bytes: whole sectors, as qemu-img writes it. */
export function rawOutputSize(size: number): number {
  return alignUp(size, SECTOR_SIZE);
}

/**
 * Converts `source` into the raw `target`. A new target is sized to the virtual
 * size first (so untouched ranges stay holes) and only non-zero data is written.
 */
export async function convertToRaw(source: Image, target: BlockDevice, options: ConvertOptions = {}): Promise<ConvertResult> {
  const settings = copySettings(options);
  const outputSize = rawOutputSize(source.size);
  if (options.existingTarget) {
    // In whole sectors, as qemu sizes both: a target ending inside the source's last sector is large enough.
    if (rawOutputSize(target.size) < outputSize) throw new UsageError('output file is smaller than input file').inFile(target.name);
  } else {
    if (!target.truncate) throw new IoError(`${target.name} cannot be resized`);
    // Only when not empty already: on ext4 a truncation to zero makes the final close flush the output.
    if (target.size > 0) await target.truncate(0);
    await target.truncate(outputSize);
  }
  const stats = await copyImage(source, target, {
    ...settings,
    targetIsZero: !options.existingTarget || options.targetIsZero === true,
    leave: options.topLayerOnly ? outsideTopLayer(source) : undefined,
  });
  // The source's last sector is written whole, as qemu-img writes it: its tail grows a target that ended inside it.
  if (options.existingTarget && target.size < outputSize) await target.truncate?.(outputSize);
  return { ...stats, outputSize: options.existingTarget ? target.size : outputSize };
}

/**
 * Converts `source` into the existing image `target` (convert -n with a qcow2
 * output), which keeps its size, format and options. As qemu-img does, the
 * source's range of the target is first made to read as zeros where it reads
 * otherwise (zero clusters; a version 2 image without a backing file
 * deallocates), unless `targetIsZero` says it does already; then only the
 * source's data is written. What lies past the source's size is left as it was.
 * With `topLayerOnly` nothing is zeroed first: what the top layer holds is
 * written, its zeros as zero writes, and the rest is left alone.
 */
export async function convertIntoImage(source: Image, target: Image, options: ConvertOptions = {}): Promise<ConvertResult> {
  const settings = copySettings(options);
  if (target.size < source.size) throw new UsageError('output file is smaller than input file').inFile(target.name);
  if (!target.writeZeroes) throw new IoError(`${target.name} cannot be zeroed`);
  const writeZeroes = target.writeZeroes.bind(target);
  const topLayer = options.topLayerOnly === true;
  if (!topLayer && !options.targetIsZero) {
    // Not held to -r: qemu-img makes the target read as zeros beneath its throttle (zero flags and freed clusters, mostly metadata).
    for await (const run of walkRuns(target, 0, source.size)) if (!run.zero) await writeZeroes(run.start, run.length);
  }
  const stats = await copyImage(source, target, {
    ...settings,
    // -n -B: nothing was zeroed; the top layer's zeros are made zero by the image's zero writes.
    targetIsZero: !topLayer,
    leave: topLayer ? outsideTopLayer(source) : undefined,
    writeZeroes: topLayer ? writeZeroes : undefined,
  });
  return { ...stats, outputSize: target.size };
}

/** The copy settings every convert takes from its options, defaults filled in, -S and -m checked as qemu-img checks them. */
function copySettings(options: ConvertOptions) {
  const sparseSize = options.sparseSize ?? DEFAULT_SPARSE_SIZE;
  const parallel = options.parallel ?? DEFAULT_PARALLEL;
  checkSparseSize(sparseSize);
  checkParallel(parallel);
  return {
    sparseSize,
    parallel,
    ioSize: options.ioSize ?? DEFAULT_IO_SIZE,
    tests: options.tests ?? portableByteTests,
    limit: options.limit,
    onProgress: options.onProgress,
  };
}
