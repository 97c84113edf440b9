/**
 * Compression codecs for Node: deflate from node:zlib (on the libuv pool),
 * zstd from the WebAssembly build of libzstd (Node 20's zlib has no zstd),
 * loaded only when the first zstd cluster is met so start-up stays lean.
 *
 * Both decoders follow qemu's qcow2 rules: output is capped at the requested
 * length and memory never grows past it, whatever the input claims.
 */

import { promisify } from 'node:util';
import { constants, createInflateRaw, deflateRaw, inflateRaw } from 'node:zlib';
import { CorruptImageError, PlatterError } from '../core/errors.js';
import type { Codecs } from '../core/image.js';
import { zstdFrameInfo } from './zstd-frame.js';
import { zstdThreads } from './zstd-threads.js';

const deflateRawAsync = promisify(deflateRaw);
const inflateRawAsync = promisify(inflateRaw);

/** Copies `length` bytes (or fewer) out of a Buffer into a plain Uint8Array. */
function take(data: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + Math.min(length, data.length)));
}

/** node:zlib refuses chunk sizes below this. */
const MIN_CHUNK = 64;

/**
 * Inflates one compressed cluster on the libuv pool in a single pass (one
 * output chunk of `outputLength` bytes, so one round trip to the pool). A
 * stream that would inflate past `outputLength` is rare (qemu never writes
 * one); it makes node:zlib refuse, and the streaming decoder below then takes
 * its first `outputLength` bytes as qemu does.
 */
export async function inflateRawFast(input: Uint8Array, outputLength: number): Promise<Uint8Array> {
  if (outputLength < MIN_CHUNK) return inflateRawCapped(input, outputLength);
  let out: Buffer;
  try {
    out = await inflateRawAsync(input, {
      finishFlush: constants.Z_SYNC_FLUSH,
      chunkSize: outputLength,
      maxOutputLength: outputLength,
    });
  } catch (error) {
    if ((error as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE') return inflateRawCapped(input, outputLength);
    throw new CorruptImageError(`invalid deflate stream: ${(error as Error).message}`);
  }
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/**
 * Inflates raw deflate until `outputLength` bytes are out, then stops: like
 * qemu, a stream that would go on is accepted with its first `outputLength`
 * bytes, and bytes after the stream's end are ignored. Resolves with fewer
 * bytes when the stream ends (or the input runs out) early.
 */
export function inflateRawCapped(input: Uint8Array, outputLength: number): Promise<Uint8Array> {
  return new Promise((resolve, reject) => {
    const out = new Uint8Array(outputLength);
    let filled = 0;
    let settled = false;
    const finish = (error?: Error) => {
      if (settled) return;
      settled = true;
      inflater.destroy();
      if (error) reject(new CorruptImageError(`invalid deflate stream: ${error.message}`));
      else resolve(filled === outputLength ? out : out.slice(0, filled));
    };
    // Z_SYNC_FLUSH as the final flush: a stream cut short ends quietly instead of erroring.
    const inflater = createInflateRaw({ finishFlush: constants.Z_SYNC_FLUSH, chunkSize: 16 * 1024 });
    inflater.on('data', (chunk: Buffer) => {
      if (settled) return;
      const count = Math.min(chunk.length, outputLength - filled);
      out.set(chunk.subarray(0, count), filled);
      filled += count;
      if (filled === outputLength) finish();
    });
    inflater.on('error', (error) => finish(error));
    inflater.on('end', () => finish());
    if (outputLength === 0) finish();
    else inflater.end(input);
  });
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
    return await zstdThreads().decode(frame, output);
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
  zstdDecompress: zstdDecompressCapped,
  zstdDecompressInto,
  async deflateRaw(input) {
    // qemu's qcow2 deflate settings: raw stream, 4 KiB window, default level, memLevel 9.
    const out = await deflateRawAsync(input, { windowBits: 12, level: 6, memLevel: 9 });
    return take(out, out.length);
  },
  zstdCompress,
};
