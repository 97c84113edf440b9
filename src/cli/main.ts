/**
 * The `platter` executable. `--version` answers before anything else loads, so
 * scripts that probe for the tool pay only Node's own start-up; every other
 * command runs in the CLI bundle, loaded with its code cache.
 */

import { VERSION } from '../version.js';

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`platter ${VERSION}\n`);
} else {
  const { loadCliBundle } = await import('./bundle-loader.js');
  process.exitCode = await loadCliBundle().bundle.runCli(args);
}
