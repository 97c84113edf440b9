/** The L2 cache stays bounded, and block status reads only metadata. */

import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import type { ImageHost } from '../src/core/image.js';
import { openImage } from '../src/engine/open.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { L2Cache, l2CacheCapacity } from '../formats/qcow2/l2-cache.js';
import { L2_CACHE_TABLES, L2_SPARE_BUFFERS, MAX_L2_CACHE_BYTES } from '../formats/qcow2/limits.js';
import { TINY_LAYOUT, buildTinyQcow2 } from './helpers/qcow2-tiny.js';

/** A memory device that records every read, and the buffers read into. */
class RecordingDevice extends MemoryDevice {
  reads: [offset: number, length: number][] = [];
  readonly targets = new Set<ArrayBufferLike>();
  override async read(offset: number, length: number): Promise<Uint8Array> {
    this.reads.push([offset, length]);
    const bytes = await super.read(offset, length);
    this.targets.add(bytes.buffer);
    return bytes;
  }
  override async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.reads.push([offset, target.length]);
    this.targets.add(target.buffer);
    return super.readInto(offset, target);
  }
}

/** A device whose table n (of `clusterSize` bytes) holds the byte n throughout. */
function numberedTables(clusterSize: number, tables: number): RecordingDevice {
  const bytes = new Uint8Array(clusterSize * tables);
  for (let table = 0; table < tables; table++) bytes.fill(table, table * clusterSize, (table + 1) * clusterSize);
  return new RecordingDevice(bytes, { writable: false });
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
    // Two images (compare) of 2 MiB clusters hold 16 MiB of tables, not 64.
    expect(l2CacheCapacity(2 << 20)).toBe(4);
  });

  it('reads tables walked with use into the buffers of evicted ones: memory stays flat, not only the cache', async () => {
    const clusterSize = 512;
    const device = numberedTables(clusterSize, 40);
    const cache = new L2Cache(device, clusterSize, 3);
    for (let table = 0; table < 40; table++) {
      if (table + 1 < 40) cache.prefetch((table + 1) * clusterSize);
      expect(await cache.use(table * clusterSize, (view) => view.getUint8(clusterSize - 1))).toBe(table);
    }
    expect(device.reads.length).toBe(40);
    expect(device.targets.size).toBeLessThanOrEqual(3 + L2_SPARE_BUFFERS);
  });

  it('never reuses a table handed out by get, nor one a use is still reading', async () => {
    const clusterSize = 512;
    const device = numberedTables(clusterSize, 20);
    const cache = new L2Cache(device, clusterSize, 2);
    const kept = await cache.get(1 * clusterSize);
    // Table 2's load is under way when ten others push it out of the cache.
    const reading = cache.use(2 * clusterSize, (view) => view.getUint8(0));
    for (let table = 3; table < 13; table++) await cache.use(table * clusterSize, () => undefined);
    expect(await reading).toBe(2);
    for (let table = 13; table < 20; table++) await cache.use(table * clusterSize, () => undefined);
    expect(kept.getUint8(0)).toBe(1);
    expect(kept.getUint8(clusterSize - 1)).toBe(1);
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
