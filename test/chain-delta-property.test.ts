/**
 * Property: for any two disks, the delta of one over the other reads exactly
 * like the first and holds exactly the clusters where the two differ.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import type { ImageHost } from '../src/core/image.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { walkExtents } from '../src/ops/extents.js';
import { writeDelta } from '../src/ops/delta.js';
import { openQcow2 } from '../formats/qcow2/index.js';
import { RawImage } from '../formats/raw/index.js';

const CLUSTER = 4096;
const CLUSTERS = 24;
const SIZE = CLUSTER * CLUSTERS;

/** A disk as a list of writes: [cluster, offset in cluster, length, byte]. */
const writes = fc.array(
  fc.tuple(fc.integer({ min: 0, max: CLUSTERS - 1 }), fc.integer({ min: 0, max: CLUSTER - 1 }), fc.integer({ min: 1, max: 2 * CLUSTER }), fc.integer({ min: 0, max: 3 })),
  { maxLength: 10 },
);

function disk(list: Array<[number, number, number, number]>): Uint8Array {
  const bytes = new Uint8Array(SIZE);
  for (const [cluster, at, length, byte] of list) {
    const start = cluster * CLUSTER + at;
    bytes.fill(byte, start, Math.min(SIZE, start + length));
  }
  return bytes;
}

const host: ImageHost = { codecs: nodeCodecs, warn: () => {} };

describe('delta images (property)', () => {
  it('read like the new disk and hold exactly the differing clusters', async () => {
    await fc.assert(
      fc.asyncProperty(writes, writes, fc.boolean(), async (baseWrites, changes, v2) => {
        const baseBytes = disk(baseWrites);
        const freshBytes = baseBytes.slice();
        for (const [cluster, at, length, byte] of changes) {
          const start = cluster * CLUSTER + at;
          freshBytes.fill(byte, start, Math.min(SIZE, start + length));
        }
        const base = new RawImage(new MemoryDevice(baseBytes, { writable: false, name: 'base.raw' }));
        const fresh = new RawImage(new MemoryDevice(freshBytes, { writable: false, name: 'new.raw' }));
        const out = new MemoryDevice(0, { name: 'delta.qcow2' });
        const options = new Map([['cluster_size', String(CLUSTER)], ...(v2 ? [['compat', '0.10'] as [string, string]] : [])]);
        await writeDelta(fresh, base, out, { backingFile: 'base.raw', backingFormat: 'raw', options, host });
        const delta = await openQcow2(out, { host: { ...host, openBacking: async () => base } });
        // Buffer.equals: a deep equality over 96 Ki elements would dominate the run time.
        expect(Buffer.from(await delta.read(0, SIZE)).equals(Buffer.from(freshBytes))).toBe(true);
        const held = new Set<number>();
        for await (const extent of walkExtents(delta, 0, SIZE)) {
          if (extent.depth !== 0 || extent.kind === 'unallocated') continue;
          for (let at = extent.start; at < extent.start + extent.length; at += CLUSTER) held.add(at / CLUSTER);
        }
        const differing = new Set<number>();
        for (let cluster = 0; cluster < CLUSTERS; cluster++) {
          const range = [cluster * CLUSTER, (cluster + 1) * CLUSTER] as const;
          if (!Buffer.from(baseBytes.subarray(...range)).equals(Buffer.from(freshBytes.subarray(...range)))) differing.add(cluster);
        }
        expect([...held].sort((a, b) => a - b)).toEqual([...differing].sort((a, b) => a - b));
      }),
      { numRuns: 60 },
    );
  });
});
