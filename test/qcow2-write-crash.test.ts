/**
 * Crash consistency: the same write sequence is replayed with every write after
 * the k-th dropped, for every k. The image must still open, and qemu-img check
 * must find no corruption (leaked clusters are allowed).
 */

import { execFile, execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { qcow2TempDir, qcow2ToolAvailable } from './helpers/qcow2-oracle.js';
import { CrashingDevice, createQcow2InMemory, openReadOnly, openWritable } from './helpers/qcow2-writer.js';
import { editBitmaps, storeBitmaps, type Qcow2Image } from '../formats/qcow2/index.js';
import { MemoryDevice } from '../src/core/device.js';
import { changeRefcountOrder } from '../formats/qcow2/refcount-order.js';
import { readMetadata } from '../formats/qcow2/metadata.js';

const haveQemu = qcow2ToolAvailable('qemu-img');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

const KIB = 1024;

/** qemu-img check --output=json, without throwing on its non-zero statuses. */
function qemuCheck(file: string): Promise<{ status: number; stdout: string }> {
  return new Promise((resolve) => {
    execFile('qemu-img', ['check', '--output=json', file], (error, stdout) => {
      resolve({ status: error ? Number((error as { code?: number }).code ?? -1) : 0, stdout });
    });
  });
}

/** Runs `task` over `items`, `width` at a time. */
async function inParallel<T>(items: T[], width: number, task: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await task(items[next++]!);
  };
  await Promise.all(Array.from({ length: width }, worker));
}

/** qemu-img check on every file: no corruption (leaks allowed); returns the exit statuses seen. */
async function expectNoCorruption(files: string[]): Promise<Set<number>> {
  const statuses = new Set<number>();
  await inParallel(files, 4, async (file) => {
    const check = await qemuCheck(file);
    const report = JSON.parse(check.stdout) as Record<string, number>;
    expect(report['corruptions'] ?? 0, `${file}: ${check.stdout}`).toBe(0);
    expect([0, 3], `${file}: ${check.stdout}`).toContain(check.status);
    statuses.add(check.status);
  });
  return statuses;
}

/**
 * Allocation, L2 tables, new refcount blocks, a refcount table move (the base
 * file ends just below what one table cluster covers), COW, zeroing, discard,
 * L1 growth and a shrink.
 */
async function sequence(image: Qcow2Image): Promise<void> {
  const fill = (length: number, value: number) => new Uint8Array(length).fill(value);
  await image.write(3000 * KIB + 100, fill(12 * KIB, 3));
  await image.write(1000, fill(600, 4));
  await image.writeZeroes(2 * KIB, 2 * KIB);
  await image.discard(3000 * KIB, 4 * KIB);
  await image.resize(5 * 1024 * KIB);
  await image.write(4900 * KIB, fill(2 * KIB, 5));
  await image.resize(3500 * KIB);
}

/** 512-byte clusters with 64-bit refcounts: one table cluster covers 2 MiB of file; fill it almost. */
async function baseImage(): Promise<Uint8Array> {
  const device = await createQcow2InMemory(4 * 1024 * KIB, { cluster_size: '512', refcount_bits: '64' });
  const image = await openWritable(device);
  await image.write(0, new Uint8Array(1978 * KIB).fill(7));
  await image.close();
  expect(device.size).toBeLessThan(2 * 1024 * KIB);
  return device.contents().slice();
}

/** A 4 MiB image holding data, with lazy refcounts off and on, to be emptied whole. */
async function imageToEmpty(lazy: boolean): Promise<Uint8Array> {
  const device = await createQcow2InMemory(4 * 1024 * KIB, { cluster_size: '4096', lazy_refcounts: lazy ? 'on' : 'off' });
  const image = await openWritable(device);
  await image.write(100 * KIB, new Uint8Array(900 * KIB).fill(3));
  await image.write(3000 * KIB, new Uint8Array(10 * KIB).fill(4));
  await image.close();
  return device.contents().slice();
}

