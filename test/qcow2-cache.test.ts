/** The L2 cache stays bounded, and block status reads only metadata. */

import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import type { ImageHost } from '../src/core/image.js';
import { openImage } from '../src/engine/open.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { L2Cache, l2CacheCapacity } from '../formats/qcow2/l2-cache.js';
import { L2_CACHE_TABLES, MAX_L2_CACHE_BYTES } from '../formats/qcow2/limits.js';
import { TINY_LAYOUT, buildTinyQcow2 } from './helpers/qcow2-tiny.js';

/** A memory device that records every read. */
class RecordingDevice extends MemoryDevice {
  reads: [offset: number, length: number][] = [];
  override async read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, length]);
    return super.read(offset, length);
  }
}

describe('L2 cache', () => {
  it('holds at most its capacity, evicting the least recently used table', async () => {
    const clusterSize = 512;
    const device = new RecordingDevice(new Uint8Array(clusterSize * 10), { writable: false });
    const cache = new L2Cache(device, clusterSize, 3);
    for (const table of [1, 2, 3]) await cache.get(table * clusterSize);
    await cache.get(1 * clusterSize); // 1 is now the most recent
    await cache.get(4 * clusterSize); // evicts 2
    expect(cache.size).toBe(3);
    device.reads = [];
    await cache.get(1 * clusterSize);
    await cache.get(3 * clusterSize);
    expect(device.reads).toEqual([]);
    await cache.get(2 * clusterSize);
    expect(device.reads).toEqual([[2 * clusterSize, clusterSize]]);
  });

  it('bounds its memory whatever the cluster size', () => {
    for (let bits = 9; bits <= 21; bits++) {
      const capacity = l2CacheCapacity(2 ** bits);
      expect(capacity).toBeGreaterThanOrEqual(1);
      expect(capacity).toBeLessThanOrEqual(L2_CACHE_TABLES);
      expect(capacity * 2 ** bits).toBeLessThanOrEqual(MAX_L2_CACHE_BYTES);
    }
  });

  it('does not keep a failed load', async () => {
    const device = new MemoryDevice(new Uint8Array(1024), { writable: false });
    const cache = new L2Cache(device, 512, 4);
    await expect(cache.get(4096)).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect(cache.size).toBe(0);
  });
});

describe('block status', () => {
  it('never reads guest data clusters', async () => {
    const device = new RecordingDevice(buildTinyQcow2(), { writable: false });
    const host: ImageHost = { codecs: nodeCodecs, warn: () => {} };
    const image = await openImage(device, { host });
    device.reads = [];
    const extents = await image.blockStatus(0, image.size);
    expect(extents.length).toBeGreaterThan(1);
    expect(device.reads.length).toBeGreaterThan(0);
    for (const [offset, length] of device.reads) {
      // Only the L2 table is read; data and compressed clusters are not touched.
      expect(offset).toBe(TINY_LAYOUT.l2Table);
      expect(length).toBe(TINY_LAYOUT.clusterSize);
    }
  });
});
