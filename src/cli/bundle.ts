/**
 * The body of the `platter` executable, built as one CommonJS file
 * (dist/cli-bundle.cjs) that the launcher compiles with V8's code cache.
 */

export { runCli } from './run.js';
export { tuneOptimizer } from './jit.js';
