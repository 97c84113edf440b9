/**
 * The codec threads' inflater, through node:zlib's stream handle and through
 * its public call (what it falls back to when the handle is not there): the
 * same bytes for any cluster, one stream reused across clusters and after a
 * bad one; a stream cut short gives fewer bytes; a longer one its first bytes
 * (handle) or ERR_BUFFER_TOO_LARGE for the caller (public call).
 */

import * as zlib from 'node:zlib';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { makeSyncInflater } from '../src/node/inflate-sync.js';

/** node:zlib whose streams hide their handle, as a Node without it would. */
const zlibWithoutHandle = {
  ...zlib,
  createInflateRaw: () => Object.assign(zlib.createInflateRaw(), { _handle: undefined }),
} as typeof zlib;

const deflate = (bytes: Uint8Array) => new Uint8Array(zlib.deflateRawSync(bytes, { windowBits: 12 }));

describe.each([
  ['the stream handle', zlib],
  ['the public call', zlibWithoutHandle],
] as const)('inflating clusters through %s', (path, module) => {
  it('gives back any cluster, one after another, good and bad mixed', () => {
    const inflater = makeSyncInflater(module);
    fc.assert(
      fc.property(
        fc.array(fc.record({ bytes: fc.uint8Array({ minLength: 1, maxLength: 20_000 }), runs: fc.nat(50), corrupt: fc.boolean() }), {
          minLength: 1,
          maxLength: 8,
        }),
        (clusters) => {
          for (const { bytes, runs, corrupt } of clusters) {
            // Runs of one byte make the stream compress, as clusters of text do.
            const cluster = bytes.map((value, index) => (index % 64 < runs ? 0x41 : value));
            const output = new Uint8Array(cluster.length);
            if (corrupt) {
              // A block of type 3 is invalid in any deflate stream.
              expect(() => inflater.inflate(Uint8Array.of(0xff, 0xff, 0xff, 0xff), output)).toThrow(/invalid/);
              continue;
            }
            expect(inflater.inflate(deflate(cluster), output)).toBe(cluster.length);
            expect(output).toEqual(cluster);
          }
        },
      ),
      { numRuns: 40 },
    );
  });

  it('a stream cut short gives the bytes it holds', () => {
    const cluster = new Uint8Array(4096).fill(7);
    const stream = deflate(cluster);
    const whole = new Uint8Array(8192);
    expect(makeSyncInflater(module).inflate(stream, whole)).toBe(4096);
    expect(whole.subarray(0, 4096)).toEqual(cluster);
  });

  it('a stream longer than the cluster', () => {
    const twoClusters = new Uint8Array(8192).map((_, index) => index % 251);
    const output = new Uint8Array(4096);
    const inflater = makeSyncInflater(module);
    if (path === 'the stream handle') {
      expect(inflater.inflate(deflate(twoClusters), output)).toBe(4096);
      expect(output).toEqual(twoClusters.subarray(0, 4096));
    } else {
      expect(() => inflater.inflate(deflate(twoClusters), output)).toThrow(expect.objectContaining({ code: 'ERR_BUFFER_TOO_LARGE' }));
    }
  });

  it('inflates into shared memory at an offset', () => {
    const cluster = new Uint8Array(65536).map((_, index) => (index >> 4) & 0xff);
    const shared = new Uint8Array(new SharedArrayBuffer(65536 + 512), 512, 65536);
    expect(makeSyncInflater(module).inflate(deflate(cluster), shared)).toBe(65536);
    expect(shared).toEqual(cluster);
  });
});
