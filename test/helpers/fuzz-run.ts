/**
 * How long a fuzz test runs, from the environment: FUZZ_RUNS cases (else the
 * test's default), or FUZZ_SECONDS of cases; FUZZ_SEED replays a run.
 */

/** A fuzz test's settings: what to name it, fast-check's parameters, and vitest's time-out. */
export interface FuzzRun {
  /** "5000 cases" or "600 s", for the test's name. */
  label: string;
  /** The number of cases when no time limit is set (FUZZ_RUNS, else the default). */
  runs: number;
  /** Parameters for fc.assert. */
  parameters: { numRuns: number; seed?: number; interruptAfterTimeLimit?: number; markInterruptAsFailure: boolean };
  /** Milliseconds vitest allows the test. */
  timeoutMs: number;
}

/** Settings for a fuzz test that runs `defaultRuns` cases unless told otherwise. */
export function fuzzRun(defaultRuns: number): FuzzRun {
  const seconds = Number(process.env.FUZZ_SECONDS ?? 0);
  const runs = Number(process.env.FUZZ_RUNS ?? defaultRuns);
  const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
  return {
    label: seconds > 0 ? `${seconds} s` : `${runs} cases`,
    runs,
    parameters: {
      numRuns: seconds > 0 ? Number.MAX_SAFE_INTEGER : runs,
      // Only when given: an explicit undefined would override the suite's seed (fixed in CI).
      ...(seed === undefined ? {} : { seed }),
      ...(seconds > 0 ? { interruptAfterTimeLimit: seconds * 1000 } : {}),
      markInterruptAsFailure: false,
    },
    // A hang-catcher, not a speed check: 1000 check-and-repair cases take over two minutes on a slow 2-core VM.
    timeoutMs: seconds * 1000 + 300_000,
  };
}
