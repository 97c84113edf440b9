/**
 * Node built-ins that only some commands need, loaded on first use: `info`,
 * `map` or a convert of uncompressed data never touch zlib or worker threads,
 * and loading them costs each run about 2 ms and 60 fresh pages on a 2-core VM.
 */

import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

let zlib: typeof import('node:zlib') | undefined;
let workerThreads: typeof import('node:worker_threads') | undefined;

/** node:zlib, loaded at the first call. */
export function nodeZlib(): typeof import('node:zlib') {
  return (zlib ??= require('node:zlib') as typeof import('node:zlib'));
}

/** node:worker_threads, loaded at the first call. */
export function nodeWorkerThreads(): typeof import('node:worker_threads') {
  return (workerThreads ??= require('node:worker_threads') as typeof import('node:worker_threads'));
}
