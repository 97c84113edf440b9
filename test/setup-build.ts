/**
 * Builds dist/ once before the CLI tests spawn `dist/cli.js`.
 * CI builds first and sets PLATTER_SKIP_BUILD=1 to avoid doing it twice.
 */

import { execFileSync } from 'node:child_process';

export default function setup(): void {
  if (process.env.PLATTER_SKIP_BUILD === '1') return;
  execFileSync('npx', ['tsup', '--silent'], { stdio: 'inherit' });
}
