/**
 * The writer never lays guest data over metadata (qemu's overlap check, the
 * write side of qemu-iotests 060): an L2 entry that points at metadata fails
 * the write as corrupt and leaves the metadata as it was, and a metadata
 * cluster whose refcount reads 0 is never handed out as a free cluster.
 */

import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import type { ImageHost } from '../src/core/image.js';
import { openImage } from '../src/engine/open.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { DATA_BYTE, LAYOUT, buildQcow2, putU64 } from './helpers/hostile-qcow2.js';

const host: ImageHost = { codecs: nodeCodecs, warn: () => {} };
const CLUSTER = 4096;
const COPIED = 1n << 63n;
const at = (cluster: number) => cluster * CLUSTER;

/** The base image (no snapshot) with guest cluster 0's L2 entry pointing at host cluster `target`. */
function pointingAt(target: number): Uint8Array {
  const image = buildQcow2({ noSnapshot: true });
  putU64(image, at(LAYOUT.l2), COPIED | BigInt(at(target)));
  return image;
}

describe('overlap check', () => {
  for (const [target, kind] of [
    [LAYOUT.l1, 'active L1 table'],
    [LAYOUT.refcountTable, 'refcount table'],
    [LAYOUT.refcountBlock, 'refcount block'],
    [LAYOUT.l2, 'active L2 table'],
  ] as const) {
    it(`a write through an L2 entry pointing at the ${kind} fails and changes nothing`, async () => {
      const device = new MemoryDevice(pointingAt(target));
      const before = device.contents().slice(at(target), at(target + 1));
      const image = await openImage(device, { host, writable: true });
      await expect(image.write!(100, new Uint8Array(512).fill(0xee))).rejects.toMatchObject({
        code: 'ECORRUPT',
        message: expect.stringContaining(`overlaps the ${kind}`),
      });
      await image.close();
      expect(device.contents().slice(at(target), at(target + 1))).toEqual(before);
    });
  }

  it('a write through a sound entry still goes in place', async () => {
    const device = new MemoryDevice(buildQcow2({ noSnapshot: true }));
    const image = await openImage(device, { host, writable: true });
    await image.write!(100, new Uint8Array(512).fill(0xee));
    expect(device.contents()[at(LAYOUT.data) + 100]).toBe(0xee);
    await image.close();
  });

  it('a metadata cluster whose refcount reads 0 is not reused for new data', async () => {
    const bytes = buildQcow2({ noSnapshot: true });
    // The L2 table's refcount (16-bit, in the refcount block) reads 0: it looks free.
    new DataView(bytes.buffer).setUint16(at(LAYOUT.refcountBlock) + LAYOUT.l2 * 2, 0);
    const device = new MemoryDevice(bytes);
    const image = await openImage(device, { host, writable: true });
    // Guest cluster 5 is unallocated: a partial write there takes one new cluster.
    await image.write!(at(5) + 10, Uint8Array.of(1, 2, 3));
    expect((await image.read(0, 1))[0]).toBe(DATA_BYTE);
    expect([...(await image.read(at(5) + 10, 3))]).toEqual([1, 2, 3]);
    await image.close();
    const reopened = await openImage(device, { host });
    expect((await reopened.read(0, 1))[0]).toBe(DATA_BYTE);
    expect([...(await reopened.read(at(5) + 10, 3))]).toEqual([1, 2, 3]);
    await reopened.close();
  });
});
