/**
 * Mutation fuzzing of `check`: on any mutated qcow2 image, checking answers or
 * fails with a PlatterError (never another exception, never a hang), and an
 * image that a repair (`-r all`) reports clean stays clean: a second repair
 * finds nothing to fix, and reading it fails, if at all, only with a PlatterError.
 *
 * FUZZ_RUNS sets the number of cases (default 1,000); FUZZ_SECONDS runs for
 * that long instead (`npm run fuzz -- --seconds 600`). FUZZ_SEED replays a run.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { PlatterError } from '../src/core/errors.js';
import { checkExitStatus, checkImage, type CheckReport, type RepairMode } from '../src/ops/check.js';
import { checkJson } from '../src/cli/render/check.js';
import { exercise, fuzzCaseArb, mutatedImage, type FuzzCase } from './helpers/fuzz-qcow2.js';
import { qcow2TempDir, qcow2ToolAvailable, shStatus } from './helpers/qcow2-oracle.js';

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll } from 'vitest';
import { fuzzRun } from './helpers/fuzz-run.js';

const fuzz = fuzzRun(1000);
/** A single check that takes longer than this is a hang. */
const CASE_TIMEOUT_MS = 2000;

/** What a check did: its report, or the code of the PlatterError it failed with. */
type Outcome = { report: CheckReport } | { code: string };

async function check(device: MemoryDevice, mode: RepairMode): Promise<Outcome> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`check -r ${mode} gave no answer within ${CASE_TIMEOUT_MS} ms`)), CASE_TIMEOUT_MS);
  });
  try {
    return { report: await Promise.race([checkImage(device, 'qcow2', mode), hang]) };
  } catch (error) {
    if (error instanceof PlatterError) return { code: error.code };
    throw error;
  } finally {
    clearTimeout(timer);
  }
}

describe('qcow2 check mutation fuzzing', () => {
  it(
    `check answers or fails with a PlatterError, and a repaired image stays repaired (${fuzz.label})`,
    async () => {
      const tally = { clean: 0, damaged: 0, refused: 0, repaired: 0 };
      await fc.assert(
        fc.asyncProperty(fuzzCaseArb, async (fuzzCase) => {
          const bytes = mutatedImage(fuzzCase);
          const readOnly = await check(new MemoryDevice(bytes.slice(), { writable: false, name: 'fuzz.qcow2' }), 'none');
          if ('code' in readOnly) {
            tally.refused++;
            return;
          }
          const { corruptions, leaks, checkErrors } = readOnly.report;
          if (corruptions + leaks + checkErrors === 0) {
            tally.clean++;
            return;
          }
          tally.damaged++;
          const device = new MemoryDevice(bytes.slice(), { writable: true, name: 'fuzz.qcow2' });
          const repair = await check(device, 'all');
          if ('code' in repair || !repair.report.repaired) return;
          const left = repair.report;
          // An image the repair could not make whole may change again on the next
          // repair (qemu-img's does too); one it made whole must stay whole.
          if (left.corruptions + left.leaks + left.checkErrors > 0) return;
          tally.repaired++;
          const again = await check(device, 'all');
          expect(again, 'a second check of the repaired image').toMatchObject({
            report: { repaired: false, corruptions: 0, leaks: 0, checkErrors: 0 },
          });
          // Reading it may still fail cleanly: like qemu-img's, the check does not
          // decode compressed clusters, so one whose stream was damaged stays damaged.
          expect((await exercise(device.contents().slice())).problems, 'reading the repaired image').toEqual([]);
        }),
        fuzz.parameters,
      );
      // Each outcome must occur, or the mutations are not reaching the checker.
      expect(tally.clean).toBeGreaterThan(0);
      expect(tally.damaged).toBeGreaterThan(0);
      expect(tally.repaired).toBeGreaterThan(0);
    },
    fuzz.timeoutMs,
  );
});

const haveQemu = qcow2ToolAvailable('qemu-img');
/** Mutated images per CI run for the comparison with qemu-img (each costs a qemu-img process). */
const differential = fuzzRun(150);

