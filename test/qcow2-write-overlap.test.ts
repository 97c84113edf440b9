/**
 * Overlapping data writes on a write-behind image (what convert opens): writes
 * into new clusters leave the writer's queue before their data lands. Issued
 * all at once, any mix of writes must end as if made one after another in the
 * order they were issued, with a clean check; a failed data write fails its
 * own write only.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { openQcow2, type Qcow2Image } from '../formats/qcow2/index.js';
import { checkImage } from '../src/ops/check.js';
import { convertToQcow2 } from '../src/ops/convert-qcow2.js';
import { RawImage } from '../formats/raw/index.js';
import { createQcow2InMemory, openReadOnly, writerTestHost } from './helpers/qcow2-writer.js';
import { nodeHost } from '../src/node/host.js';

const CLUSTER = 4096;
const DISK = 64 * CLUSTER;

/** A memory device whose writes land after a few turns of the event loop, counting how many are in flight. */
class LaggingDevice extends MemoryDevice {
  private running = 0;
  mostAtOnce = 0;
  failWhen: ((data: Uint8Array) => boolean) | undefined;
  private turn = 0;

  override async write(offset: number, data: Uint8Array): Promise<void> {
    const copy = data.slice(); // what the caller handed over, even if it reuses the buffer too early
    this.running++;
    this.mostAtOnce = Math.max(this.mostAtOnce, this.running);
    try {
      for (let lag = this.turn++ % 4; lag > 0; lag--) await new Promise((resolve) => setImmediate(resolve));
      if (this.failWhen?.(copy)) throw new Error('medium error');
      await super.write(offset, copy);
    } finally {
      this.running--;
    }
  }
}

function openWriteBehind(device: MemoryDevice): Promise<Qcow2Image> {
  return openQcow2(device, { host: writerTestHost(), writable: true, writeBehindMetadata: true });
}

async function newImage(): Promise<LaggingDevice> {
  const created = await createQcow2InMemory(DISK, { cluster_size: String(CLUSTER) });
  return new LaggingDevice(created.contents().slice(), { name: 'overlap.qcow2' });
}

const writeArbitrary = fc.record({
  // Whole-cluster runs (the overlapping path) and unaligned pieces (the in-cluster path), overlapping at will.
  cluster: fc.integer({ min: 0, max: 60 }),
  clusters: fc.integer({ min: 1, max: 4 }),
  unaligned: fc.boolean(),
  fill: fc.integer({ min: 1, max: 255 }),
});

