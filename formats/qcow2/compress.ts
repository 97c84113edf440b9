/**
 * Compressed clusters (qcow2.rst, "Compressed Clusters Descriptor"): read the
 * bytes the descriptor names and decode exactly one cluster through the
 * runtime's codecs. Like qemu (qcow2-threads.c), a stream that yields less than
 * one cluster is an error, and bytes after the stream are ignored.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError, PlatterError } from '../../src/core/errors.js';
import type { Codecs } from '../../src/core/image.js';
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
  const { hostOffset } = descriptor;
  if (hostOffset >= device.size) {
    throw new CorruptImageError(`compressed cluster at ${hostOffset} lies past the end of the file`, hostOffset);
  }
  const input = await device.read(hostOffset, Math.min(descriptor.length, device.size - hostOffset));
  let output: Uint8Array;
  try {
    output = await decode(input, clusterSize, compressionType, codecs);
  } catch (error) {
    if (error instanceof PlatterError && !(error instanceof CorruptImageError)) throw error;
    const reason = error instanceof Error ? error.message : String(error);
    throw new CorruptImageError(`cannot decompress the cluster at ${hostOffset}: ${reason}`, hostOffset);
  }
  if (output.length !== clusterSize) {
    throw new CorruptImageError(
      `compressed cluster at ${hostOffset} decodes to ${output.length} bytes, not ${clusterSize}`,
      hostOffset,
    );
  }
  return output;
}

function decode(input: Uint8Array, clusterSize: number, compressionType: number, codecs: Codecs): Promise<Uint8Array> {
  if (compressionType === COMPRESSION_DEFLATE) return codecs.inflateRaw(input, clusterSize);
  if (compressionType === COMPRESSION_ZSTD) return codecs.zstdDecompress(input, clusterSize);
  throw new CorruptImageError(`unknown compression type ${compressionType}`);
}
