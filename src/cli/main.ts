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

const args = process.argv.slice(2);
if (args.length === 1 && (args[0] === '--version' || args[0] === '-V')) {
  process.stdout.write(`platter ${VERSION}\n`);
} else {
  sizeThreadPool();
  const { loadCliBundle } = createRequire(import.meta.url)('./cli-loader.cjs') as typeof import('./bundle-loader.js');
  void loadCliBundle()
    .bundle.runCli(args)
    .then((status) => {
      process.exitCode = status;
    });
}