describe('qcow2 writer crash consistency', () => {
  for (const lazy of [false, true]) {
    it(`emptying a whole image${lazy ? ' (lazy refcounts)' : ''}, cut off after any write, leaves an image that opens and repairs clean`, async () => {
      const base = await imageToEmpty(lazy);
      const full = new CrashingDevice(base, Number.MAX_SAFE_INTEGER);
      const image = await openWritable(full);
      expect(await image.emptyCompletely()).toBe(true);
      await image.close();
      expect(full.contents().length).toBe(4 * 4096);
      const files: string[] = [];
      for (let budget = 0; budget <= full.writes; budget++) {
        const device = new CrashingDevice(base, budget);
        const emptying = await openWritable(device);
        await emptying.emptyCompletely();
        await emptying.close();
        // Opens read-only as it is, and for writing (a dirty image has its refcounts rebuilt first).
        await (await openReadOnly(new MemoryDevice(device.contents().slice()))).read(0, 64 * KIB);
        const repaired = new MemoryDevice(device.contents().slice());
        await (await openWritable(repaired)).close();
        const file = join(temp.dir, `empty-${lazy}-${budget}.qcow2`);
        writeFileSync(file, repaired.contents());
        files.push(file);
      }
      if (haveQemu) await expectNoCorruption(files);
    }, 60_000);
  }

  it('changing the refcount width, cut off after any write, leaves an image without corruption', async () => {
    // 512-byte clusters: the new 64-bit counts need several blocks, and a discarded gap takes some of them.
    const source = await createQcow2InMemory(2 * 1024 * KIB, { cluster_size: '512', refcount_bits: '16' });
    const filling = await openWritable(source);
    await filling.write(0, new Uint8Array(600 * KIB).fill(5));
    await filling.discard(100 * KIB, 50 * KIB);
    await filling.close();
    const base = source.contents().slice();
    const change = async (device: MemoryDevice) => changeRefcountOrder(device, await readMetadata(device), 6);
    const full = new CrashingDevice(base, Number.MAX_SAFE_INTEGER);
    await change(full);
    expect((await readMetadata(new MemoryDevice(full.contents().slice()))).header.refcountOrder).toBe(6);
    const files: string[] = [];
    for (let budget = 0; budget <= full.writes; budget++) {
      const device = new CrashingDevice(base, budget);
      await change(device);
      const file = join(temp.dir, `order-${budget}.qcow2`);
      writeFileSync(file, device.contents());
      files.push(file);
    }
    if (haveQemu) await expectNoCorruption(files);
  }, 60_000);

  it('storing and editing bitmaps (merges too), then a guest write, cut off after any write, leaves an image without corruption whose bitmaps qemu loads', async () => {
    const source = await createQcow2InMemory(4 * 1024 * KIB, { cluster_size: '4096' });
    const bits = async function* () {
      yield new Uint8Array(4096).fill(0x0f);
      yield new Uint8Array(4096);
    };
    const made = await openWritable(source);
    await storeBitmaps(made, [
      { name: 'kept', granularity: 512, auto: true, bits: bits() },
      { name: 'cleared', granularity: 512, auto: false, bits: bits() },
    ]);
    await made.close();
    const base = source.contents().slice();
    const edits = async (image: Qcow2Image) => {
      await editBitmaps(image, 'cleared', [{ kind: 'clear' }, { kind: 'enable' }]);
      await editBitmaps(image, 'added', [{ kind: 'add', granularity: 65536 }, { kind: 'merge', name: 'kept' }]);
      await editBitmaps(image, 'kept', [{ kind: 'remove' }]);
      await image.write(0, new Uint8Array(8 * KIB).fill(6));
      await image.close();
    };
    const full = new CrashingDevice(base, Number.MAX_SAFE_INTEGER);
    await edits(await openWritable(full));
    // Closed, the enabled bitmaps are stored again with the write's bits, and no longer in use.
    expect((await openReadOnly(new MemoryDevice(full.contents().slice()))).metadata.bitmaps.map((bitmap) => [bitmap.name, bitmap.flags])).toEqual([
      ['cleared', ['auto']],
      ['added', ['auto']],
    ]);
    const files: string[] = [];
    for (let budget = 0; budget <= full.writes; budget++) {
      const device = new CrashingDevice(base, budget);
      await edits(await openWritable(device));
      const file = join(temp.dir, `bitmaps-${budget}.qcow2`);
      writeFileSync(file, device.contents());
      files.push(file);
    }
    if (!haveQemu) return;
    await expectNoCorruption(files);
    for (const file of files) expect(JSON.parse(execFileSync('qemu-img', ['info', '--output=json', file], { encoding: 'utf8' })).format).toBe('qcow2');
  }, 60_000);

  it('every prefix of the writes leaves an image without corruption', async () => {
    const base = await baseImage();
    const full = new CrashingDevice(base, Number.MAX_SAFE_INTEGER);
    const image = await openWritable(full);
    const tableBefore = image.metadata.header.refcountTableOffset;
    await sequence(image);
    expect(image.metadata.header.refcountTableOffset).not.toBe(tableBefore);
    await image.close();
    const total = full.writes;
    expect(total).toBeGreaterThan(50);
    const files: string[] = [];
    for (let budget = 0; budget <= total; budget++) {
      const device = new CrashingDevice(base, budget);
      const crashing = await openWritable(device);
      await sequence(crashing);
      const reopened = await openReadOnly(new MemoryDevice(device.contents()));
      await reopened.read(0, 64 * KIB);
      const file = join(temp.dir, `crash-${budget}.qcow2`);
      writeFileSync(file, device.contents());
      files.push(file);
    }
    if (!haveQemu) return;
    const statuses = await expectNoCorruption(files);
    // The sequence is long enough that some crashes do leak.
    expect(statuses.has(3)).toBe(true);
  }, 120_000);
});
