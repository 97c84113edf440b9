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
import { checkImage, type CheckReport, type RepairMode } from '../src/ops/check.js';
import { exercise, fuzzCaseArb, mutatedImage } from './helpers/fuzz-qcow2.js';

const seconds = Number(process.env.FUZZ_SECONDS ?? 0);
const runs = seconds > 0 ? Number.MAX_SAFE_INTEGER : Number(process.env.FUZZ_RUNS ?? 1000);
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
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
    `check answers or fails with a PlatterError, and a repaired image stays repaired (${seconds > 0 ? `${seconds} s` : `${runs} cases`})`,
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
        {
          numRuns: runs,
          seed,
          interruptAfterTimeLimit: seconds > 0 ? seconds * 1000 : undefined,
          markInterruptAsFailure: false,
        },
      );
      // Each outcome must occur, or the mutations are not reaching the checker.
      expect(tally.clean).toBeGreaterThan(0);
      expect(tally.damaged).toBeGreaterThan(0);
      expect(tally.repaired).toBeGreaterThan(0);
    },
    seconds * 1000 + 120_000,
  );
});
