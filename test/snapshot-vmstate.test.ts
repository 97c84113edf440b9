/**
 * A snapshot with VM state, laid out as a running qemu saves it: the state's
 * clusters live past the end of the disk, at the first L1 index the disk does
 * not use, reached only through the snapshot's L1 table. Other snapshots come
 * and go around it; the state keeps its clusters and bytes, the list shows its
 * size, and qemu-img check stays clean.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { l1EntryL2Offset, l2EntryHostOffset } from '../formats/qcow2/entries.js';
import { readL1Table, readMetadata } from '../formats/qcow2/metadata.js';
import { createSnapshot } from '../formats/qcow2/snapshot-create.js';
import { writeSnapshotTable } from '../formats/qcow2/snapshot-table-write.js';
import { qcow2TempDir, qcow2ToolAvailable, sh } from './helpers/qcow2-oracle.js';
import { createQcow2InMemory, openWritable } from './helpers/qcow2-writer.js';
import { platter } from './helpers/tools.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

const DISK = 1 << 20;
const CLUSTER = 65536;
/** qemu's qcow2_vm_state_offset: the first L1 index past the disk, times what one L2 table maps. */
const VM_STATE_OFFSET = (CLUSTER / 8) * CLUSTER;
const VM_STATE_SIZE = 2 * CLUSTER;

function vmState(): Uint8Array {
  const out = new Uint8Array(VM_STATE_SIZE);
  for (let i = 0; i < out.length; i++) out[i] = (i * 7 + 3) & 0xff;
  return out;
}

/** Builds the image: guest data, then a snapshot 'vm' with VM state, as qemu's savevm leaves it. */
async function imageWithVmState(): Promise<Uint8Array> {
  const device = await createQcow2InMemory(DISK, {});
  const image = await openWritable(device);
  const writer = image.writer!;
  await image.write(0, new Uint8Array(3 * CLUSTER).fill(0x5a));
  // savevm writes the state past the disk end through the active L1, snapshots, then drops it from the active L1.
  await writer.resize(VM_STATE_OFFSET + VM_STATE_SIZE);
  await image.write(VM_STATE_OFFSET, vmState());
  await createSnapshot(image, 'vm', { date: { sec: 1_700_000_000, nsec: 0 } });
  await writer.discard(VM_STATE_OFFSET, VM_STATE_SIZE);
  await writer.resize(DISK);
  const host = writer.host;
  const list = host.metadata.snapshots.map((s) => ({ ...s, vmStateSize: VM_STATE_SIZE, diskSize: DISK, vmClockNsec: 1_500_000_000n }));
  await writeSnapshotTable(host, list, () => writer.writeHeader());
  await image.close();
  return device.contents();
}

/** The VM state bytes of snapshot `name`, found through its L1 table. */
async function readVmState(file: Uint8Array, name: string): Promise<Uint8Array> {
  const device = new MemoryDevice(file, { writable: false });
  const metadata = await readMetadata(device);
  const sn = metadata.snapshots.find((s) => s.name === name)!;
  const l1 = await readL1Table(device, sn.l1TableOffset, sn.l1Size, CLUSTER);
  const l2Offset = l1EntryL2Offset(l1, VM_STATE_OFFSET / (CLUSTER * (CLUSTER / 8)));
  const l2Bytes = await device.read(l2Offset, CLUSTER);
  const l2 = new DataView(l2Bytes.buffer, l2Bytes.byteOffset, l2Bytes.byteLength);
  const out = new Uint8Array(VM_STATE_SIZE);
  for (let i = 0; i < VM_STATE_SIZE / CLUSTER; i++) {
    out.set(await device.read(l2EntryHostOffset(l2, i, false), CLUSTER), i * CLUSTER);
  }
  return out;
}

function expectQemuCheckClean(dir: string, image: string): void {
  const report = JSON.parse(sh(dir, 'qemu-img', ['check', '--output=json', image])) as Record<string, number>;
  expect([report['corruptions'] ?? 0, report['leaks'] ?? 0]).toEqual([0, 0]);
}

describe.skipIf(!haveQemu)('snapshots with VM state', () => {
  it('keep their state through operations on other snapshots, and list its size', async () => {
    const dir = temp.dir;
    const path = join(dir, 'vm.qcow2');
    writeFileSync(path, await imageWithVmState());
    expectQemuCheckClean(dir, 'vm.qcow2');
    const qemuList = sh(dir, 'qemu-img', ['snapshot', '-l', 'vm.qcow2']);
    expect(qemuList).toMatch(/ 128 KiB /);
    const ours = platter(['snapshot', 'vm.qcow2'], { cwd: dir });
    expect(ours.stdout).toBe(qemuList);
    const json = JSON.parse(platter(['snapshot', '--output=json', 'vm.qcow2'], { cwd: dir }).stdout) as Record<string, number>[];
    expect(json[0]!['vm-state-size']).toBe(VM_STATE_SIZE);

    sh(dir, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 0 512k', 'vm.qcow2']);
    for (const args of [
      ['-c', 'other'],
      ['-a', 'other'],
      ['-d', 'other'],
      ['-c', 'third'],
    ]) {
      expect(platter(['snapshot', ...args, 'vm.qcow2'], { cwd: dir }).status).toBe(0);
      expectQemuCheckClean(dir, 'vm.qcow2');
    }
    expect(await readVmState(new Uint8Array(readFileSync(path)), 'vm')).toEqual(vmState());
    // Reverting to it brings the state clusters into the active L1, as qemu's loadvm does; deleting it then keeps them.
    expect(platter(['snapshot', '-a', 'vm', 'vm.qcow2'], { cwd: dir }).status).toBe(0);
    expectQemuCheckClean(dir, 'vm.qcow2');
    expect(platter(['snapshot', '-d', 'third', 'vm.qcow2'], { cwd: dir }).status).toBe(0);
    expectQemuCheckClean(dir, 'vm.qcow2');
    expect(await readVmState(new Uint8Array(readFileSync(path)), 'vm')).toEqual(vmState());
    const guest = sh(dir, 'qemu-io', ['-f', 'qcow2', '-c', 'read -P 0x5a 0 192k', 'vm.qcow2']);
    expect(guest).toMatch(/read 196608\/196608/);
  });
});
