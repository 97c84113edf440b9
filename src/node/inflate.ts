/**
 * Raw deflate (qcow2's zlib clusters) on the main thread, through node:zlib on
 * the libuv pool: the path for a decode that no codec thread takes (before
 * the threads are up, or a stream that runs past its cluster).
 *
 * Both follow qemu's qcow2 rule: output is capped at the cluster and memory
 * never grows past it, whatever the stream claims.
 */

import { CorruptImageError } from '../core/errors.js';
import { inflateRawAsync, nodeZlib } from './builtins.js';

/** node:zlib refuses chunk sizes below this. */
export const MIN_INFLATE_CHUNK = 64;

/**
 * Inflates one stream into `output` on the libuv pool in a single pass (one
 * output chunk, one round trip to the pool); resolves with the bytes written.
 * A stream that would inflate past `output` makes node:zlib reject with
 * ERR_BUFFER_TOO_LARGE (qemu never writes one; `inflateRawCapped` takes it);
 * a bad stream rejects with node:zlib's error.
 */
export async function inflateRawOnPool(input: Uint8Array, output: Uint8Array): Promise<number> {
  const out = await inflateRawAsync(input, {
    finishFlush: nodeZlib().constants.Z_SYNC_FLUSH,
    chunkSize: Math.max(MIN_INFLATE_CHUNK, output.length),
    maxOutputLength: Math.max(1, output.length),
  });
  output.set(out);
  return out.length;
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
    const zlib = nodeZlib();
    const inflater = zlib.createInflateRaw({ finishFlush: zlib.constants.Z_SYNC_FLUSH, chunkSize: 16 * 1024 });
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
