/**
 * The qcow2 writer against a flat model: random sequences of writes, zero
 * writes, discards and resizes over random create options, read back through
 * platter, then checked by qemu-img check (no errors, no leaks) and compared by
 * qemu-img compare with the model's bytes.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { checkAll, expectQemuCheckClean, layoutCreateOptions, modelPattern, qcow2Layout, runQemuImg, writeSequenceDir, type Qcow2Layout } from './helpers/qcow2-layout.js';
import { afterAll, describe, expect, it } from 'vitest';
import { firstDifference, qcow2TempDir, qcow2ToolAvailable, readWholeImage } from './helpers/qcow2-oracle.js';
import { WRITER_BACKING_NAME, createQcow2InMemory, openReadOnly, openWritable } from './helpers/qcow2-writer.js';

const haveQemu = qcow2ToolAvailable('qemu-img');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

type Op =
  | { kind: 'write'; offset: number; length: number; seed: number }
  | { kind: 'zero'; offset: number; length: number }
  | { kind: 'discard'; offset: number; length: number }
  | { kind: 'resize'; size: number };

interface Scenario extends Qcow2Layout {
  ops: { kind: Op['kind']; a: number; b: number; seed: number }[];
}

const scenario: fc.Arbitrary<Scenario> = fc
  .record({
    layout: qcow2Layout({ minRefcountOrder: 0, maxSectors: 1024, maxBackingSectors: 1200 }),
    ops: fc.array(
      fc.record({
        kind: fc.constantFrom<Op['kind']>('write', 'write', 'write', 'zero', 'discard', 'resize'),
        a: fc.double({ min: 0, max: 1, noNaN: true }),
        b: fc.double({ min: 0, max: 1, noNaN: true }),
        seed: fc.integer({ min: 1, max: 255 }),
      }),
      { minLength: 1, maxLength: 12 },
    ),
  })
  .map(({ layout, ...rest }) => ({ ...layout, ...rest }));

/** Turns fractions into a concrete op for the current disk size (unaligned and multi-cluster ranges). */
function concreteOp(raw: Scenario['ops'][number], size: number, clusterSize: number): Op {
  if (raw.kind === 'resize') return { kind: 'resize', size: Math.max(512, Math.round((raw.a * 2 * size) / 512) * 512) };
  const offset = Math.floor(raw.a * size);
  // Half the ranges are small, half span several clusters.
  const span = raw.seed % 2 === 0 ? Math.min(size - offset, 3 * clusterSize + 700) : Math.min(size - offset, 1500);
  const length = Math.floor(raw.b * span);
  if (raw.kind === 'write') return { kind: 'write', offset, length, seed: raw.seed };
  return { kind: raw.kind, offset, length };
}


/** The model's view: the disk bytes, and what reads through from the backing file. */
class FlatModel {
  disk: Uint8Array;
  constructor(size: number, private readonly backing: Uint8Array | undefined, private readonly clusterSize: number) {
    this.disk = new Uint8Array(size);
    if (backing) this.disk.set(backing.subarray(0, Math.min(size, backing.length)));
  }

  apply(op: Op): void {
    if (op.kind === 'write') this.disk.set(modelPattern(op.length, op.seed), op.offset);
    else if (op.kind === 'zero') this.disk.fill(0, op.offset, op.offset + op.length);
    else if (op.kind === 'discard') this.discard(op.offset, op.length);
    else this.resize(op.size);
  }

  private discard(offset: number, length: number): void {
    const end = offset + length;
    for (let cluster = Math.ceil(offset / this.clusterSize) * this.clusterSize; cluster < end; cluster += this.clusterSize) {
      const clusterEnd = Math.min(cluster + this.clusterSize, this.disk.length);
      if (clusterEnd > end) break;
      for (let at = cluster; at < clusterEnd; at++) this.disk[at] = this.backing && at < this.backing.length ? this.backing[at]! : 0;
    }
  }

  private resize(size: number): void {
    const grown = new Uint8Array(size);
    grown.set(this.disk.subarray(0, Math.min(size, this.disk.length)));
    this.disk = grown;
  }
}

