/**
 * Snapshot operations on damaged images: a snapshot whose L1 table lies
 * outside the file or points at misaligned L2 tables, an L1 table reaching one
 * L2 table twice. Each gives a specific error quickly, and nothing is written
 * before the damage is found.
 */

import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { writeU64 } from '../formats/qcow2/refcount.js';
import { snapshot, type SnapshotAction } from '../src/ops/snapshot.js';
import { firstDifference } from './helpers/qcow2-oracle.js';
import { createQcow2InMemory, openReadOnly, openWritable } from './helpers/qcow2-writer.js';

/** An image (4 KiB clusters) with data in two L2 tables' ranges and one snapshot; returns the bytes and the snapshot's L1 offset. */
async function imageWithSnapshot(): Promise<{ bytes: Uint8Array; snapshotL1: number; tableOffset: number }> {
  const device = await createQcow2InMemory(8 << 20, { cluster_size: '4096' });
  const image = await openWritable(device);
  await image.write(0, new Uint8Array(8192).fill(1));
  await image.write(2 << 20, new Uint8Array(4096).fill(2));
  await snapshot(image, { kind: 'create', name: 's' });
  await image.close();
  const reopened = await openReadOnly(device);
  const sn = reopened.metadata.snapshots[0]!;
  return { bytes: device.contents().slice(), snapshotL1: sn.l1TableOffset, tableOffset: reopened.metadata.header.snapshotsOffset };
}

async function expectRefused(bytes: Uint8Array, action: SnapshotAction, code: string, message: RegExp): Promise<void> {
  const device = new MemoryDevice(bytes.slice(), { name: 'hostile.qcow2' });
  const image = await openWritable(device);
  await expect(snapshot(image, action)).rejects.toMatchObject({ code, message: expect.stringMatching(message) });
  expect(firstDifference(device.contents(), bytes)).toBe(-1);
}

describe('snapshot operations on damaged images', () => {
  it('a snapshot L1 table past the end of the file', async () => {
    const { bytes, tableOffset } = await imageWithSnapshot();
    writeU64(new DataView(bytes.buffer), tableOffset, 1 << 40);
    for (const action of [{ kind: 'apply', snapshot: 's' }, { kind: 'delete', snapshot: 's' }] as SnapshotAction[]) {
      await expectRefused(bytes, action, 'ECORRUPT', /L1 table/);
    }
  });

  it('a snapshot L1 entry pointing at a misaligned L2 table', async () => {
    const { bytes, snapshotL1 } = await imageWithSnapshot();
    const view = new DataView(bytes.buffer);
    view.setUint32(snapshotL1 + 4, (view.getUint32(snapshotL1 + 4) + 512) >>> 0);
    await expectRefused(bytes, { kind: 'apply', snapshot: 's' }, 'ECORRUPT', /not cluster-aligned/);
  });

  it('an L1 table that reaches one L2 table twice', async () => {
    const { bytes, snapshotL1 } = await imageWithSnapshot();
    bytes.copyWithin(snapshotL1 + 8, snapshotL1, snapshotL1 + 8);
    await expectRefused(bytes, { kind: 'apply', snapshot: 's' }, 'ECORRUPT', /referenced twice/);
  });
});
