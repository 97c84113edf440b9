/**
 * Delta images: a new qcow2 overlay on a base image that holds only the
 * clusters whose guest content differs from the base (convert --delta-from,
 * and qemu-img convert -B). Nothing the two images both read as zeros is read.
 */

import { borrowed } from '../core/borrowed.js';
import type { BlockDevice } from '../core/device.js';
import type { Extent, Image, ImageHost } from '../core/image.js';
import { openQcow2, type Qcow2Image } from '../../formats/qcow2/index.js';
import type { ByteTests } from './bytes-accel.js';
import { DIFF_CHUNK, differingRuns, readOrZero } from './chain-diff.js';
import { createImage, type CreateRequest } from './create.js';
import { compressCluster, compressorFor, storeStream, type Compressor } from './convert-qcow2.js';
import { walkExtents } from './extents.js';
import type { ProgressCallback } from './progress.js';
import type { WriteLimit } from './rate-limit.js';
import { copyBitmaps, type BitmapCopy } from './bitmaps.js';

/** How to write a delta. */
export interface DeltaOptions {
  /** The backing file name recorded in the delta (relative names resolve against the delta's directory). */
  backingFile: string;
  /** The base's format, recorded in the backing-format extension. */
  backingFormat: string;
  /** `-o` options of the new image (cluster_size, compat, ...). */
  options?: Map<string, string>;
  /**
   * qemu-img convert -B: ranges the source's own top layer does not hold are
   * taken to be the base's already and are not looked at, unless the source
   * has no backing file (it then reads zeros there).
   */
  topLayerOnly?: boolean;
  /** `-c`: every differing cluster that holds data is stored compressed (as is when that does not shrink it). */
  compress?: boolean;
  host: ImageHost;
  tests?: ByteTests;
  /** `-r`: guest bytes written per second at most (none by default). */
  limit?: WriteLimit;
  /** `--bitmaps`: persistent bitmaps to copy into the new image once the data is in. */
  bitmaps?: BitmapCopy;
  /** Makes the external data file a `data_file=` option names; without it such an option is refused. */
  createDataFile?: CreateRequest['createDataFile'];
  onProgress?: ProgressCallback;
}

/** What the delta holds. */
export interface DeltaResult {
  /** Guest bytes written into the delta (data and zero clusters). */
  bytesWritten: number;
}

/** Writes onto the empty `device` a qcow2 overlay on `base` that reads exactly like `source`. */
export async function writeDelta(source: Image, base: Image, device: BlockDevice, options: DeltaOptions): Promise<DeltaResult> {
  await createImage(device, {
    format: 'qcow2',
    size: source.size,
    options: options.options ?? new Map(),
    backingFile: options.backingFile,
    backingFormat: options.backingFormat,
    unsafe: true,
    createDataFile: options.createDataFile,
  });
  const host: ImageHost = { ...options.host, openBacking: async () => borrowed(base) };
  const delta = await openQcow2(device, { host, writable: true });
  try {
    const compressor = options.compress ? compressorFor(delta, options.host.codecs) : undefined;
    const bytesWritten = await writeDifferences(source, base, delta, options, compressor);
    if (compressor) await delta.writer!.endCompressedWrites();
    if (options.bitmaps) await copyBitmaps(options.bitmaps, delta);
    return { bytesWritten };
  } finally {
    await delta.close();
  }
}

/** Compares source and base over every run where either may hold data, and writes the differing clusters. */
async function writeDifferences(
  source: Image,
  base: Image,
  delta: Qcow2Image,
  options: DeltaOptions,
  compressor: Compressor | undefined,
): Promise<number> {
  const clusterSize = delta.metadata.clusterSize;
  const sourceBytes = new Uint8Array(DIFF_CHUNK);
  const baseBytes = new Uint8Array(DIFF_CHUNK);
  let written = 0;
  let done = 0; // guest bytes below this offset are settled
  options.onProgress?.(0, source.size);
  for await (const run of runsToCompare(source, base, options.topLayerOnly === true)) {
    const end = Math.min(source.size, Math.ceil((run.start + run.length) / clusterSize) * clusterSize);
    for (let at = Math.max(done, run.start - (run.start % clusterSize)); at < end; ) {
      const next = Math.min(end, (Math.floor(at / DIFF_CHUNK) + 1) * DIFF_CHUNK);
      const wanted = sourceBytes.subarray(0, next - at);
      const below = baseBytes.subarray(0, next - at);
      await readOrZero(source, at, wanted);
      await readOrZero(base, at, below);
      for (const [from, to] of differingRuns(wanted, below, at, clusterSize, options.tests)) {
        const bytes = wanted.subarray(from, to);
        await options.limit?.take(bytes.length);
        if (isZero(bytes, options.tests)) await delta.writeZeroes(at + from, to - from);
        else if (compressor) await writeCompressedRun(delta, at + from, bytes, compressor, options.tests);
        else await delta.write(at + from, bytes.slice());
        written += to - from;
      }
      at = next;
    }
    done = Math.max(done, end);
    options.onProgress?.(done, source.size);
  }
  options.onProgress?.(source.size, source.size);
  return written;
}

