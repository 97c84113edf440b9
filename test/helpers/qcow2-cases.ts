/**
 * The qcow2 differential matrix: each case builds images with qemu-img/qemu-io
 * in a temp directory and names the image to compare (and how to open it).
 */

import { mkdirSync, writeFileSync, readFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Extent, Image } from '../../src/core/image.js';
import { sh, shStatus } from './qcow2-oracle.js';

/** One differential case. */
export interface Qcow2Case {
  name: string;
  /** Builds the images; returns the image path relative to `cwd` (the directory commands run in). */
  build(dir: string): { cwd: string; image: string };
  /** Snapshots to compare as views (id or name), besides the active state. */
  snapshots?: string[];
  /** Also compare `info --backing-chain`. */
  backingChain?: boolean;
  /** Why `qemu-img map` cannot be matched for this case, if it cannot. */
  mapDiffers?: string;
  /** Asserts the case really exercises its feature (so a pass means something). */
  check?(image: Image, extents: Extent[], warnings: string[]): void;
}

const someCompressed = (_: Image, extents: Extent[]) => expect(extents.some((e) => e.compressed)).toBe(true);
const someZeroWithOffset = (_: Image, extents: Extent[]) =>
  expect(extents.some((e) => e.kind === 'zero' && e.hostOffset !== undefined)).toBe(true);
const formatData = (image: Image) => image.describe().formatSpecific!.data;

const MiB = 1 << 20;

/** A deterministic xorshift PRNG, so every run builds the same images. */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/**
 * Source data with stretches of random bytes (incompressible), text (compresses
 * well), zeros, and clusters that are zero except a few bytes.
 */
export function qcow2SourceData(size: number, seed = 1): Uint8Array {
  const next = prng(seed);
  const out = new Uint8Array(size);
  const text = new TextEncoder().encode('platter reads qcow2 images byte for byte. ');
  for (let at = 0; at < size; at += 16384) {
    const kind = next() % 5;
    const end = Math.min(at + 16384, size);
    if (kind === 0) for (let i = at; i < end; i++) out[i] = next() & 0xff;
    else if (kind === 1) for (let i = at; i < end; i++) out[i] = text[(i - at) % text.length]!;
    else if (kind === 2) out[at + (next() % (end - at))] = 0x5a;
    // kind 3 and 4: zeros
  }
  return out;
}

function writeSource(dir: string, name: string, size: number, seed = 1): string {
  writeFileSync(join(dir, name), qcow2SourceData(size, seed));
  return name;
}

function qemuImg(dir: string, ...args: string[]): void {
  sh(dir, 'qemu-img', args);
}

function qemuIo(dir: string, image: string, commands: string[], format = 'qcow2'): void {
  sh(dir, 'qemu-io', ['-f', format, ...commands.flatMap((c) => ['-c', c]), image]);
}

/** Byte edits inside a file (for the cases qemu has no command for). */
export function pokeFile(path: string, offset: number, bytes: number[]): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Uint8Array.from(bytes), 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Offset of the first header extension of `type` in cluster 0, or -1. */
export function findExtension(path: string, type: number): number {
  const head = readFileSync(path).subarray(0, 65536);
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const version = view.getUint32(4);
  let at = version === 2 ? 72 : view.getUint32(100);
  while (at + 8 <= head.length) {
    const found = view.getUint32(at);
    if (found === 0) return -1;
    if (found === type) return at;
    at += 8 + Math.ceil(view.getUint32(at + 4) / 8) * 8;
  }
  return -1;
}

const EDITS = ['write -P 0x11 300k 70k', 'write -z 1M 192k', 'discard 2M 256k', 'write -P 0x22 3000k 5k'];

function converted(options: string, edits = EDITS, extra: string[] = []): Qcow2Case['build'] {
  return (dir) => {
    const src = writeSource(dir, 'src.raw', 4 * MiB);
    qemuImg(dir, 'convert', '-f', 'raw', '-O', 'qcow2', ...extra, ...(options ? ['-o', options] : []), src, 'img.qcow2');
    if (edits.length) qemuIo(dir, 'img.qcow2', edits);
    return { cwd: dir, image: 'img.qcow2' };
  };
}

