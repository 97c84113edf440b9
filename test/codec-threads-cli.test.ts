/**
 * When convert, compare and dd boot codec threads: not for sources too small to need them
 * (their virtual size bounds what can be decoded), and at the first zstd
 * cluster for larger ones. A preload counts the workers the CLI makes.
 */

import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, hasTool, tempDir } from './helpers/tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Counts the Worker threads made in the process, and prints the count at exit. */
const COUNTER = `const threads = require('node:worker_threads');
const Original = threads.Worker;
let made = 0;
threads.Worker = class extends Original { constructor(...args) { super(...args); made++; } };
process.on('exit', () => process.stderr.write('workers made: ' + made + '\\n'));`;

/** A qcow2 image of `size` with 8 MiB of text in zstd clusters, and the raw disk it holds. */
function zstdImage(name: string, size: string): string {
  const raw = tmp.path(`${name}.raw`);
  spawnSync('truncate', ['-s', size, raw]);
  const text = Buffer.alloc(8 << 20);
  for (let at = 0; at < text.length; ) at += text.write(`${at} cluster snapshot refcount\n`, at);
  writeFileSync(raw, text, { flag: 'r+' });
  const image = tmp.path(`${name}.qcow2`);
  expect(spawnSync('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', raw, image]).status).toBe(0);
  return image;
}

/** Runs the CLI with the counting preload; returns its exit status and how many threads it made. */
function counted(args: string[]): { status: number | null; made: number; stderr: string } {
  const result = spawnSync(process.execPath, ['--require', tmp.path('count.cjs'), CLI, ...args], { encoding: 'utf8' });
  return { status: result.status, made: Number(/workers made: (\d+)/.exec(result.stderr)?.[1]), stderr: result.stderr };
}

describe.skipIf(!hasTool('qemu-img'))('codec threads for convert, compare and dd', () => {
  writeFileSync(tmp.path('count.cjs'), COUNTER);

  it.each([
    ['32M', 'none'],
    ['256M', 'some'],
  ])('a %s zstd image: %s threads, and the disk it holds', (size, threads) => {
    const image = zstdImage(`disk-${size}`, size);
    const out = tmp.path(`out-${size}.raw`);
    const { status, made, stderr } = counted(['convert', '-O', 'raw', image, out]);
    expect(status, stderr).toBe(0);
    // Where threads start, one per core up to four; one core has none.
    const cores = availableParallelism();
    expect(made).toBe(threads === 'none' || cores === 1 ? 0 : Math.min(4, cores));
    expect(readFileSync(out).equals(readFileSync(tmp.path(`disk-${size}.raw`)))).toBe(true);
  });

  it('compare and dd of a small zstd image boot no threads either', () => {
    const image = zstdImage('small', '16M');
    const compare = counted(['compare', image, tmp.path('small.raw')]);
    expect([compare.status, compare.made]).toEqual([0, 0]);
    const dd = counted(['dd', '-O', 'raw', `if=${image}`, `of=${tmp.path('small-dd.raw')}`]);
    expect([dd.status, dd.made]).toEqual([0, 0]);
    expect(readFileSync(tmp.path('small-dd.raw')).equals(readFileSync(tmp.path('small.raw')))).toBe(true);
  });
});
