/**
 * Mutation fuzzing of qcow2 images: whatever bytes are changed, opening either
 * succeeds and every read and block status stays in bounds, or fails with a
 * PlatterError — never another exception, never a hang.
 *
 * FUZZ_RUNS sets the number of cases (default 5,000); FUZZ_SECONDS runs for
 * that long instead (`npm run fuzz -- --seconds 600`). FUZZ_SEED replays a run.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { exercise, fuzzCaseArb, mutatedImage, FUZZ_SEEDS } from './helpers/fuzz-qcow2.js';
import { buildQcow2 } from './helpers/hostile-qcow2.js';
import { fuzzRun } from './helpers/fuzz-run.js';

const fuzz = fuzzRun(5000);
/** A single case that takes longer than this is a hang. */
const CASE_TIMEOUT_MS = 2000;

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms (hang)`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

describe('qcow2 mutation fuzzing', () => {
  it('every seed image opens and walks cleanly before mutation', async () => {
    for (const options of FUZZ_SEEDS) {
      const outcome = await exercise(buildQcow2(options));
      expect(outcome, JSON.stringify(options)).toEqual({ ok: true, problems: [] });
    }
  });

  it(
    `mutated images answer or fail with a PlatterError (${fuzz.label})`,
    async () => {
      const tally = { ok: 0, failed: 0 };
      await fc.assert(
        fc.asyncProperty(fuzzCaseArb, async (fuzzCase) => {
          const outcome = await withTimeout(exercise(mutatedImage(fuzzCase)), CASE_TIMEOUT_MS);
          if (outcome.ok) tally.ok++;
          else tally.failed++;
          expect(outcome.problems).toEqual([]);
        }),
        fuzz.parameters,
      );
      // Both outcomes must occur, or the mutations are not reaching the parser.
      expect(tally.ok).toBeGreaterThan(0);
      expect(tally.failed).toBeGreaterThan(0);
    },
    fuzz.timeoutMs,
  );
});
