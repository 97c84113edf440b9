/**
 * Mutation fuzzing of MBR/EBR and GPT tables: whatever bytes of the tables are
 * changed, reading the partition table either answers (partitions inside the
 * disk, or a warning for each that runs past its end, as a disk cut short has)
 * or throws a PlatterError — never another exception, never a read out of
 * bounds, never a hang. FUZZ_RUNS / FUZZ_SECONDS / FUZZ_SEED as in fuzz-qcow2.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { PlatterError } from '../src/core/errors.js';
import { readPartitionTable } from '../src/engine/partition-table.js';
import { BoundsCheckingDevice } from './helpers/fuzz-device.js';
import { DISK_SECTORS, gptDisk, mbrWithExtended, writeEbr } from './helpers/hostile-partitions.js';
import { fuzzRun } from './helpers/fuzz-run.js';

const fuzz = fuzzRun(2000);

/** An MBR with a three-EBR chain, and a GPT disk. */
function seeds(): Uint8Array[] {
  const mbr = mbrWithExtended(1000, 1000);
  writeEbr(mbr, 1000, { type: 0x83, lbaStart: 2, sectors: 10 }, 100);
  writeEbr(mbr, 1100, { type: 0x82, lbaStart: 2, sectors: 10 }, 200);
  writeEbr(mbr, 1200, { type: 0x83, lbaStart: 2, sectors: 10 });
  return [mbr, gptDisk()];
}
const SEEDS = seeds();

/** Sectors whose bytes matter: the MBR, the EBRs, the GPT headers and entry arrays. */
const TARGET_SECTORS = [0, 0, 1, 1, 2, 1000, 1100, 1200, DISK_SECTORS - 33, DISK_SECTORS - 1];

const mutation = fc.record({
  sector: fc.constantFrom(...TARGET_SECTORS),
  offset: fc.oneof(fc.integer({ min: 440, max: 511 }), fc.integer({ min: 0, max: 127 }), fc.integer({ min: 0, max: 511 })),
  value: fc.oneof(
    fc.uint8Array({ minLength: 1, maxLength: 8 }),
    fc.constantFrom([0xff, 0xff, 0xff, 0xff], [0, 0, 0, 0], [0x05], [0x0f], [0xee], [0, 0, 0, 0x80]).map((b) => Uint8Array.from(b)),
  ),
});

const fuzzCase = fc.record({ seed: fc.integer({ min: 0, max: SEEDS.length - 1 }), mutations: fc.array(mutation, { minLength: 1, maxLength: 6 }) });

async function exercise(bytes: Uint8Array): Promise<string[]> {
  const device = new BoundsCheckingDevice(new MemoryDevice(bytes, { writable: false, name: 'fuzz.img' }));
  const problems: string[] = [];
  try {
    const table = await readPartitionTable(device);
    const sectors = Math.floor(bytes.length / (table?.sectorSize ?? 512));
    for (const partition of table?.partitions ?? []) {
      if (!(Number.isSafeInteger(partition.start) && Number.isSafeInteger(partition.size) && partition.start >= 0 && partition.size >= 0)) {
        problems.push(`partition ${partition.number} (${partition.start}+${partition.size}) is not a range of sectors`);
      }
      const warned = table!.warnings.some((warning) => warning.includes(`partition ${partition.number} (`) && warning.includes('past the end of the disk'));
      if (partition.start + partition.size > sectors && !warned) {
        problems.push(`partition ${partition.number} (${partition.start}+${partition.size}) runs past the disk without a warning`);
      }
    }
  } catch (error) {
    if (!(error instanceof PlatterError)) problems.push(`foreign exception: ${String(error)}`);
  }
  return [...problems, ...device.violations.map((v) => `out of bounds: ${v}`)];
}

describe('partition table mutation fuzzing', () => {
  it('the seed disks read cleanly', async () => {
    for (const disk of SEEDS) expect(await exercise(disk)).toEqual([]);
  });

  it(
    `mutated tables answer or fail with a PlatterError (${fuzz.label})`,
    async () => {
      await fc.assert(
        fc.asyncProperty(fuzzCase, async ({ seed: index, mutations }) => {
          const disk = SEEDS[index]!.slice();
          for (const { sector, offset, value } of mutations) disk.set(value.subarray(0, 512 - offset), sector * 512 + offset);
          expect(await exercise(disk)).toEqual([]);
        }),
        fuzz.parameters,
      );
    },
    fuzz.timeoutMs,
  );
});
