/**
 * Crash safety of snapshot create, apply and delete: the operation is cut off
 * after every possible number of writes. Whatever was written, the image shows
 * either the state before or the state after (snapshot list, active disk,
 * every snapshot's data), no COPIED flag sits on a cluster whose refcount is
 * above one (a later write in place would corrupt another state), and
 * `check -r all` leaves it clean: at worst clusters leaked.
 */

import { describe, expect, it } from 'vitest';
import { MemoryDevice, type BlockDevice } from '../src/core/device.js';
import { checkQcow2 } from '../formats/qcow2/check.js';
import { clusterType, l1EntryCopied, l1EntryL2Offset, l2EntryCopied, l2EntryHostOffset } from '../formats/qcow2/entries.js';
import { readMetadata } from '../formats/qcow2/metadata.js';
import { Refcounts } from '../formats/qcow2/refcount.js';
import { openSnapshotView } from '../formats/qcow2/snapshot-view.js';
import { snapshot, type SnapshotAction } from '../src/ops/snapshot.js';
import { firstDifference, readWholeImage } from './helpers/qcow2-oracle.js';
import { CrashingDevice, createQcow2InMemory, openReadOnly, openWritable } from './helpers/qcow2-writer.js';

const SIZE = 64 * 1024;

interface State {
  snapshots: { id: string; name: string; disk: Uint8Array }[];
  active: Uint8Array;
}

async function stateOf(device: BlockDevice): Promise<State> {
  const image = await openReadOnly(device);
  const snapshots = [];
  for (const sn of image.metadata.snapshots) {
    snapshots.push({ id: sn.id, name: sn.name, disk: await readWholeImage(await openSnapshotView(image, sn.id)) });
  }
  return { snapshots, active: await readWholeImage(image) };
}

function sameState(a: State, b: State): boolean {
  if (firstDifference(a.active, b.active) !== -1 || a.snapshots.length !== b.snapshots.length) return false;
  return a.snapshots.every((s, i) => s.id === b.snapshots[i]!.id && s.name === b.snapshots[i]!.name && firstDifference(s.disk, b.snapshots[i]!.disk) === -1);
}

/** No COPIED flag, in the active L1 or the L2 tables it reaches, on a cluster with a refcount other than 1. */
async function expectNoSharedCopied(device: BlockDevice): Promise<void> {
  const metadata = await readMetadata(device);
  const { header, clusterSize, geometry } = metadata;
  const refcounts = await Refcounts.load(
    device,
    { clusterSize, refcountOrder: header.refcountOrder, tableOffset: header.refcountTableOffset, tableClusters: header.refcountTableClusters },
    async () => {},
  );
  for (let l1Index = 0; l1Index < header.l1Size; l1Index++) {
    const l2Offset = l1EntryL2Offset(metadata.l1, l1Index);
    if (l2Offset === 0) continue;
    if (l1EntryCopied(metadata.l1, l1Index)) expect(await refcounts.get(l2Offset / clusterSize), `L2 table ${l2Offset}`).toBe(1);
    const bytes = await device.read(l2Offset, clusterSize);
    const table = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let index = 0; index < geometry.l2Entries; index++) {
      if (clusterType(table, index, geometry.extendedL2, false) === 'compressed' || !l2EntryCopied(table, index, geometry.extendedL2)) continue;
      const hostOffset = l2EntryHostOffset(table, index, geometry.extendedL2);
      if (hostOffset !== 0) expect(await refcounts.get(hostOffset / clusterSize), `data cluster ${hostOffset}`).toBe(1);
    }
  }
}

function fill(length: number, seed: number): Uint8Array {
  return new Uint8Array(length).map((_, i) => (seed * 17 + (i >> 9)) & 0xff || 1);
}

/** An image with two snapshots and data written around them; 1 KiB clusters so tables are several. */
async function baseImage(): Promise<Uint8Array> {
  const device = await createQcow2InMemory(SIZE, { cluster_size: '1024' });
  const image = await openWritable(device);
  await image.write(0, fill(SIZE / 2, 1));
  await snapshot(image, { kind: 'create', name: 's1', date: { sec: 1, nsec: 0 } });
  await image.write(SIZE / 4, fill(SIZE / 2, 2));
  await snapshot(image, { kind: 'create', name: 's2', date: { sec: 2, nsec: 0 } });
  await image.write(SIZE / 8, fill(SIZE / 8, 3));
  await image.write((SIZE * 7) / 8, fill(SIZE / 8, 4));
  await image.close();
  return device.contents();
}

async function runWithBudget(base: Uint8Array, action: SnapshotAction, budget: number): Promise<CrashingDevice> {
  const device = new CrashingDevice(base, budget);
  const image = await openWritable(device);
  await snapshot(image, { ...action, ...(action.kind === 'create' ? { date: { sec: 3, nsec: 0 } } : {}) } as SnapshotAction);
  return device;
}

describe('snapshot operations cut off after any number of writes', () => {
  const actions: SnapshotAction[] = [
    { kind: 'create', name: 'new' },
    { kind: 'apply', snapshot: 's1' },
    { kind: 'delete', snapshot: 's1' },
    { kind: 'delete', snapshot: 's2' },
  ];
  for (const action of actions) {
    it(`${action.kind} ${JSON.stringify(action)}`, async () => {
      const base = await baseImage();
      const before = await stateOf(new MemoryDevice(base.slice()));
      const complete = await runWithBudget(base, action, Number.MAX_SAFE_INTEGER);
      const after = await stateOf(new MemoryDevice(complete.contents()));
      expect(sameState(before, after)).toBe(false);
      const total = complete.writes;
      expect(total).toBeGreaterThan(3);
      for (let budget = 0; budget <= total; budget++) {
        const crashed = (await runWithBudget(base, action, budget)).contents();
        const state = await stateOf(new MemoryDevice(crashed.slice()));
        expect(sameState(state, before) || sameState(state, after), `after ${budget} of ${total} writes`).toBe(true);
        await expectNoSharedCopied(new MemoryDevice(crashed.slice()));
        const repaired = new MemoryDevice(crashed.slice());
        await checkQcow2(repaired, await readMetadata(repaired), 'all');
        const report = await checkQcow2(repaired, await readMetadata(repaired));
        expect([report.corruptions, report.leaks, report.checkErrors], `after ${budget} writes: ${report.messages.join('\n')}`).toEqual([0, 0, 0]);
      }
    });
  }
});
