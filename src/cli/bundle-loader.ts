/**
 * Loads dist/cli-bundle.cjs through node:vm with the V8 code cache saved beside
 * it (cli-bundle.cache). With the cache, V8 skips parsing and compiling the
 * functions a command runs: about half of platter's own start-up. A cache made
 * by another Node or V8 version (or for another bundle) is rejected by V8, and
 * the bundle then compiles as any script does.
 */

import { createRequire } from 'node:module';

// node:fs through require: its ES-module facade would load node's stream modules for nothing.
const require = createRequire(import.meta.url);
const { existsSync, readFileSync } = require('node:fs') as typeof import('node:fs');
const { Script } = require('node:vm') as typeof import('node:vm');
const { fileURLToPath } = require('node:url') as typeof import('node:url');

/** What the bundle exports: the CLI, and the V8 tuning the launcher applies to its own process first. */
export interface CliBundle {
  runCli(argv: string[]): Promise<number>;
  tuneOptimizer(argv: readonly string[]): void;
}

/** Paths of the bundle and of its code cache, beside this file. */
export const BUNDLE_PATH = fileURLToPath(new URL('./cli-bundle.cjs', import.meta.url));
export const CACHE_PATH = fileURLToPath(new URL('./cli-bundle.cache', import.meta.url));

/** Compiles and runs the bundle (with the code cache when `useCache` and it exists); returns its exports and the compiled script. */
export function loadCliBundle(useCache = true): { bundle: CliBundle; script: InstanceType<typeof Script> } {
  // The file is already wrapped as a CommonJS module (see tsup.config.ts). Decoded
  // from a Buffer: readFileSync(path, 'utf8') touches about twice the memory for
  // the same string, and each fresh page is a fault (11 µs apiece on a VM that
  // hands free memory back to its host).
  const source = readFileSync(BUNDLE_PATH).toString('utf8');
  const cachedData = useCache && existsSync(CACHE_PATH) ? readFileSync(CACHE_PATH) : undefined;
  const script = new Script(source, { filename: BUNDLE_PATH, cachedData });
  const module = { exports: {} as CliBundle };
  const run = script.runInThisContext() as (...args: unknown[]) => void;
  run.call(module.exports, module.exports, createRequire(BUNDLE_PATH), module, BUNDLE_PATH, fileURLToPath(new URL('.', import.meta.url)));
  return { bundle: module.exports, script };
}