/** Mutations on which platter's check once disagreed with qemu-img's, each with what it was about. */
const REGRESSIONS: [string, FuzzCase][] = [
  ['virtual size under one sector: no clusters', { seed: 0, mutations: [{ cluster: 0, offset: 27, value: bytes(0, 0, 0, 1) }, { cluster: 0, offset: 60, value: bytes(0) }], keep: 1 }],
  ['an L2 table one cluster past the end of the file', { seed: 3, mutations: [{ cluster: 1, offset: 14, value: bytes(20, 0) }], keep: 1 }],
  ['a misaligned cluster reaching past the end of the file', { seed: 0, mutations: [{ cluster: 4, offset: 398, value: bytes(146, 0) }], keep: 1 }],
  ['a refcount block at 2^63', { seed: 0, mutations: [{ cluster: 2, offset: 0, value: bytes(128, 0) }], keep: 1 }],
  ['a snapshot entry without extra data', { seed: 0, mutations: [{ cluster: 8, offset: 36, value: bytes(0, 0, 0, 0) }], keep: 1 }],
  ['a snapshot L1 table that is not cluster-aligned', { seed: 0, mutations: [{ cluster: 8, offset: 7, value: bytes(128, 0, 0, 0) }], keep: 1 }],
  ['a refcount table entry with reserved bits', { seed: 0, mutations: [{ cluster: 2, offset: 7, value: bytes(1) }], keep: 1 }],
  ['a snapshot L1 table too large to read (opened, then reported)', { seed: 0, mutations: [{ cluster: 8, offset: 8, value: bytes(234) }], keep: 1 }],
  [
    'snapshot ids and names with NULs, printed as C strings',
    {
      seed: 1,
      mutations: [
        { cluster: 9, offset: 26, value: bytes(89, 44, 253, 125, 49, 89, 199, 106) },
        { cluster: 2, offset: 343, value: bytes(188, 142, 166, 126, 232) },
        { cluster: 8, offset: 9, value: bytes(128, 0, 0, 0, 0, 0, 64, 0) },
        { cluster: 2, offset: 180, value: bytes(88) },
        { cluster: 4, offset: 40, value: bytes(61, 156, 58, 234, 160, 14) },
      ],
      keep: 1,
    },
  ],
  ['a compressed entry with COPIED and a subcluster bitmap (extended L2)', { seed: 4, mutations: [{ cluster: 4, offset: 29, value: bytes(127, 255, 255, 255) }, { cluster: 1, offset: 217, value: bytes(64, 0, 0, 0, 0, 0, 16, 0) }], keep: 1 }],
];

function bytes(...values: number[]): Uint8Array {
  return Uint8Array.from(values);
}

describe.skipIf(!haveQemu)('qcow2 check against qemu-img check on mutated images', () => {
  const temp = qcow2TempDir();
  afterAll(() => temp.cleanup());

  /** platter's check of `image` in memory, and qemu-img check --output=json of the same bytes. */
  async function both(image: Uint8Array): Promise<{ ours: Outcome; qemu: { status: number; stdout: string; stderr: string } }> {
    const path = join(temp.dir, 'mutated.qcow2');
    writeFileSync(path, image);
    const qemu = shStatus(temp.dir, 'qemu-img', ['check', '--output=json', path]);
    return { ours: await check(new MemoryDevice(image, { writable: false, name: path }), 'none'), qemu };
  }

  it.each(REGRESSIONS)('%s: the same JSON, messages and exit status', async (_, fuzzCase) => {
    const { ours, qemu } = await both(mutatedImage(fuzzCase));
    expect(ours).toHaveProperty('report');
    if (!('report' in ours)) return;
    expect(checkJson(ours.report, join(temp.dir, 'mutated.qcow2'))).toEqual(JSON.parse(qemu.stdout));
    expect(checkExitStatus(ours.report)).toBe(qemu.status);
    const qemuMessages = qemu.stderr.split('\n').filter((line) => line !== '' && line !== 'qemu-img: Check failed');
    expect(ours.report.messages).toEqual(qemuMessages);
  });

  // Where only one of the two opens an image the answers cannot be compared: qemu-img opens a
  // backing file that platter's check leaves alone, and refuses header extensions past the first
  // cluster; platter refuses snapshot L1 offsets, VM state and disk sizes past 2^53.
  it('a snapshot entry without extra data: -r all writes the table again, as qemu-img -r all does', async () => {
    const image = mutatedImage(REGRESSIONS.find(([what]) => what === 'a snapshot entry without extra data')![1]);
    const theirs = join(temp.dir, 'theirs.qcow2');
    writeFileSync(theirs, image);
    const qemu = shStatus(temp.dir, 'qemu-img', ['check', '-r', 'all', '--output=json', theirs]);
    const device = new MemoryDevice(image.slice(), { writable: true, name: theirs });
    const ours = await check(device, 'all');
    expect(ours).toHaveProperty('report');
    if (!('report' in ours)) return;
    expect(ours.report.repairMessages[0]).toBe('Repairing snapshot table entry 0 is incomplete');
    expect(checkJson(ours.report, theirs)).toEqual(JSON.parse(qemu.stdout));
    const repaired = join(temp.dir, 'ours.qcow2');
    writeFileSync(repaired, device.contents());
    expect(shStatus(temp.dir, 'qemu-img', ['check', repaired]).status).toBe(0);
    const list = (path: string) => shStatus(temp.dir, 'qemu-img', ['snapshot', '-l', path]).stdout;
    expect(list(repaired)).toBe(list(theirs));
  });

  it(`the same JSON and exit status wherever both open the image (${differential.label})`, async () => {
    let compared = 0;
    await fc.assert(
      fc.asyncProperty(fuzzCaseArb, async (fuzzCase) => {
        const { ours, qemu } = await both(mutatedImage(fuzzCase));
        // No JSON: qemu-img could not open it (platter may refuse it, or check it without its backing file).
        if (qemu.stdout.trim() === '' || !('report' in ours)) return;
        compared++;
        expect(checkJson(ours.report, join(temp.dir, 'mutated.qcow2'))).toEqual(JSON.parse(qemu.stdout));
        expect(checkExitStatus(ours.report)).toBe(qemu.status);
      }),
      differential.parameters,
    );
    expect(compared).toBeGreaterThan(Math.min(differential.runs, 100) / 4);
  }, differential.timeoutMs);
});
