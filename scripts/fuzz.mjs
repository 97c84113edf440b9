#!/usr/bin/env node
/**
 * Runs the fuzz tests for as long as asked:
 *   npm run fuzz                      60 seconds per fuzz file
 *   npm run fuzz -- --seconds 3600    an hour
 *   npm run fuzz -- --runs 100000     a fixed number of cases
 *   npm run fuzz -- --seed 42         replay a run fast-check reported
 */

import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    seconds: { type: 'string' },
    runs: { type: 'string' },
    seed: { type: 'string' },
  },
});
const env = { ...process.env };
if (values.runs) env.FUZZ_RUNS = values.runs;
else env.FUZZ_SECONDS = values.seconds ?? '60';
if (values.seed) env.FUZZ_SEED = values.seed;

const result = spawnSync('npx', ['vitest', 'run', 'test/fuzz-'], { stdio: 'inherit', env });
process.exit(result.status ?? 1);
