/**
 * The `platter` executable. `--version` answers before anything else loads, so
 * scripts that probe for the tool pay only Node's own start-up; every other
 * command runs in the CLI bundle, loaded with its code cache.
 *
 * The launcher is built as CommonJS (dist/cli.cjs, dist/cli-loader.cjs): an
 * ES-module entry point makes Node set up its module loader first, about 4 ms
 * of every start.
 */

import { createRequire } from 'node:module';
import { VERSION } from '../version.js';
import { sizeThreadPool } from './thread-pool.js';

/** Exit status when the command's work ends without an answer (Node's own for an unsettled top-level await). */
const UNFINISHED_STATUS = 13;

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`platter ${VERSION}\n`);
} else {
  sizeThreadPool();
  const { loadCliBundle } = createRequire(import.meta.url)('./cli-loader.cjs') as typeof import('./bundle-loader.js');
  let finished = false;
  // Node exits with status 0 when nothing is left to wait for, even if the command
  // never finished (an operation lost on the way): that must not pass for success.
  // 'beforeExit' comes only then, not after an explicit process.exit (as --help makes).
  process.on('beforeExit', () => {
    if (finished) return;
    process.stderr.write('platter: internal error: the command stopped before it finished\n');
    process.exitCode = UNFINISHED_STATUS;
  });
  const { bundle } = loadCliBundle();
  bundle.tuneOptimizer(args);
  void bundle
    .runCli(args)
    .then((status) => {
      finished = true;
      process.exitCode = status;
    });
}