/**
 * Stores `bytes` (whole clusters from `offset`, but for the image's last one)
 * cluster by cluster, as qemu-img convert -c does: a zero cluster as a zero
 * cluster, any other compressed, or as is when its stream would not be
 * smaller. The clusters compress at once and are stored in guest order.
 */
async function writeCompressedRun(delta: Qcow2Image, offset: number, bytes: Uint8Array, compressor: Compressor, tests: ByteTests | undefined): Promise<void> {
  const clusterSize = delta.metadata.clusterSize;
  const clusters: Array<{ at: number; bytes: Uint8Array; stream?: Promise<Uint8Array> }> = [];
  for (let at = 0; at < bytes.length; at += clusterSize) {
    const cluster = bytes.subarray(at, Math.min(at + clusterSize, bytes.length));
    if (isZero(cluster, tests)) {
      clusters.push({ at, bytes: cluster });
      continue;
    }
    const stream = compressCluster(compressor, cluster, clusterSize);
    stream.catch(() => {}); // awaited below, in order
    clusters.push({ at, bytes: cluster, stream });
  }
  for (const cluster of clusters) {
    const stream = cluster.stream && (await cluster.stream);
    if (!stream) await delta.writeZeroes(offset + cluster.at, cluster.bytes.length);
    else await storeStream(delta, offset + cluster.at, cluster.bytes.slice(), stream);
  }
}

function isZero(bytes: Uint8Array, tests: ByteTests | undefined): boolean {
  if (tests) return tests.isZero(bytes, 0, bytes.length);
  for (const byte of bytes) if (byte !== 0) return false;
  return true;
}

/**
 * True when the source extent may make the source differ from the base there.
 * With `topLayerOnly` that is what the top layer holds, and, when the source
 * has no backing file, its unallocated runs too: they read as zeros, and
 * qemu-img convert -B writes them as zeros over the new backing file. (Runs past
 * the end of a shorter backing file it leaves to the new one.)
 */
function sourceMatters(extent: Extent, topLayerOnly: boolean, hasBacking: boolean): boolean {
  if (!topLayerOnly) return true;
  return extent.kind === 'unallocated' ? !hasBacking : extent.depth === 0;
}

/**
 * Runs of the guest where the source and base can differ: the source holds
 * something that matters there, and either side stores data. Elsewhere both
 * read as zeros (or, with `topLayerOnly`, the source reads the base).
 */
async function* runsToCompare(source: Image, base: Image, topLayerOnly: boolean): AsyncGenerator<{ start: number; length: number }> {
  const baseEnd = Math.min(base.size, source.size);
  const baseExtents = walkExtents(base, 0, baseEnd);
  let baseExtent = baseEnd > 0 ? (await baseExtents.next()).value as Extent | undefined : undefined;
  for await (const extent of walkExtents(source, 0, source.size)) {
    if (!sourceMatters(extent, topLayerOnly, source.backing !== undefined)) continue;
    const end = extent.start + extent.length;
    if (extent.kind === 'data') {
      yield { start: extent.start, length: extent.length };
      continue;
    }
    // The source reads zeros here: only where the base stores data is there a difference.
    for (let at = extent.start; at < end; ) {
      while (baseExtent && baseExtent.start + baseExtent.length <= at) baseExtent = (await baseExtents.next()).value as Extent | undefined;
      if (!baseExtent || baseExtent.start >= end) break;
      const from = Math.max(at, baseExtent.start);
      const to = Math.min(end, baseExtent.start + baseExtent.length);
      if (baseExtent.kind === 'data') yield { start: from, length: to - from };
      at = to;
    }
  }
}
