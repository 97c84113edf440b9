/**
 * The Node codecs follow qemu's qcow2 decompression rules: exactly one cluster
 * out, bytes after the stream ignored, and memory bounded by the cluster size.
 */

import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { inflateRawCapped, zstdDecompressCapped } from '../src/node/codecs.js';
import { zstdFrameInfo } from '../src/node/zstd-frame.js';
import { readCompressedCluster } from '../formats/qcow2/compress.js';
import { MemoryDevice } from '../src/core/device.js';
import { nodeCodecs } from '../src/node/codecs.js';

/** A zstd frame of raw blocks, written by hand (RFC 8878): optional content size, optional trailing bytes. */
function zstdRawFrame(payload: Uint8Array, options: { contentSize?: number; blockSize?: number } = {}): Uint8Array {
  const parts: number[] = [0x28, 0xb5, 0x2f, 0xfd];
  if (options.contentSize === undefined) {
    parts.push(0x00, 0x58); // no content size, window descriptor: 2^(10+11) bytes
  } else {
    parts.push(0xa0); // single segment, 4-byte content size
    const size = options.contentSize;
    parts.push(size & 0xff, (size >>> 8) & 0xff, (size >>> 16) & 0xff, (size >>> 24) & 0xff);
  }
  const blockSize = options.blockSize ?? 4096;
  for (let at = 0; at < payload.length || at === 0; at += blockSize) {
    const block = payload.subarray(at, at + blockSize);
    const last = at + blockSize >= payload.length ? 1 : 0;
    const header = (block.length << 3) | last;
    parts.push(header & 0xff, (header >>> 8) & 0xff, (header >>> 16) & 0xff, ...block);
    if (last) break;
  }
  return Uint8Array.from(parts);
}

const pattern = (length: number, seed = 7) => Uint8Array.from({ length }, (_, i) => (i * seed + (i >> 8)) & 0xff);

describe('deflate, as qemu decodes a compressed cluster', () => {
  it('decodes exactly one cluster and ignores trailing bytes', async () => {
    const cluster = pattern(65536);
    const stream = new Uint8Array([...deflateRawSync(cluster), 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(await inflateRawCapped(stream, 65536)).toEqual(cluster);
  });

  it('accepts the first cluster of a stream that inflates past it', async () => {
    const twoClusters = pattern(8192);
    const out = await inflateRawCapped(new Uint8Array(deflateRawSync(twoClusters)), 4096);
    expect(out).toEqual(twoClusters.subarray(0, 4096));
  });

  it('returns fewer bytes for a short stream, which the cluster reader refuses', async () => {
    const stream = new Uint8Array(deflateRawSync(pattern(1000)));
    expect((await inflateRawCapped(stream, 4096)).length).toBe(1000);
    const device = new MemoryDevice(stream);
    await expect(
      readCompressedCluster(device, { hostOffset: 0, length: stream.length }, 4096, 0, nodeCodecs),
    ).rejects.toMatchObject({ code: 'ECORRUPT' });
  });

  it('refuses garbage with a corruption error', async () => {
    await expect(inflateRawCapped(new Uint8Array([0xff, 0xff, 0xff, 0xff]), 512)).rejects.toMatchObject({ code: 'ECORRUPT' });
  });

  it('round-trips any cluster', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 512, maxLength: 512 }), fc.uint8Array({ maxLength: 64 }), async (cluster, tail) => {
        const stream = new Uint8Array([...deflateRawSync(cluster), ...tail]);
        expect(await inflateRawCapped(stream, 512)).toEqual(cluster);
      }),
      { numRuns: 50 },
    );
  });
});

describe('zstd, as qemu decodes a compressed cluster', () => {
  it('measures a frame and decodes it, ignoring bytes after it', async () => {
    const cluster = pattern(8192);
    const frame = zstdRawFrame(cluster, { contentSize: 8192 });
    expect(zstdFrameInfo(new Uint8Array([...frame, 9, 9, 9])).length).toBe(frame.length);
    await expect(zstdDecompressCapped(new Uint8Array([...frame, 9, 9, 9]), 8192)).resolves.toEqual(cluster);
  });

  it('refuses a frame whose content size is not one cluster', async () => {
    await expect(zstdDecompressCapped(zstdRawFrame(pattern(8192), { contentSize: 8192 }), 4096)).rejects.toThrow(/8192/);
  });

  it('refuses a frame without a content size that makes more than one cluster', async () => {
    await expect(zstdDecompressCapped(zstdRawFrame(pattern(8192)), 4096)).rejects.toThrow(expect.objectContaining({ code: 'ECORRUPT' }));
  });

  it('refuses truncated frames and bad magic', async () => {
    const frame = zstdRawFrame(pattern(4096), { contentSize: 4096 });
    await expect(zstdDecompressCapped(frame.subarray(0, frame.length - 10), 4096)).rejects.toThrow(/truncated/);
    await expect(zstdDecompressCapped(new Uint8Array(64), 4096)).rejects.toThrow(/magic/);
  });

  it('never allocates for a hostile window size', async () => {
    // A frame claiming a 2 GiB window and nothing else: refused without allocating.
    const frame = Uint8Array.from([0x28, 0xb5, 0x2f, 0xfd, 0x00, 0xa8, 0x01, 0x00, 0x00]);
    await expect(zstdDecompressCapped(frame, 65536)).rejects.toThrow(expect.objectContaining({ code: 'ECORRUPT' }));
  });
});
