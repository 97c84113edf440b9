/**
 * Copying an image into a new qcow2 image (qemu-img convert -O qcow2 [-c]):
 * block status drives the copy, so zero and unallocated ranges allocate
 * nothing and are never read; with compression every data cluster is stored as
 * a compressed stream, or as is when compressing does not shrink it.
 */

import { isAllZero } from '../core/bytes.js';
import type { BlockDevice } from '../core/device.js';
import { UnsupportedFeatureError } from '../core/errors.js';
import type { Codecs, Image, ImageHost } from '../core/image.js';
import { openQcow2, type Qcow2Image } from '../../formats/qcow2/index.js';
import { createImage } from './create.js';

/** How to convert. */
export interface Qcow2ConvertOptions {
  /** `-o` options of the new image (cluster_size, compat, compression_type, ...). */
  options: Map<string, string>;
  /** `-c`: compress every data cluster. */
  compress: boolean;
  host: ImageHost;
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

/** Writes `source`'s guest contents as a new qcow2 image onto the empty `device`. */
export async function convertToQcow2(source: Image, device: BlockDevice, options: Qcow2ConvertOptions): Promise<Qcow2ConvertResult> {
  await createImage(device, { format: 'qcow2', size: source.size, options: options.options });
  const target = await openQcow2(device, { host: options.host, writable: true, noBacking: true });
  const result: Qcow2ConvertResult = { dataClusters: 0, compressedClusters: 0 };
  const compressor = options.compress ? compressorFor(target, options.host.codecs) : undefined;
  const clusterSize = target.metadata.clusterSize;
  let done = 0; // clusters below this guest offset are written
  for (let window = 0; window < source.size; window += STATUS_WINDOW) {
    const length = Math.min(STATUS_WINDOW, source.size - window);
    for (const extent of await source.blockStatus(window, length)) {
      if (extent.kind !== 'data') continue;
      const first = Math.max(done, extent.start - (extent.start % clusterSize));
      const end = extent.start + extent.length;
      if (compressor) {
        for (let cluster = first; cluster < end; cluster += clusterSize) await copyCluster(source, target, cluster, compressor, result);
      } else {
        for (let chunk = first; chunk < end; chunk += COPY_CHUNK) {
          await copyChunk(source, target, chunk, Math.min(COPY_CHUNK, Math.ceil(end / clusterSize) * clusterSize - chunk), result);
        }
      }
      done = Math.max(done, Math.ceil(end / clusterSize) * clusterSize);
      options.onProgress?.(Math.min(end, source.size), source.size);
    }
  }
  options.onProgress?.(source.size, source.size);
  await target.close();
  return result;
}

/** Bytes read and written per step of an uncompressed copy (whole clusters). */
const COPY_CHUNK = 2 << 20;

/** Copies whole clusters from `start`, writing each run of non-zero clusters in one write. */
async function copyChunk(source: Image, target: Qcow2Image, start: number, length: number, result: Qcow2ConvertResult): Promise<void> {
  const clusterSize = target.metadata.clusterSize;
  const bytes = await source.read(start, Math.min(length, source.size - start));
  let runStart = -1;
  for (let at = 0; at <= bytes.length; at += clusterSize) {
    const zero = at === bytes.length || isAllZero(bytes.subarray(at, Math.min(at + clusterSize, bytes.length)));
    if (!zero) {
      result.dataClusters++;
      if (runStart < 0) runStart = at;
      continue;
    }
    if (runStart >= 0) await target.write(start + runStart, bytes.subarray(runStart, Math.min(at, bytes.length)));
    runStart = -1;
  }
}

type Compressor = (cluster: Uint8Array) => Promise<Uint8Array>;

function compressorFor(target: Qcow2Image, codecs: Codecs): Compressor {
  const zstd = target.metadata.header.compressionType === 1;
  const compress = zstd ? codecs.zstdCompress : codecs.deflateRaw;
  if (!compress) throw new UnsupportedFeatureError(`no ${zstd ? 'zstd' : 'deflate'} compressor in this runtime`);
  return compress;
}

/** Copies one guest cluster; all-zero clusters are skipped (the new image reads zeros there already). */
async function copyCluster(source: Image, target: Qcow2Image, cluster: number, compressor: Compressor | undefined, result: Qcow2ConvertResult): Promise<void> {
  const clusterSize = target.metadata.clusterSize;
  const length = Math.min(clusterSize, source.size - cluster);
  const bytes = await source.read(cluster, length);
  if (isAllZero(bytes)) return;
  result.dataClusters++;
  if (compressor) {
    const whole = new Uint8Array(clusterSize);
    whole.set(bytes);
    const stream = await compressor(whole);
    // Like qemu: a stream that does not shrink the cluster is not worth it.
    if (stream.length < clusterSize) {
      await target.writer!.writeCompressed(cluster, stream);
      result.compressedClusters++;
      return;
    }
  }
  await target.write(cluster, bytes);
}
