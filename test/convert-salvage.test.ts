/**
 * convert --salvage on damaged images, against qemu-img convert --salvage: a
 * compressed cluster whose stream no longer decodes (zlib, zstd) and an L1
 * entry that points at a misaligned L2 table. Without --salvage both tools
 * fail; with it both succeed, writing zeros where nothing can be read, and
 * the outputs are equal. platter reports each run of lost bytes once.
 */

import { spawnSync } from 'node:child_process';
import { openSync, readFileSync, readSync, closeSync, writeSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-salvage-');
afterAll(() => tmp.cleanup());

/** Overwrites `bytes.length` bytes of `path` at `offset`. */
function poke(path: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Reads a big-endian u64 of `path` at `offset`. */
function u64(path: string, offset: number): bigint {
  const buffer = Buffer.alloc(8);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, buffer, 0, 8, offset);
  } finally {
    closeSync(fd);
  }
  return buffer.readBigUInt64BE(0);
}

/** qemu-img convert with its (one line per sector) warnings thrown away; returns the exit status. */
function qemuConvert(args: string[]): number {
  return spawnSync('qemu-img', ['convert', ...args], { cwd: tmp.dir, stdio: 'ignore' }).status ?? -1;
}

/** An image with a compressed cluster at 0 whose stream is overwritten with garbage, data after it. */
function damagedCompressed(name: string, type: string): string {
  const path = tmp.path(name);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `compression_type=${type}`, path, '1M']);
  run('qemu-io', ['-c', 'write -c -P 1 0 64k', '-c', 'write -c -P 2 64k 64k', '-c', 'write -P 3 128k 64k', path]);
  const map = JSON.parse(run('qemu-img', ['map', '--output=json', path])) as Array<{ start: number; offset?: number }>;
  expect(map[0]!.offset).toBeUndefined(); // compressed
  // L1 → L2 → the compressed entry of cluster 0, whose low 54 bits (64 KiB clusters) are the stream's host offset.
  const l1 = Number(u64(path, 40));
  const l2 = Number(u64(path, l1) & 0x00fffffffffffe00n);
  const hostOffset = Number(u64(path, l2) & ((1n << 54n) - 1n));
  poke(path, hostOffset, new Uint8Array(4).fill(0xff)); // a few bytes: the next stream may follow at once
  return name;
}

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('convert --salvage', () => {
  it.each(['zlib', 'zstd'])('a %s stream that does not decode: zeros for its cluster, the rest copied, as qemu-img', (type) => {
    const image = damagedCompressed(`compressed-${type}.qcow2`, type);
    expect(qemuConvert(['-O', 'raw', image, 'q-fail.raw'])).toBe(1);
    expect(platter(['convert', '-O', 'raw', image, 'p-fail.raw'], { cwd: tmp.dir }).status).toBe(1);
    expect(qemuConvert(['--salvage', '-O', 'raw', image, `q-${type}.raw`])).toBe(0);
    const mine = platter(['convert', '--salvage', '-O', 'raw', image, `p-${type}.raw`], { cwd: tmp.dir });
    expect(mine.status).toBe(0);
    expect(readFileSync(tmp.path(`p-${type}.raw`)).equals(readFileSync(tmp.path(`q-${type}.raw`)))).toBe(true);
    const warnings = mine.stderr.trim().split('\n');
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(new RegExp(`^platter: warning: ${image}: error while reading offset 0 \\(65536 bytes written as zeros\\): `));
    // The same into a qcow2 output.
    expect(qemuConvert(['--salvage', '-O', 'qcow2', image, `q-${type}.qcow2`])).toBe(0);
    expect(platter(['convert', '--salvage', '-O', 'qcow2', image, `p-${type}.qcow2`], { cwd: tmp.dir }).status).toBe(0);
    expect(spawnSync('qemu-img', ['compare', `p-${type}.qcow2`, `q-${type}.qcow2`], { cwd: tmp.dir }).status).toBe(0);
  });

  it('an L2 table that cannot be read: its range reads as zeros, the rest is copied, as qemu-img', () => {
    const path = tmp.path('l2.qcow2');
    // 4 KiB clusters: one L2 table maps 2 MiB.
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', path, '8M']);
    run('qemu-io', ['-c', 'write -P 1 0 64k', '-c', 'write -P 2 3M 64k', '-c', 'write -P 3 5M 64k', path]);
    const l1 = Number(u64(path, 40));
    const entry = Buffer.alloc(8);
    entry.writeBigUInt64BE(u64(path, l1 + 8) + 0x200n);
    poke(path, l1 + 8, entry);
    expect(platter(['convert', '-O', 'raw', 'l2.qcow2', 'p-fail.raw'], { cwd: tmp.dir }).status).toBe(1);
    expect(qemuConvert(['--salvage', '-O', 'raw', 'l2.qcow2', 'q-l2.raw'])).toBe(0);
    const mine = platter(['convert', '--salvage', '-O', 'raw', 'l2.qcow2', 'p-l2.raw'], { cwd: tmp.dir });
    expect(mine.status).toBe(0);
    expect(mine.stderr).toMatch(/^platter: warning: l2\.qcow2: error while reading offset 2097152 \(2097152 bytes written as zeros\): .*not cluster-aligned/);
    const bytes = readFileSync(tmp.path('p-l2.raw'));
    expect(bytes.equals(readFileSync(tmp.path('q-l2.raw')))).toBe(true);
    expect(bytes[5 << 20]).toBe(3);
  });
});
