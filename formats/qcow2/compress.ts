/**
 * Compressed clusters (qcow2.rst, "Compressed Clusters Descriptor"): read the
 * bytes the descriptor names and decode exactly one cluster through the
 * runtime's codecs. Like qemu (qcow2-threads.c), a stream that yields less than
 * one cluster is an error, and bytes after the stream are ignored.
 */

import type { BufferPool } from '../../src/core/buffer-pool.js';
import { readFully, type BlockDevice } from '../../src/core/device.js';
import { CorruptImageError, PlatterError } from '../../src/core/errors.js';
import type { Codecs } from '../../src/core/image.js';
import { settleAll } from '../../src/core/slots.js';
import type { CompressedDescriptor } from './entries.js';
import { COMPRESSION_DEFLATE, COMPRESSION_ZSTD } from './header.js';

/**
 * Decodes the compressed cluster at `descriptor` into `clusterSize` bytes.
 * Reads never pass the file end: qemu's host layer reads zeros there, and no
 * valid stream needs them.
 */
export async function readCompressedCluster(
  device: BlockDevice,
  descriptor: CompressedDescriptor,
  clusterSize: number,
  compressionType: number,
  codecs: Codecs,
): Promise<Uint8Array> {
  const [output] = await readCompressedClusters(device, [descriptor], clusterSize, compressionType, codecs);
  return output!;
}

/**
 * Decodes several compressed clusters, all in flight at once (the codecs run
 * them on other threads). Streams that lie close together in the file, as
 * qemu packs them, are fetched in one device read per group instead of one per
 * cluster. Each cluster is decoded into the matching `outputs` buffer
 * (`clusterSize` bytes; new buffers when absent), which are returned in the
 * order of `descriptors`. Memory is bounded by the number asked for (each
 * stream is at most a few clusters long).
 */
export async function readCompressedClusters(
  device: BlockDevice,
  descriptors: readonly CompressedDescriptor[],
  clusterSize: number,
  compressionType: number,
  codecs: Codecs,
  outputs: readonly Uint8Array[] = descriptors.map(() => new Uint8Array(clusterSize)),
  scratch?: BufferPool,
): Promise<Uint8Array[]> {
  for (const { hostOffset } of descriptors) {
    if (hostOffset >= device.size) {
      throw new CorruptImageError(`compressed cluster at ${hostOffset} lies past the end of the file`, hostOffset);
    }
  }
  const reads: ArrayBufferLike[] = [];
  try {
    const inputs = await readStreams(device, descriptors, (length) => {
      const buffer = scratch?.take(length);
      if (buffer) reads.push(buffer);
      return buffer ? new Uint8Array(buffer, 0, length) : new Uint8Array(length);
    });
    // Every decode has settled (and let go of its input) before the reads go back to the pool.
    await settleAll(
      descriptors.map((descriptor, index) =>
        decodeCluster(inputs[index]!, descriptor.hostOffset, outputs[index]!, compressionType, codecs),
      ),
    );
    return [...outputs];
  } finally {
    for (const buffer of reads) scratch!.give(buffer);
  }
}

/** Bytes between two streams still fetched in one read: less than a cluster's worth of waste. */
const MAX_GAP_BYTES = 64 * 1024;
/** Largest span fetched in one read. */
const MAX_GROUP_BYTES = 4 * 1024 * 1024;

/** The stored bytes of each stream, cut at the file end; nearby streams share one read, into a buffer from `buffer`. */
async function readStreams(
  device: BlockDevice,
  descriptors: readonly CompressedDescriptor[],
  buffer: (length: number) => Uint8Array,
): Promise<Uint8Array[]> {
  const inputs: Uint8Array[] = new Array(descriptors.length);
  const endOf = (d: CompressedDescriptor) => d.hostOffset + Math.min(d.length, device.size - d.hostOffset);
  for (let first = 0; first < descriptors.length; ) {
    const start = descriptors[first]!.hostOffset;
    let end = endOf(descriptors[first]!);
    let last = first + 1;
    for (; last < descriptors.length; last++) {
      const next = descriptors[last]!;
      const nextEnd = endOf(next);
      if (next.hostOffset < start || next.hostOffset > end + MAX_GAP_BYTES || Math.max(end, nextEnd) - start > MAX_GROUP_BYTES) break;
      end = Math.max(end, nextEnd);
    }
    const bytes = buffer(end - start);
    await readFully(device, start, bytes);
    for (let index = first; index < last; index++) {
      const { hostOffset } = descriptors[index]!;
      inputs[index] = bytes.subarray(hostOffset - start, endOf(descriptors[index]!) - start);
    }
    first = last;
  }
  return inputs;
}

/** Decodes one stream into `output`, as qemu does: exactly one cluster, or a corruption error naming the host offset. */
async function decodeCluster(
  input: Uint8Array,
  hostOffset: number,
  output: Uint8Array,
  compressionType: number,
  codecs: Codecs,
): Promise<Uint8Array> {
  let length: number;
  try {
    length = await decodeInto(input, output, compressionType, codecs);
  } catch (error) {
    if (error instanceof PlatterError && !(error instanceof CorruptImageError)) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new CorruptImageError(`cannot decompress the cluster at ${hostOffset}: ${reason}`, hostOffset);
  }
  if (length !== output.length) {
    throw new CorruptImageError(`compressed cluster at ${hostOffset} decodes to ${length} bytes, not ${output.length}`, hostOffset);
  }
  return output;
}

/** Decodes `input` into `output`; resolves with the bytes written. */
async function decodeInto(input: Uint8Array, output: Uint8Array, compressionType: number, codecs: Codecs): Promise<number> {
  if (compressionType === COMPRESSION_ZSTD && codecs.zstdDecompressInto) return codecs.zstdDecompressInto(input, output);
  if (compressionType === COMPRESSION_DEFLATE && codecs.inflateRawInto) return codecs.inflateRawInto(input, output);
  let decoded: Uint8Array;
  if (compressionType === COMPRESSION_DEFLATE) decoded = await codecs.inflateRaw(input, output.length);
  else if (compressionType === COMPRESSION_ZSTD) decoded = await codecs.zstdDecompress(input, output.length);
  else throw new CorruptImageError(`unknown compression type ${compressionType}`);
  const length = Math.min(decoded.length, output.length);
  output.set(decoded.subarray(0, length));
  return length;
}
