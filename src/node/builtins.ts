/**
 * Node built-ins that only some commands need, loaded on first use: `info`,
 * `map` or a convert of uncompressed data never touch zlib or worker threads,
 * and loading them costs each run about 2 ms and 60 fresh pages on a 2-core VM.
 */

import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import type { ZlibOptions } from 'node:zlib';

const require = createRequire(import.meta.url);

let zlib: typeof import('node:zlib') | undefined;
let workerThreads: typeof import('node:worker_threads') | undefined;
let v8: typeof import('node:v8') | undefined;

/** node:zlib, loaded at the first call. */
export function nodeZlib(): typeof import('node:zlib') {
  return (zlib ??= require('node:zlib') as typeof import('node:zlib'));
}

/** One-shot zlib call as a promise (node:zlib's callback form, on the libuv pool). */
type ZlibCall = (input: Uint8Array, options: ZlibOptions) => Promise<Buffer>;

let deflateRawCall: ZlibCall | undefined;

/** zlib.deflateRaw as a promise. */
export const deflateRawAsync: ZlibCall = (input, options) =>
  (deflateRawCall ??= promisify(nodeZlib().deflateRaw))(input, options);

/** node:worker_threads, loaded at the first call. */
export function nodeWorkerThreads(): typeof import('node:worker_threads') {
  return (workerThreads ??= require('node:worker_threads') as typeof import('node:worker_threads'));
}

/** node:v8, loaded at the first call (it loads Node's stream modules). */
export function nodeV8(): typeof import('node:v8') {
  return (v8 ??= require('node:v8') as typeof import('node:v8'));
}
