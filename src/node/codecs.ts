/**
 * Compression codecs for Node: deflate from node:zlib, zstd from the
 * WebAssembly build of libzstd (Node 20's zlib has no zstd), loaded only when
 * the first zstd cluster is met so start-up stays lean. Clusters decode on the
 * codec threads (codec-threads.ts), where zstd clusters are also compressed;
 * deflate compresses on the libuv pool.
 *
 * Both decoders follow qemu's qcow2 rules: output is capped at the requested
 * length and memory never grows past it, whatever the input claims.
 */

import { CorruptImageError, PlatterError } from '../core/errors.js';
import type { Codecs } from '../core/image.js';
import { deflateRawAsync } from './builtins.js';
import { codecThreads } from './codec-threads.js';
import { inflateRawCapped, MIN_INFLATE_CHUNK } from './inflate.js';
import { zstdFrameInfo } from './zstd-frame.js';

export { inflateRawCapped } from './inflate.js';

/** Copies `length` bytes (or fewer) out of a Buffer into a plain Uint8Array. */
function take(data: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + Math.min(length, data.length)));
}

/**
 * Inflates one compressed cluster into `output` (on the codec threads);
 * resolves with the bytes written. A stream that would inflate past `output`
 * is rare (qemu never writes one): it is taken, as qemu does, with its first
 * `output.length` bytes, by the streaming decoder.
 */
export async function inflateRawInto(input: Uint8Array, output: Uint8Array): Promise<number> {
  if (output.length >= MIN_INFLATE_CHUNK) {
    try {
      return await codecThreads().decode('deflate', input, output);
    } catch (error) {
      if (error instanceof PlatterError) throw error;
      if ((error as { code?: string }).code !== 'ERR_BUFFER_TOO_LARGE') throw new CorruptImageError(`invalid deflate stream: ${(error as Error).message}`);
    }
  }
  // A stream longer than its cluster, or a cluster too small for one pass.
  const decoded = await inflateRawCapped(input, output.length);
  output.set(decoded);
  return decoded.length;
}

/** Inflates one compressed cluster into a new buffer of at most `outputLength` bytes. */
export async function inflateRawFast(input: Uint8Array, outputLength: number): Promise<Uint8Array> {
  const output = new Uint8Array(outputLength);
  const length = await inflateRawInto(input, output);
  return length === outputLength ? output : output.slice(0, length);
}

/**
 * Checks the first zstd frame of `input` against the `outputLength` bytes it
 * must decode to, and returns the frame's bytes. Bytes after the frame are
 * ignored, as qemu does; a frame that declares, or provably holds, a
 * different size is refused, so libzstd then decodes in one shot into a buffer
 * of exactly `outputLength` bytes (no window buffer), and a hostile window
 * size never allocates.
 */
function checkedZstdFrame(input: Uint8Array, outputLength: number): Uint8Array {
  const frame = zstdFrameInfo(input);
  if (frame.contentSize !== undefined && frame.contentSize !== outputLength) {
    throw new CorruptImageError(`zstd frame holds ${frame.contentSize} bytes, expected ${outputLength}`);
  }
  if (frame.knownOutput > outputLength || frame.knownOutput + frame.maxCompressedOutput < outputLength) {
    throw new CorruptImageError(`zstd frame cannot hold exactly ${outputLength} bytes`);
  }
  return input.subarray(0, frame.length);
}

/** Decodes the first zstd frame of `input` into `output` (on the codec threads); resolves with the bytes written. */
export async function zstdDecompressInto(input: Uint8Array, output: Uint8Array): Promise<number> {
  const frame = checkedZstdFrame(input, output.length);
  try {
    return await codecThreads().decode('zstd', frame, output);
  } catch (error) {
    if (error instanceof PlatterError) throw error;
    throw new CorruptImageError(`invalid zstd stream: ${(error as Error).message}`);
  }
}

/** Decodes the first zstd frame of `input` into at most `outputLength` bytes. */
export async function zstdDecompressCapped(input: Uint8Array, outputLength: number): Promise<Uint8Array> {
  const output = new Uint8Array(outputLength);
  const length = await zstdDecompressInto(input, output);
  return length === outputLength ? output : output.slice(0, length);
}

/** ZSTD_COMPRESSBOUND of zstd.h: the most bytes a frame of `size` input bytes can take. */
export function zstdCompressBound(size: number): number {
  const small = 128 * 1024;
  return size + (size >>> 8) + (size < small ? (small - size) >>> 11 : 0);
}

/** Compresses one cluster as a zstd frame at qemu's level, on the codec threads. */
export async function zstdCompress(input: Uint8Array): Promise<Uint8Array> {
  const output = new Uint8Array(zstdCompressBound(input.length));
  const length = await codecThreads().encode('zstd', input, output);
  return output.slice(0, length);
}

/** The codecs platter uses on Node. */
export const nodeCodecs: Codecs = {
  inflateRaw: inflateRawFast,
  inflateRawInto,
  zstdDecompress: zstdDecompressCapped,
  zstdDecompressInto,
  async deflateRaw(input) {
    // qemu's qcow2 deflate settings: raw stream, 4 KiB window, default level, memLevel 9.
    const out = await deflateRawAsync(input, { windowBits: 12, level: 6, memLevel: 9 });
    return take(out, out.length);
  },
  zstdCompress,
};