async function runScenario(s: Scenario, index: number): Promise<void> {
  const clusterSize = 2 ** s.clusterBits;
  const backing = s.backingSize === undefined ? undefined : modelPattern(s.backingSize, 99);
  const device = await createQcow2InMemory(s.size, layoutCreateOptions(s), backing);
  const image = await openWritable(device, backing);
  const model = new FlatModel(s.size, backing, clusterSize);
  for (const raw of s.ops) {
    const op = concreteOp(raw, image.size, clusterSize);
    if (op.kind === 'write') await image.write(op.offset, modelPattern(op.length, op.seed));
    else if (op.kind === 'zero') await image.writeZeroes(op.offset, op.length);
    else if (op.kind === 'discard') await image.discard(op.offset, op.length);
    else await image.resize(op.size);
    model.apply(op);
  }
  await image.close();
  const reopened = await openReadOnly(device, backing);
  const bytes = await readWholeImage(reopened);
  expect(firstDifference(bytes, model.disk), JSON.stringify(s)).toBe(-1);
  if (haveQemu) writeOut(device.contents(), model.disk, backing, index, s);
}

/** One finished sequence, written out for the qemu checks that run after the property. */
interface Written {
  dir: string;
  scenario: Scenario;
}
const written: Written[] = [];

function writeOut(file: Uint8Array, disk: Uint8Array, backing: Uint8Array | undefined, index: number, s: Scenario): void {
  const dir = writeSequenceDir(temp.dir, index, file, backing, WRITER_BACKING_NAME);
  writeFileSync(join(dir, 'model.raw'), disk);
  written.push({ dir, scenario: s });
}


/** qemu-img check (no errors, no leaks) and compare (equal to the model) on one written sequence. */
async function qemuAgrees({ dir, scenario }: Written): Promise<void> {
  const label = JSON.stringify(scenario);
  await expectQemuCheckClean(dir, label);
  const compare = await runQemuImg(dir, ['compare', '-f', 'qcow2', '-F', 'raw', 'image.qcow2', 'model.raw']);
  expect(compare.status, `${compare.stdout}${compare.stderr}\n${label}`).toBe(0);
}

describe('qcow2 writer model', () => {
  it('random sequences read back like the model', async () => {
    let index = 0;
    await fc.assert(
      fc.asyncProperty(scenario, async (s) => {
        await runScenario(s, index++);
      }),
      { numRuns: 200 },
    );
  }, 120_000);

  it.skipIf(!haveQemu)('every sequence passes qemu-img check (no errors, no leaks) and compare against the model', async () => {
    expect(written.length).toBeGreaterThanOrEqual(200);
    await checkAll(written, 4, qemuAgrees);
  }, 120_000);
});

describe('concurrent writes', () => {
  it('parallel writes, zero writes and discards land as if made one after another, in call order', async () => {
    const clusterSize = 4096;
    const device = await createQcow2InMemory(1 << 20, { cluster_size: String(clusterSize) });
    const image = await openWritable(device);
    const model = new FlatModel(1 << 20, undefined, clusterSize);
    const operations: Promise<void>[] = [];
    for (let i = 0; i < 60; i++) {
      const offset = (i * 7919 * 13) % ((1 << 20) - 20000);
      const op: Op = i % 5 === 3 ? { kind: 'zero', offset, length: 9000 } : i % 7 === 5 ? { kind: 'discard', offset, length: 12000 } : { kind: 'write', offset, length: 5000 + (i % 3) * 4096, seed: i + 1 };
      model.apply(op);
      if (op.kind === 'write') operations.push(image.write(op.offset, modelPattern(op.length, op.seed)));
      else if (op.kind === 'zero') operations.push(image.writeZeroes(op.offset, op.length));
      else operations.push(image.discard(op.offset, op.length));
    }
    await Promise.all(operations);
    await image.close();
    const reopened = await openReadOnly(device);
    expect(firstDifference(await readWholeImage(reopened), model.disk)).toBe(-1);
  });
});
