/**
 * vitest globalSetup: builds dist/ once per test run, for the tests that spawn
 * the CLI. Set PLATTER_SKIP_BUILD=1 when dist/ is already fresh.
 */

import { execSync } from 'node:child_process';

export default function setup(): void {
  if (process.env.PLATTER_SKIP_BUILD === '1') return;
  execSync('npm run build --silent', { stdio: ['ignore', 'ignore', 'inherit'] });
}