describe('overlapping data writes (write-behind images)', () => {
  it('end as the same writes made in order, and the image checks clean', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(writeArbitrary, { minLength: 1, maxLength: 16 }), async (writes) => {
        const device = await newImage();
        const image = await openWriteBehind(device);
        const model = new Uint8Array(DISK);
        const issued = writes.map(({ cluster, clusters, unaligned, fill }) => {
          const offset = cluster * CLUSTER + (unaligned ? 1000 : 0);
          const length = Math.min(DISK - offset, clusters * CLUSTER - (unaligned ? 1500 : 0));
          const data = new Uint8Array(length).fill(fill);
          model.set(data, offset);
          return image.write(offset, data);
        });
        await Promise.all(issued);
        await image.close();
        const back = await openReadOnly(new MemoryDevice(device.contents().slice(), { writable: false }));
        expect(Buffer.from(await back.read(0, DISK)).equals(Buffer.from(model))).toBe(true);
        const report = await checkImage(new MemoryDevice(device.contents().slice()), 'qcow2');
        expect({ corruptions: report.corruptions, leaks: report.leaks, errors: report.checkErrors }).toEqual({ corruptions: 0, leaks: 0, errors: 0 });
      }),
      { numRuns: 60 },
    );
  });

  it('lands the data of consecutive new-cluster writes at once, runs and single clusters alike; other images write one at a time', async () => {
    for (const [writeBehind, clusters] of [
      [true, 4],
      [true, 1],
      [false, 4],
    ] as const) {
      const device = await newImage();
      const image = writeBehind ? await openWriteBehind(device) : await openQcow2(device, { host: writerTestHost(), writable: true });
      await Promise.all([0, 4, 8, 12].map((cluster) => image.write(cluster * CLUSTER, new Uint8Array(clusters * CLUSTER).fill(cluster + 1))));
      await image.close();
      if (writeBehind) expect(device.mostAtOnce, `${clusters} clusters`).toBeGreaterThan(1);
      else expect(device.mostAtOnce).toBe(1);
    }
  });

  it('fails the write whose data did not land, and only that one', async () => {
    const device = await newImage();
    const image = await openWriteBehind(device);
    device.failWhen = (data) => data.length === 8 * CLUSTER && data[0] === 3;
    const results = await Promise.allSettled(
      [0, 8, 16, 24].map((cluster, index) => image.write(cluster * CLUSTER, new Uint8Array(8 * CLUSTER).fill(index + 1))),
    );
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'fulfilled']);
    device.failWhen = undefined;
    await image.close();
    const back = await openReadOnly(new MemoryDevice(device.contents().slice(), { writable: false }));
    expect((await back.read(24 * CLUSTER, 8 * CLUSTER)).every((byte) => byte === 4)).toBe(true);
  });

  it('convert -O qcow2 keeps guest order on disk while writes overlap, and fails when a data write does', async () => {
    // 12 MiB: data, a zero MiB, data; 64 KiB clusters.
    const source = new Uint8Array(12 << 20);
    for (let i = 0; i < source.length; i += 512) source[i] = 1 + ((i >> 16) % 250);
    source.fill(0, 5 << 20, 6 << 20);
    const convert = async (target: LaggingDevice) =>
      convertToQcow2(new RawImage(new MemoryDevice(source, { writable: false })), target, { options: new Map(), compress: false, host: writerTestHost() });

    const target = new LaggingDevice(0, { name: 'out.qcow2' });
    await convert(target);
    expect(target.mostAtOnce).toBeGreaterThan(1);
    const image = await openReadOnly(new MemoryDevice(target.contents().slice(), { writable: false }));
    expect(Buffer.from(await image.read(0, source.length)).equals(Buffer.from(source))).toBe(true);
    const data = (await image.blockStatus(0, source.length)).filter((extent) => extent.kind === 'data');
    const hostOffsets = data.map((extent) => extent.hostOffset!);
    expect(hostOffsets).toEqual([...hostOffsets].sort((a, b) => a - b));
    const report = await checkImage(new MemoryDevice(target.contents().slice()), 'qcow2');
    expect(report.corruptions + report.leaks + report.checkErrors).toBe(0);

    const failing = new LaggingDevice(0, { name: 'out.qcow2' });
    failing.failWhen = (bytes) => bytes.length >= 1 << 20 && bytes[0] === source[8 << 20];
    await expect(convert(failing)).rejects.toThrow('medium error');
  });

  it('convert -O qcow2 -c: stream writes overlap, streams stay packed in guest order', async () => {
    // 4 MiB of text-like clusters that compress, then a zero MiB, then 1 MiB more; 64 KiB clusters.
    const source = new Uint8Array(6 << 20);
    for (let i = 0; i < source.length; i++) source[i] = 0x61 + ((i * 7 + (i >> 12)) % 13);
    source.fill(0, 4 << 20, 5 << 20);
    for (const compression of ['zlib', 'zstd']) {
      const target = new LaggingDevice(0, { name: 'out.qcow2' });
      const options = new Map([['compression_type', compression]]);
      const result = await convertToQcow2(new RawImage(new MemoryDevice(source, { writable: false })), target, { options, compress: true, host: nodeHost() });
      expect(result.compressedClusters, compression).toBe(80);
      expect(target.mostAtOnce, compression).toBeGreaterThan(1);
      const image = await openReadOnly(new MemoryDevice(target.contents().slice(), { writable: false }));
      expect(Buffer.from(await image.read(0, source.length)).equals(Buffer.from(source))).toBe(true);
      const hostOffsets: number[] = [];
      for (let cluster = 0; cluster < source.length; cluster += 65536) {
        const run = await image.clusterMap.lookup(cluster, 65536);
        if (run.compressed) hostOffsets.push(run.compressed.hostOffset);
      }
      expect(hostOffsets.length).toBe(80);
      expect(hostOffsets.every((offset) => Number.isSafeInteger(offset))).toBe(true);
      expect(hostOffsets).toEqual([...hostOffsets].sort((a, b) => a - b));
      const report = await checkImage(new MemoryDevice(target.contents().slice()), 'qcow2');
      expect(report.corruptions + report.leaks + report.checkErrors).toBe(0);
    }
  });
});
