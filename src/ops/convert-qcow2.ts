/**
 * Copying an image into a new qcow2 image (qemu-img convert -O qcow2 [-c]):
 * block status drives the copy, so zero and unallocated ranges allocate
 * nothing and are never read; with compression every data cluster is stored as
 * a compressed stream, or as is when compressing does not shrink it.
 */

import { readFully, type BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import { InFlight } from '../core/in-flight.js';
import { settleAll, Slots } from '../core/slots.js';
import type { Codecs, Image, ImageHost } from '../core/image.js';
import { openQcow2, type Qcow2Image } from '../../formats/qcow2/index.js';
import { SUBCLUSTERS_PER_CLUSTER } from '../../formats/qcow2/limits.js';
import { createImage, type CreateRequest } from './create.js';
import { alignedBuffer } from './aligned.js';
import { nonZeroRuns, portableByteTests, type ByteTests } from './bytes-accel.js';
import { pipeline } from './pipeline.js';
import { WRITES_IN_FLIGHT } from './copy.js';
import { DEFAULT_SPARSE_SIZE } from './convert.js';
import type { WriteLimit } from './rate-limit.js';
import { copyBitmaps, type BitmapCopy } from './bitmaps.js';

/** How to convert. */
export interface Qcow2ConvertOptions {
  /** `-o` options of the new image (cluster_size, compat, compression_type, ...). */
  options: Map<string, string>;
  /** `-c`: compress every data cluster. */
  compress: boolean;
  host: ImageHost;
  /** Native byte tests; the portable ones by default. */
  tests?: ByteTests;
  /** `-W`: write chunks as their reads finish, not in guest order (the clusters then lie out of order). */
  unordered?: boolean;
  /** `-S 0`: every cluster is written, zeros and unallocated ranges too (a fully allocated image, as qemu-img makes it). */
  fullyAllocated?: boolean;
  /**
   * `-S`: the smallest zero run left unwritten (default 4 KiB). Without
   * extended L2 entries whole zero clusters are left out whatever it is; with
   * them, zero runs of whole subclusters at least this long stay unallocated.
   */
  sparseSize?: number;
  /** `-r`: guest bytes written per second at most (none by default). */
  limit?: WriteLimit;
  /** `--bitmaps`: persistent bitmaps to copy into the new image once the data is in. */
  bitmaps?: BitmapCopy;
  /** Makes the external data file a `data_file=` option names (the create's callback); without it such an option is refused. */
  createDataFile?: CreateRequest['createDataFile'];
  /** Called as the copy advances: guest bytes looked at so far, and the total. */
  onProgress?(done: number, total: number): void;
}

/** What was written. */
export interface Qcow2ConvertResult {
  dataClusters: number;
  compressedClusters: number;
}

/** Guest bytes looked at per block-status query: bounds the extent list whatever the source size. */
const STATUS_WINDOW = 1 << 30;

/** Refuses what a qcow2 output cannot take, before anything is made. */
export function checkQcow2Output(options: Pick<Qcow2ConvertOptions, 'compress' | 'options'>): void {
  // qemu-img fails at its first write ("Operation not supported"): compressed clusters have no place in a data file.
  if (options.compress && options.options.has('data_file')) throw new UsageError('compressed clusters cannot be written into an external data file');
  // Compressed clusters go only where nothing is allocated yet: qemu-img refuses the pair before creating anything.
  const preallocation = options.options.get('preallocation') ?? 'off';
  if (options.compress && preallocation !== 'off') throw new UsageError('Compression and preallocation not supported at the same time');
}

/** Writes `source`'s guest contents as a new qcow2 image onto the empty `device`, and closes the device. */
export async function convertToQcow2(source: Image, device: BlockDevice, options: Qcow2ConvertOptions): Promise<Qcow2ConvertResult> {
  checkQcow2Output(options);
  await createImage(device, { format: 'qcow2', size: source.size, options: options.options, createDataFile: options.createDataFile });
  // The image is new and only complete once convert returns: its metadata writes need not hold up the data.
  const target = await openQcow2(device, { host: options.host, writable: true, noBacking: true, withDataFile: true, writeBehindMetadata: true });
  const result: Qcow2ConvertResult = { dataClusters: 0, compressedClusters: 0 };
  const compressor = options.compress ? compressorFor(target, options.host.codecs) : undefined;
  let reported = 0;
  const copy: CopyContext = {
    source,
    target,
    chunks: options.fullyAllocated ? everyChunk(source.size) : dataChunks(source, allocationUnit(target, options.compress)),
    zeroGranularity: zeroGranularity(target, options.sparseSize ?? DEFAULT_SPARSE_SIZE),
    fullyAllocated: options.fullyAllocated === true,
    tests: options.tests ?? portableByteTests,
    ordered: options.unordered !== true,
    limit: options.limit,
    result,
    // Chunks may be stored out of order (-W): progress only moves forward.
    onStored: (chunk) => {
      reported = Math.max(reported, chunk.start + chunk.length);
      options.onProgress?.(reported, source.size);
    },
  };
  if (compressor) {
    await copyCompressed(copy, compressor);
    await target.writer!.endCompressedWrites();
  } else {
    await copyPlain(copy);
  }
  if (options.bitmaps) await copyBitmaps(options.bitmaps, target);
  options.onProgress?.(source.size, source.size);
  await target.close();
  return result;
}

/** A range of whole guest allocation units to copy: clusters, or subclusters with extended L2 entries (the last may be cut by the end of the image). */
interface ClusterChunk {
  start: number;
  length: number;
}

/** What one copy into the new image works with. */
interface CopyContext {
  source: Image;
  target: Qcow2Image;
  chunks: AsyncGenerator<ClusterChunk>;
  tests: ByteTests;
  /** Store chunks in guest order (false with -W). */
  ordered: boolean;
  /** Write zero clusters too (-S 0). */
  fullyAllocated: boolean;
  /** Zero runs of whole blocks of this size, aligned, are not written (a cluster, or with extended L2 entries as little as a subcluster). */
  zeroGranularity: number;
  limit: WriteLimit | undefined;
  result: Qcow2ConvertResult;
  onStored(chunk: ClusterChunk): void;
}

/**
 * The data ranges of `source` in whole allocation units (clusters, or
 * subclusters), in pieces of at most COPY_CHUNK bytes, each unit once; zero
 * and unallocated ranges are skipped (the new image reads zeros there already).
 */
async function* dataChunks(source: Image, unit: number): AsyncGenerator<ClusterChunk> {
  let done = 0; // units below this guest offset are handed out
  for (let window = 0; window < source.size; window += STATUS_WINDOW) {
    const length = Math.min(STATUS_WINDOW, source.size - window);
    for (const extent of await source.blockStatus(window, length)) {
      if (extent.kind !== 'data') continue;
      const first = Math.max(done, extent.start - (extent.start % unit));
      const end = Math.min(source.size, Math.ceil((extent.start + extent.length) / unit) * unit);
      for (let chunk = first; chunk < end; chunk += COPY_CHUNK) yield { start: chunk, length: Math.min(COPY_CHUNK, end - chunk) };
      done = Math.max(done, end);
    }
  }
}

/**
 * What a data range of the source is rounded out to: a cluster, or with
 * extended L2 entries a subcluster (the new image allocates those one by one,
 * so a zero range the source's block status shows inside a cluster stays
 * unallocated, as qemu-img leaves it). Compressed clusters are whole clusters.
 */
function allocationUnit(target: Qcow2Image, compress: boolean): number {
  const { clusterSize, geometry } = target.metadata;
  return geometry.extendedL2 && !compress ? clusterSize / SUBCLUSTERS_PER_CLUSTER : clusterSize;
}

/** How many clusters the runs (sorted, relative to `base`) touch; several runs may share one. */
function clustersTouched(runs: Array<[number, number]>, base: number, clusterSize: number): number {
  let count = 0;
  let lastCounted = -1;
  for (const [from, to] of runs) {
    const first = Math.max(lastCounted + 1, Math.floor((base + from) / clusterSize));
    const last = Math.floor((base + to - 1) / clusterSize);
    if (last >= first) count += last - first + 1;
    lastCounted = Math.max(lastCounted, last);
  }
  return count;
}

/**
 * The blocks a plain copy tests for zeros. qemu-img tests aligned blocks of
 * the sparse size (its largest power of two) or of a cluster, whichever is
 * larger: with clusters smaller than -S (4 KiB by default), a block holding
 * any data is written whole, zero clusters and all. With extended L2
 * entries, blocks of the sparse size rounded up to whole subclusters
 * (qemu-img leaves such zero runs unallocated inside an allocated cluster).
 */
function zeroGranularity(target: Qcow2Image, sparseSize: number): number {
  const { clusterSize, geometry } = target.metadata;
  if (!geometry.extendedL2) return Math.max(clusterSize, 2 ** Math.floor(Math.log2(Math.max(sparseSize, 1))));
  const subcluster = clusterSize / SUBCLUSTERS_PER_CLUSTER;
  return Math.min(clusterSize, Math.ceil(Math.max(sparseSize, subcluster) / subcluster) * subcluster);
}

/** The whole guest range in pieces of COPY_CHUNK bytes (-S 0: everything is written). */
async function* everyChunk(size: number): AsyncGenerator<ClusterChunk> {
  for (let start = 0; start < size; start += COPY_CHUNK) yield { start, length: Math.min(COPY_CHUNK, size - start) };
}

/** Bytes read and written per step of an uncompressed copy (whole clusters). */
const COPY_CHUNK = 2 << 20;

/** Chunks being read while an earlier one is written: each holds one reused COPY_CHUNK buffer. */
const READ_AHEAD = 4;

/**
 * Copies the data clusters of the chunks as they are: several chunks read
 * ahead into reused buffers, all-zero clusters left out (native byte tests),
 * and the writes issued in guest order (unless -W) so the new image's
 * clusters are laid out in order. A chunk's writes are issued without waiting
 * for the last chunk's data to land (the image allocates them in the order
 * they come), WRITES_IN_FLIGHT chunks at most.
 */
async function copyPlain({ source, target, chunks, tests, ordered, fullyAllocated, zeroGranularity, limit, result, onStored }: CopyContext): Promise<void> {
  const clusterSize = target.metadata.clusterSize;
  const buffers: Uint8Array[] = [];
  const read = async (chunk: ClusterChunk) => {
    const buffer = buffers.pop() ?? alignedBuffer(COPY_CHUNK, { shared: true });
    const bytes = buffer.subarray(0, chunk.length);
    try {
      await readFully(source, chunk.start, bytes);
    } catch (error) {
      buffers.push(buffer);
      throw error;
    }
    const runs: Array<[number, number]> = fullyAllocated ? [[0, bytes.length]] : nonZeroRuns(bytes, chunk.start, zeroGranularity, tests);
    return { chunk, buffer, bytes, runs };
  };
  const writing = new InFlight(WRITES_IN_FLIGHT, Infinity);
  const store = async ({ chunk, buffer, bytes, runs }: Awaited<ReturnType<typeof read>>) => {
    try {
      await limit?.take(runs.reduce((sum, [from, to]) => sum + to - from, 0));
      await writing.room(0);
    } catch (error) {
      buffers.push(buffer);
      throw error;
    }
    writing.start(0, async () => {
      try {
        await settleAll(runs.map(([from, to]) => target.write(chunk.start + from, bytes.subarray(from, to))));
      } finally {
        buffers.push(buffer);
      }
      result.dataClusters += clustersTouched(runs, chunk.start, clusterSize);
      onStored(chunk);
    });
  };
  try {
    await pipeline(chunks, { ahead: READ_AHEAD, ordered }, read, store);
  } catch (error) {
    // Writes still landing settle first; the failure that stopped the pipeline is the one reported.
    await writing.drain().catch(() => {});
    throw error;
  }
  await writing.drain();
}

/** Compresses one whole cluster into a stream of the image's compression type. */
export type Compressor = (cluster: Uint8Array) => Promise<Uint8Array>;

/**
 * Clusters being compressed at once. Every deflate call holds a compressor
 * state of its own (about 300 KiB with qemu's memLevel 9), and the chunks
 * compressing ahead hold 4096 clusters each at 512 bytes a cluster: unbounded,
 * a 4 MiB convert -c with 512-byte clusters peaked at 1.5 GB. The pool has a
 * thread or two per core, so a few dozen keep every one busy.
 */
export const COMPRESSIONS_IN_FLIGHT = 32;

/** The compressor of `target`'s compression type (zlib or zstd), from the host's codecs, COMPRESSIONS_IN_FLIGHT at a time. */
export function compressorFor(target: Qcow2Image, codecs: Codecs): Compressor {
  const zstd = target.metadata.header.compressionType === 1;
  const compress = zstd ? codecs.zstdCompress : codecs.deflateRaw;
  if (!compress) throw new UnsupportedFeatureError(`no ${zstd ? 'zstd' : 'deflate'} compressor in this runtime`);
  const slots = new Slots(COMPRESSIONS_IN_FLIGHT);
  return async (cluster) => {
    await slots.take();
    try {
      return await compress.call(codecs, cluster);
    } finally {
      slots.give();
    }
  };
}

/** One cluster on its way into the image: where it goes, its bytes, and its stream being made. */
interface PendingCluster {
  offset: number;
  bytes: Uint8Array;
  stream: Promise<Uint8Array>;
}

/**
 * Chunks read and compressing ahead of the one being written: the compressor
 * runs on other threads (node:zlib on the libuv pool), so while one chunk's
 * streams are written the next chunks' clusters are all being compressed.
 * Memory stays bounded by (COMPRESS_AHEAD + 1) chunks.
 */
const COMPRESS_AHEAD = 2;

/**
 * Compresses every non-zero cluster of the chunks, many at a time, and stores
 * the streams in guest order (unless -W), packed back to back as qemu packs them.
 */
async function copyCompressed({ source, target, chunks, tests, ordered, fullyAllocated, limit, result, onStored }: CopyContext, compressor: Compressor): Promise<void> {
  const clusterSize = target.metadata.clusterSize;
  // -S 0: zero clusters are compressed and stored like any other, as qemu-img stores them.
  const skipZero = fullyAllocated ? undefined : tests;
  const prepare = async (chunk: ClusterChunk) => ({ chunk, clusters: await prepareChunk(source, chunk, clusterSize, compressor, skipZero) });
  await pipeline(chunks, { ahead: COMPRESS_AHEAD, ordered }, prepare, async ({ chunk, clusters }) => {
    const streams = await Promise.all(clusters.map((cluster) => cluster.stream));
    // Guest bytes, as qemu throttles the image's writes before they are compressed.
    await limit?.take(clusters.reduce((sum, cluster) => sum + cluster.bytes.length, 0));
    // Issued in guest order, so the image packs the streams in that order; their writes overlap.
    await settleAll(clusters.map((cluster, index) => storeCluster(target, cluster, streams[index]!, result)));
    onStored(chunk);
  });
}

/** Reads a chunk and starts compressing each of its clusters; with `skipZero`, all-zero clusters are left out. */
async function prepareChunk(
  source: Image,
  chunk: ClusterChunk,
  clusterSize: number,
  compressor: Compressor,
  skipZero: ByteTests | undefined,
): Promise<PendingCluster[]> {
  const bytes = await source.read(chunk.start, chunk.length);
  const clusters: PendingCluster[] = [];
  for (let at = 0; at < bytes.length; at += clusterSize) {
    const end = Math.min(at + clusterSize, bytes.length);
    if (skipZero?.isZero(bytes, at, end)) continue;
    const cluster = bytes.subarray(at, end);
    const stream = compressCluster(compressor, cluster, clusterSize);
    stream.catch(() => {}); // awaited in order by storeCluster
    clusters.push({ offset: chunk.start + at, bytes: cluster, stream });
  }
  return clusters;
}

/**
 * Stores one cluster: its stream when it shrinks the cluster (as qemu
 * decides), else the plain bytes. The write joins the image's queue at once.
 */
async function storeCluster(target: Qcow2Image, cluster: PendingCluster, stream: Uint8Array, result: Qcow2ConvertResult): Promise<void> {
  result.dataClusters++;
  if (await storeStream(target, cluster.offset, cluster.bytes, stream)) result.compressedClusters++;
}

/** Compresses one cluster; the last cluster of an image that ends mid-cluster as a whole, zero-padded cluster. */
export function compressCluster(compressor: Compressor, cluster: Uint8Array, clusterSize: number): Promise<Uint8Array> {
  if (cluster.length === clusterSize) return compressor(cluster);
  const whole = new Uint8Array(clusterSize);
  whole.set(cluster);
  return compressor(whole);
}

/**
 * Stores the cluster at guest `offset` as its compressed `stream` when that
 * is smaller than a cluster (as qemu decides), else as its plain `bytes`;
 * resolves true when the stream was stored.
 */
export async function storeStream(target: Qcow2Image, offset: number, bytes: Uint8Array, stream: Uint8Array): Promise<boolean> {
  if (stream.length < target.metadata.clusterSize) {
    await target.writer!.writeCompressed(offset, stream);
    return true;
  }
  await target.write(offset, bytes);
  return false;
}
