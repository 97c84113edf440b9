/**
 * Compression codecs for Node: deflate from node:zlib (on the libuv pool),
 * zstd decoding from fzstd (pure JS: Node 20's zlib has no zstd).
 */

import { promisify } from 'node:util';
import { deflateRaw, inflateRaw } from 'node:zlib';
import { decompress as zstdDecompress } from 'fzstd';
import { CorruptImageError } from '../core/errors.js';
import type { Codecs } from '../core/image.js';

const inflateRawAsync = promisify(inflateRaw);
const deflateRawAsync = promisify(deflateRaw);

/** Copies `length` bytes (or fewer) out of a Buffer into a plain Uint8Array. */
function take(data: Uint8Array, length: number): Uint8Array {
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + Math.min(length, data.length)));
}

/** The codecs platter uses on Node. */
export const nodeCodecs: Codecs = {
  async inflateRaw(input, outputLength) {
    try {
      // maxOutputLength bounds memory against streams that inflate past one cluster;
      // finishFlush tolerates streams cut short, as qemu's decoder does.
      const out = await inflateRawAsync(input, {
        maxOutputLength: outputLength,
        finishFlush: 2 /* Z_SYNC_FLUSH */,
      });
      return take(out, outputLength);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
        throw new CorruptImageError(`deflate stream inflates past ${outputLength} bytes`);
      }
      throw new CorruptImageError(`invalid deflate stream: ${(error as Error).message}`);
    }
  },
  async zstdDecompress(input, outputLength) {
    try {
      const out = new Uint8Array(outputLength);
      return take(zstdDecompress(input, out), outputLength);
    } catch (error) {
      throw new CorruptImageError(`invalid zstd stream: ${(error as Error).message}`);
    }
  },
  async deflateRaw(input) {
    const out = await deflateRawAsync(input, { windowBits: 12, level: 6 });
    return take(out, out.length);
  },
};
