/** `measure`: how large a new image would be (qemu-img measure). */

import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { optionBoolean, rejectUnknownOptions } from '../core/options.js';
import { parseSize } from '../core/size.js';
import { bitmapBytes, fullyAllocatedBytes } from '../../formats/qcow2/measure.js';
import { PREALLOCATION_MODES, checkClusterSize, checkRefcountBits, l1EntriesFor } from '../../formats/qcow2/create.js';
import { MAX_L1_BYTES } from '../../formats/qcow2/limits.js';
import { Qcow2Image } from '../../formats/qcow2/image.js';
import { QCOW2_OPTIONS, qcow2CreateOptions } from './create.js';

/** The sizes qemu-img measure reports. */
export interface MeasureResult {
  required: number;
  fullyAllocated: number;
  /** Present when both the source and the target could hold persistent bitmaps. */
  bitmaps?: number;
}

/** What to measure: a size (`--size`) or a source image, for output format `format` with `-o` options. */
export interface MeasureRequest {
  format: string;
  options: Map<string, string>;
  size?: number;
  source?: Image;
}

const SECTOR = 512;

/** Measures a new image of `request.format`. */
export async function measure(request: MeasureRequest): Promise<MeasureResult> {
  if ((request.size === undefined) === (request.source === undefined)) {
    throw new UsageError('either --size N or an image must be given (not both)');
  }
  if (request.format === 'raw') return measureRaw(request);
  if (request.format === 'qcow2') return measureQcow2(request);
  throw new UnsupportedFeatureError(`measuring ${request.format} images is not supported`);
}

function measureRaw(request: MeasureRequest): MeasureResult {
  const required = request.source ? request.source.size : Math.ceil((request.size ?? 0) / SECTOR) * SECTOR;
  return { required, fullyAllocated: required };
}

/**
 * The checks qemu's qcow2 measure makes of the options, in its order and words,
 * which are not create's: it takes compat only as 0.10 or 1.1, and ignores the
 * combinations only creating refuses (lazy_refcounts on a version 2 image, say)
 * and the compression type.
 */
function checkMeasureOptions(options: Map<string, string>): void {
  const extendedL2 = optionBoolean(options.get('extended_l2'), 'extended_l2', false);
  checkClusterSize(parseSize(options.get('cluster_size') ?? '64k', 'cluster_size'), extendedL2);
  const compat = options.get('compat') ?? '1.1';
  if (compat !== '0.10' && compat !== '1.1') throw new UsageError(`Invalid compatibility level: '${compat}'`);
  const refcountBits = Number(options.get('refcount_bits') ?? '16');
  checkRefcountBits(refcountBits);
  if (compat === '0.10' && refcountBits !== 16) {
    throw new UsageError('Different refcount widths than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)');
  }
  const preallocation = options.get('preallocation') ?? 'off';
  if (!(PREALLOCATION_MODES as readonly string[]).includes(preallocation)) throw new UsageError(`invalid parameter value: ${preallocation}`);
}

async function measureQcow2(request: MeasureRequest): Promise<MeasureResult> {
  const options = new Map(request.options);
  const optionSize = options.get('size');
  options.delete('size');
  rejectUnknownOptions(options, QCOW2_OPTIONS, 'qcow2');
  checkMeasureOptions(options);
  options.delete('compression_type');
  const parsed = qcow2CreateOptions(options, 0);
  const clusterSize = parsed.clusterSize;
  let virtualSize = roundUp(request.size ?? (optionSize ? parseSize(optionSize, 'size') : 0), clusterSize);
  if (l1EntriesFor(virtualSize, clusterSize, parsed.extendedL2) * 8 > MAX_L1_BYTES) throw new UsageError('The image size is too large (try using a larger cluster size)');
  let required = 0;
  if (request.source) {
    virtualSize = roundUp(request.source.size, clusterSize);
    required = parsed.backingFile !== undefined ? virtualSize : await dataBytes(request.source, clusterSize);
  }
  if (parsed.preallocation === 'full' || parsed.preallocation === 'falloc') required = virtualSize;
  const fullyAllocated = fullyAllocatedBytes(virtualSize, clusterSize, Math.log2(parsed.refcountBits), parsed.extendedL2);
  const result: MeasureResult = { required: fullyAllocated - virtualSize + required, fullyAllocated };
  const source = request.source;
  if (parsed.version === 3 && source instanceof Qcow2Image && source.metadata.header.version === 3) {
    result.bitmaps = bitmapBytes(source.metadata.bitmaps, virtualSize, clusterSize);
  }
  return result;
}

/** Bytes of whole clusters holding data anywhere in the chain (zero and unallocated ranges skipped). */
async function dataBytes(source: Image, clusterSize: number): Promise<number> {
  let required = 0;
  let coveredTo = 0;
  for (const extent of await source.blockStatus(0, source.size)) {
    if (extent.kind !== 'data') continue;
    const start = Math.max(extent.start - (extent.start % clusterSize), coveredTo);
    const end = roundUp(extent.start + extent.length, clusterSize);
    if (end > start) required += end - start;
    coveredTo = Math.max(coveredTo, end);
  }
  return required;
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple;
}
