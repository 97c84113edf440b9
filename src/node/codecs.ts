/**
 * Compression codecs for Node: deflate from node:zlib, zstd from the
 * WebAssembly build of libzstd (Node 20's zlib has no zstd), loaded only when
 * the first zstd cluster is met so start-up stays lean. Clusters decode on the
 * decoder threads (decode-threads.ts); compression runs on the libuv pool.
 *
 * Both decoders follow qemu's qcow2 rules: output is capped at the requested
 * length and memory never grows past it, whatever the input claims.
 */

import { promisify } from 'node:util';
import { deflateRaw } from 'node:zlib';
import { CorruptImageError, PlatterError } from '../core/errors.js';
import type { Codecs } from '../core/image.js';
import { decodeThreads } from './decode-threads.js';
import { inflateRawCapped, MIN_INFLATE_CHUNK } from './inflate.js';
import { zstdFrameInfo } from './zstd-frame.js';

export { inflateRawCapped } from './inflate.js';

const deflateRawAsync = promisify(deflateRaw);

/** Copies `length` bytes (or fewer) out of a Buffer into a plain Uint8Array. */
function take(data: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + Math.min(length, data.length)));
}

/**
 * Inflates one compressed cluster into `output` (on the decoder threads);
 * resolves with the bytes written. A stream that would inflate past `output`
 * is rare (qemu never writes one): it is taken, as qemu does, with its first
 * `output.length` bytes, by the streaming decoder.
 */
export async function inflateRawInto(input: Uint8Array, output: Uint8Array): Promise<number> {
  if (output.length >= MIN_INFLATE_CHUNK) {
    try {
      return await decodeThreads().decode('deflate', input, output);
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

/** Decodes the first zstd frame of `input` into `output` (on the decoder threads); resolves with the bytes written. */
export async function zstdDecompressInto(input: Uint8Array, output: Uint8Array): Promise<number> {
  const frame = checkedZstdFrame(input, output.length);
  try {
    return await decodeThreads().decode('zstd', frame, output);
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

/** zstd's default level, the one qemu's qcow2 compression uses. */
const ZSTD_DEFAULT_LEVEL = 3;

type ZstdWasm = typeof import('@bokuweb/zstd-wasm');
let zstdReady: Promise<ZstdWasm> | undefined;

/** Loads the WebAssembly zstd module from its package, once, on first use (start-up stays lean). */
async function loadZstd(): Promise<ZstdWasm> {
  const module = await import('@bokuweb/zstd-wasm');
  await module.init();
  return module;
}

/** One compression context for every cluster: making a new one per call (what `compress` does) costs about a third of the time. */
let zstdContext: number | undefined;
const NO_DICTIONARY = new Uint8Array(0);

/** Compresses with zstd at its default level. */
export async function zstdCompress(input: Uint8Array): Promise<Uint8Array> {
  zstdReady ??= loadZstd();
  const zstd = await zstdReady;
  zstdContext ??= zstd.createCCtx();
  const out = zstd.compressUsingDict(zstdContext, input, NO_DICTIONARY, ZSTD_DEFAULT_LEVEL);
  return new Uint8Array(out.buffer.slice(out.byteOffset, out.byteOffset + out.length));
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
