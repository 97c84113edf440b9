#!/usr/bin/env node
/**
 * Saves the V8 code cache of dist/cli-bundle.cjs as dist/cli-bundle.cache
 * (run by `npm run build`). It compiles the bundle, runs `info` and `convert`
 * in this process on a small image made for the purpose, so that V8 compiles
 * the functions they use, and then serializes what was compiled.
 */

import { execFileSync } from 'node:child_process';
import { randomFillSync } from 'node:crypto';
import fs, { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CACHE_PATH, loadCliBundle } from '../dist/cli-loader.cjs';

const MiB = 1024 * 1024;
const CLI = fileURLToPath(new URL('../dist/cli.cjs', import.meta.url));

/** A raw disk of text, random bytes and zeros. */
function makeDisk(path) {
  const bytes = Buffer.alloc(8 * MiB);
  bytes.write('platter '.repeat(MiB / 8), 0);
  randomFillSync(bytes, 2 * MiB, MiB);
  writeFileSync(path, bytes);
}

const dir = mkdtempSync(join(tmpdir(), 'platter-code-cache-'));
const at = (name) => join(dir, name);
// Only the commands people run most: every function in the cache is deserialized at
// every start, so a cache covering every command makes the others slower to start.
const commands = [
  ['info', at('disk.qcow2')],
  ['convert', '-O', 'raw', at('disk.qcow2'), at('copy.raw')],
];

const { bundle, script } = loadCliBundle(false);
// The commands' output is not wanted here: platter writes short output straight to fd 1 and 2.
const write = { out: process.stdout.write, err: process.stderr.write, sync: fs.writeSync };
/** fs.writeSync that drops what goes to fds 1 and 2, answering with the byte count writeSync would. */
function quietWriteSync(fd, data, ...rest) {
  if (fd !== 1 && fd !== 2) return write.sync(fd, data, ...rest);
  if (typeof data === 'string') return Buffer.byteLength(data, typeof rest[1] === 'string' ? rest[1] : 'utf8');
  const [offset = 0, length = data.byteLength - offset] = rest;
  return length;
}
try {
  makeDisk(at('disk.raw'));
  // Made by another process: the qcow2 writer stays out of the cache.
  execFileSync(process.execPath, [CLI, 'convert', '-f', 'raw', '-O', 'qcow2', at('disk.raw'), at('disk.qcow2')]);
  process.stdout.write = process.stderr.write = () => true;
  fs.writeSync = quietWriteSync;
  for (const argv of commands) {
    const status = await bundle.runCli(argv);
    if (status !== 0) throw new Error(`platter ${argv.join(' ')} exited with ${status}`);
  }
} finally {
  process.stdout.write = write.out;
  process.stderr.write = write.err;
  fs.writeSync = write.sync;
  rmSync(dir, { recursive: true, force: true });
}
writeFileSync(CACHE_PATH, script.createCachedData());
