/**
 * Raw deflate (qcow2's zlib clusters) through node:zlib's streaming decoder:
 * the path for a stream that runs past its cluster, or a cluster too small
 * for one pass of the in-place inflater (see inflate-sync.ts).
 *
 * It follows qemu's qcow2 rule: output is capped at the cluster and memory
 * never grows past it, whatever the stream claims.
 */

import { CorruptImageError } from '../core/errors.js';
import { nodeZlib } from './builtins.js';

/** node:zlib refuses chunk sizes below this. */
export const MIN_INFLATE_CHUNK = 64;

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