/** The matrix the acceptance list asks for. */
export const QCOW2_CASES: Qcow2Case[] = [
  { name: 'compat 0.10, 64 KiB clusters', build: converted('compat=0.10') },
  { name: 'compat 1.1, 512 B clusters', build: converted('cluster_size=512') },
  { name: 'compat 1.1, 4 KiB clusters', build: converted('cluster_size=4096') },
  { name: 'compat 1.1, 64 KiB clusters', build: converted('cluster_size=65536') },
  { name: 'compat 1.1, 2 MiB clusters', build: converted('cluster_size=2097152') },
  { name: 'compressed, zlib', check: someCompressed,
    build: converted('compression_type=zlib', EDITS, ['-c']) },
  { name: 'compressed, zstd', check: someCompressed,
    build: converted('compression_type=zstd', EDITS, ['-c']) },
  { name: 'compressed, zlib, 4 KiB clusters', check: someCompressed,
    build: converted('compression_type=zlib,cluster_size=4096', [], ['-c']) },
  { name: 'compressed, zstd, 2 MiB clusters', check: someCompressed,
    build: converted('compression_type=zstd,cluster_size=2097152', [], ['-c']) },
  { name: 'compressed, compat 0.10', check: someCompressed,
    build: converted('compat=0.10', [], ['-c']) },
  {
    name: 'extended L2 with subcluster writes over a backing file',
    check: (image, extents) => {
      expect(formatData(image)['extended-l2']).toBe(true);
      // Runs at subcluster (2 KiB) granularity, some answered by the backing file.
      expect(extents.some((e) => e.length % 65536 !== 0 && e.depth === 0 && e.kind === 'data')).toBe(true);
      expect(extents.some((e) => e.depth === 1 && e.kind === 'data')).toBe(true);
    },
    build: (dir) => {
      writeSource(dir, 'base.raw', 3 * MiB, 7);
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'extended_l2=on,cluster_size=65536', '-b', 'base.raw', '-F', 'raw', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 1 4k 2k', 'write -P 2 66k 10k', 'write -z 200k 4k', 'write -P 3 1M 64k', 'discard 1M 8k', 'write -z 3M 100k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  { name: 'extended L2, 32 KiB clusters', build: converted('extended_l2=on,cluster_size=32768') },
  {
    name: 'preallocation=metadata',
    check: someZeroWithOffset,
    // qemu asks the host file system where its holes are (SEEK_HOLE) and reports
    // preallocated-but-never-written clusters as zero; a portable reader cannot.
    mapDiffers: 'host file holes are invisible to a portable reader',
    build: (dir) => {
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=metadata', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 9 100k 64k', 'write -z 1M 128k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'preallocation=falloc',
    check: someZeroWithOffset,
    build: (dir) => {
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'preallocation=falloc,cluster_size=4096', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 9 100k 64k', 'write -z 1M 128k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  { name: 'refcount_bits=1', check: (image) => expect(formatData(image)['refcount-bits']).toBe(1),
    build: converted('refcount_bits=1') },
  { name: 'refcount_bits=64', check: (image) => expect(formatData(image)['refcount-bits']).toBe(64),
    build: converted('refcount_bits=64') },
  {
    name: 'external data file, data_file_raw=on',
    check: (image) => expect(formatData(image)['data-file-raw']).toBe(true),
    build: (dir) => {
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'data_file=img.data,data_file_raw=on', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 4 0 100k', 'write -P 5 2M 64k', 'write -z 2M 4k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'external data file, data_file_raw=off, in another directory',
    check: (image) => expect(formatData(image)['data-file']).toBe('data/img.data'),
    build: (dir) => {
      mkdirSync(join(dir, 'data'));
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'data_file=data/img.data,cluster_size=4096', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 4 0 100k', 'write -P 5 2M 64k', 'write -z 20k 8k', 'discard 40k 8k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'three-layer chain in three directories, opened from a fourth',
    backingChain: true,
    check: (_, extents) => {
      for (const depth of [0, 1, 2]) expect(extents.some((e) => e.depth === depth && e.kind === 'data')).toBe(true);
      // Past the 2 MiB base the search stops at the middle layer; past the 3 MiB middle, at the top.
      expect(extents.some((e) => e.kind === 'unallocated' && e.depth === 2 && e.start >= 2 << 20)).toBe(true);
      expect(extents.some((e) => e.kind === 'unallocated' && e.depth === 1 && e.start >= 3 << 20)).toBe(true);
    },
    build: (dir) => {
      for (const sub of ['base', 'mid', 'top', 'work']) mkdirSync(join(dir, sub));
      writeSource(join(dir, 'base'), 'base.raw', 2 * MiB, 3);
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-b', '../base/base.raw', '-F', 'raw', 'mid/mid.qcow2', '3M');
      qemuIo(dir, 'mid/mid.qcow2', ['write -P 0x33 64k 64k', 'write -z 512k 64k', 'write -P 0x34 2100k 100k']);
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', '-b', '../mid/mid.qcow2', '-F', 'qcow2', 'top/top.qcow2', '4M');
      qemuIo(dir, 'top/top.qcow2', ['write -P 0x44 100k 8k', 'write -z 1M 64k', 'write -P 0x45 3500k 4k']);
      return { cwd: join(dir, 'work'), image: '../top/top.qcow2' };
    },
  },
  {
    name: 'backing file without a recorded format (probed)',
    check: (image, _, warnings) => {
      expect(image.describe().backingFormat).toBeUndefined();
      expect(warnings.some((w) => /format .* not recorded/.test(w))).toBe(true);
    },
    build: (dir) => {
      writeSource(dir, 'base.raw', 4 * MiB, 5);
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 1 1M 64k']);
      // Rename the backing-format extension to an unknown type: readers must skip it and probe.
      const at = findExtension(join(dir, 'img.qcow2'), 0xe2792aca);
      if (at < 0) throw new Error('backing format extension not found');
      pokeFile(join(dir, 'img.qcow2'), at, [0x7e, 0x57, 0xaa, 0xaa]);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'internal snapshots',
    snapshots: ['one', 'two', '1'],
    build: (dir) => {
      const src = writeSource(dir, 'src.raw', 4 * MiB);
      qemuImg(dir, 'convert', '-f', 'raw', '-O', 'qcow2', src, 'img.qcow2');
      qemuImg(dir, 'snapshot', '-c', 'one', 'img.qcow2');
      qemuIo(dir, 'img.qcow2', ['write -P 0x66 0 200k', 'discard 1M 1M']);
      qemuImg(dir, 'snapshot', '-c', 'two', 'img.qcow2');
      qemuIo(dir, 'img.qcow2', ['write -P 0x77 100k 200k', 'write -z 3M 64k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'snapshot taken before the disk grew',
    snapshots: ['small'],
    build: (dir) => {
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', 'img.qcow2', '2M');
      qemuIo(dir, 'img.qcow2', ['write -P 3 0 1M', 'write -P 4 1984k 64k']);
      qemuImg(dir, 'snapshot', '-c', 'small', 'img.qcow2');
      qemuImg(dir, 'resize', '-q', 'img.qcow2', '4M');
      qemuIo(dir, 'img.qcow2', ['write -P 5 3M 64k', 'write -P 6 0 4k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'lazy refcounts with the dirty bit left set',
    check: (image, _, warnings) => {
      expect(image.describe().dirty).toBe(true);
      expect(warnings.some((w) => /dirty/.test(w))).toBe(true);
    },
    build: (dir) => {
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'img.qcow2', '4M');
      // qemu-io's abort kills the process before it can clear the dirty bit.
      shStatus(dir, 'qemu-io', ['-c', 'write -P 5 0 64k', '-c', 'write -P 6 1M 4k', '-c', 'abort', 'img.qcow2']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
  {
    name: 'persistent bitmaps',
    check: (image) => expect((formatData(image).bitmaps as unknown[]).length).toBe(2),
    build: (dir) => {
      qemuImg(dir, 'create', '-q', '-f', 'qcow2', 'img.qcow2', '4M');
      qemuImg(dir, 'bitmap', '--add', 'img.qcow2', 'first');
      qemuImg(dir, 'bitmap', '--add', '-g', '128K', '--disable', 'img.qcow2', 'second');
      qemuIo(dir, 'img.qcow2', ['write -P 1 0 64k']);
      return { cwd: dir, image: 'img.qcow2' };
    },
  },
];
