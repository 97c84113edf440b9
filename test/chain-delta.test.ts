/**
 * Delta images: an overlay on BASE holding only the clusters where NEW differs,
 * checked with qemu-img (allocation and guest contents).
 */

import { closeSync, mkdirSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../src/node/file-device.js';
import { nodeByteTests } from '../src/node/byte-tests.js';
import { nodeHost } from '../src/node/host.js';
import { openImageFile } from '../src/node/open.js';
import { writeDelta } from '../src/ops/delta.js';
import { chainBacking, chainCheck, chainCreate, chainSame, chainWrite } from './helpers/chain-images.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');
const GiB = 1 << 30;
const CLUSTER = 64 * 1024;

/** Writes `length` bytes of `byte` at `offset` of a file. */
function fill(path: string, offset: number, length: number, byte: number): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, new Uint8Array(length).fill(byte), 0, length, offset);
  } finally {
    closeSync(fd);
  }
}

/** Writes the delta of `fresh` over `base` (both opened from `dir`) into `delta`. */
async function delta(dir: string, fresh: string, base: string, baseFormat: string, out: string, topLayerOnly = false): Promise<number> {
  const source = await openImageFile(join(dir, fresh));
  const below = await openImageFile(join(dir, base), { format: baseFormat });
  const device = await FileDevice.open(join(dir, out), { create: true });
  try {
    const result = await writeDelta(source, below, device, { backingFile: base, backingFormat: baseFormat, host: nodeHost(), tests: nodeByteTests, topLayerOnly });
    return result.bytesWritten;
  } finally {
    await device.close();
    await below.close();
    await source.close();
  }
}

describe.skipIf(!enabled)('delta images', () => {
  const temp = tempDir('platter-chain-delta-');
  afterAll(() => temp.cleanup());

  it('two sparse 1 GiB raw images differing in three clusters give a delta of exactly those three clusters', async () => {
    const base = temp.path('base.raw');
    const fresh = temp.path('new.raw');
    for (const path of [base, fresh]) {
      writeFileSync(path, '');
      truncateSync(path, GiB);
      fill(path, 5 * CLUSTER, 3 * CLUSTER, 0x11); // shared data, equal in both
      fill(path, 700 * 1024 * 1024, CLUSTER, 0x22);
    }
    fill(fresh, 5 * CLUSTER + 100, 10, 0x33); // changes one cluster of shared data
    fill(fresh, 512 * 1024 * 1024, 1, 0x44); // data where the base has a hole
    fill(fresh, 700 * 1024 * 1024, CLUSTER, 0); // zeros where the base has data
    const written = await delta(temp.dir, 'new.raw', 'base.raw', 'raw', 'delta.qcow2');
    expect(written).toBe(3 * CLUSTER);
    const check = chainCheck(temp.dir, 'delta.qcow2');
    expect(check.clean).toBe(true);
    const map = JSON.parse(
      run('qemu-img', ['map', '--output=json', 'delta.qcow2'], { cwd: temp.dir }),
    ) as Array<{ start: number; length: number; depth: number; zero: boolean; data: boolean }>;
    const ownClusters = map.filter((entry) => entry.depth === 0).map((entry) => [entry.start, entry.length, entry.data]);
    expect(ownClusters).toEqual([
      [5 * CLUSTER, CLUSTER, true],
      [512 * 1024 * 1024, CLUSTER, true],
      [700 * 1024 * 1024, CLUSTER, false],
    ]);
    expect(chainSame(temp.dir, 'delta.qcow2', 'new.raw')).toBe(true);
    expect(chainBacking(temp.dir, 'delta.qcow2')).toEqual({ name: 'base.raw', format: 'raw' });
  });

  it('a qcow2 source over its own chain: only what differs from the base is stored', async () => {
    chainCreate(temp.dir, 'b.qcow2', { size: '8M' });
    chainWrite(temp.dir, 'b.qcow2', ['write -P 1 0 2M', 'write -P 2 4M 1M']);
    chainCreate(temp.dir, 'n.qcow2', { backing: 'b.qcow2' });
    chainWrite(temp.dir, 'n.qcow2', ['write -P 1 0 64k', 'write -P 7 128k 64k', 'write -z 4M 128k', 'write -P 8 7M 4k']);
    const written = await delta(temp.dir, 'n.qcow2', 'b.qcow2', 'qcow2', 'd.qcow2');
    expect(written).toBe(CLUSTER + 2 * CLUSTER + CLUSTER);
    expect(chainSame(temp.dir, 'd.qcow2', 'n.qcow2')).toBe(true);
    expect(chainCheck(temp.dir, 'd.qcow2')).toEqual({ clean: true, allocated: 2 });
    await delta(temp.dir, 'n.qcow2', 'b.qcow2', 'qcow2', 'd2.qcow2', true);
    expect(chainSame(temp.dir, 'd2.qcow2', 'n.qcow2')).toBe(true);
  });

  it('with the top layer of the source only (convert -B), the result reads like qemu-img convert -B and allocates no more', async () => {
    chainCreate(temp.dir, 'cb-base.qcow2', { size: '4M' });
    chainWrite(temp.dir, 'cb-base.qcow2', ['write -P 1 0 2M']);
    chainCreate(temp.dir, 'cb-src.qcow2', { backing: 'cb-base.qcow2' });
    chainWrite(temp.dir, 'cb-src.qcow2', ['write -P 1 0 64k', 'write -P 7 1M 64k', 'write -z 128k 64k']);
    run('qemu-img', ['convert', '-B', 'cb-base.qcow2', '-F', 'qcow2', '-O', 'qcow2', 'cb-src.qcow2', 'cb-qemu.qcow2'], { cwd: temp.dir });
    await delta(temp.dir, 'cb-src.qcow2', 'cb-base.qcow2', 'qcow2', 'cb-ours.qcow2', true);
    expect(chainSame(temp.dir, 'cb-ours.qcow2', 'cb-qemu.qcow2')).toBe(true);
    expect(chainSame(temp.dir, 'cb-ours.qcow2', 'cb-src.qcow2')).toBe(true);
    const ours = chainCheck(temp.dir, 'cb-ours.qcow2');
    expect(ours.clean).toBe(true);
    expect(ours.allocated).toBe(1);
    expect(ours.allocated).toBeLessThanOrEqual(chainCheck(temp.dir, 'cb-qemu.qcow2').allocated);
  });

  it('platter convert --delta-from on the command line: the three changed clusters, relative to the delta', () => {
    mkdirSync(temp.path('backups'), { recursive: true });
    const result = platter(['convert', '--delta-from', 'base.raw', '-F', 'raw', '-O', 'qcow2', 'new.raw', 'backups/monday.qcow2'], { cwd: temp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(chainBacking(temp.dir, 'backups/monday.qcow2')).toEqual({ name: '../base.raw', format: 'raw' });
    expect(chainCheck(temp.dir, 'backups/monday.qcow2')).toEqual({ clean: true, allocated: 2 });
    const map = JSON.parse(run('qemu-img', ['map', '--output=json', 'backups/monday.qcow2'], { cwd: temp.dir })) as Array<{ start: number; depth: number }>;
    expect(map.filter((entry) => entry.depth === 0).map((entry) => entry.start)).toEqual([5 * CLUSTER, 512 * 1024 * 1024, 700 * 1024 * 1024]);
    expect(chainSame(temp.dir, 'backups/monday.qcow2', 'new.raw')).toBe(true);
  });

  it('convert -B of a source without a backing file writes its unallocated zeros over the new backing, as qemu-img does', () => {
    chainCreate(temp.dir, 'nb-base.qcow2', { size: '4M' });
    chainWrite(temp.dir, 'nb-base.qcow2', ['write -P 3 0 4M']);
    chainCreate(temp.dir, 'nb-src.qcow2', { size: '4M' });
    chainWrite(temp.dir, 'nb-src.qcow2', ['write -P 4 64k 64k', 'write -z 1M 64k']);
    // A source over a backing file shorter than itself: past that file's end qemu-img leaves the new backing's data.
    chainCreate(temp.dir, 'nb-short.qcow2', { size: '1M' });
    chainCreate(temp.dir, 'nb-over.qcow2', { size: '4M', backing: 'nb-short.qcow2' });
    chainWrite(temp.dir, 'nb-over.qcow2', ['write -P 5 64k 64k']);
    for (const source of ['nb-src.qcow2', 'nb-over.qcow2']) {
      const args = (out: string) => ['convert', '-B', 'nb-base.qcow2', '-F', 'qcow2', '-O', 'qcow2', source, out];
      run('qemu-img', args(`${source}.qemu`), { cwd: temp.dir });
      const result = platter(args(`${source}.ours`), { cwd: temp.dir });
      expect(result.stderr).toBe('');
      expect(chainSame(temp.dir, `${source}.ours`, `${source}.qemu`), source).toBe(true);
      expect(chainCheck(temp.dir, `${source}.ours`).clean).toBe(true);
    }
    expect(chainSame(temp.dir, 'nb-src.qcow2.ours', 'nb-src.qcow2')).toBe(true);
  });

  it('convert -B writes an overlay on the named backing file, and refuses other output formats', () => {
    const result = platter(['convert', '-B', 'cb-base.qcow2', '-F', 'qcow2', '-O', 'qcow2', 'cb-src.qcow2', 'cb-cli.qcow2'], { cwd: temp.dir });
    expect(result.status).toBe(0);
    expect(chainSame(temp.dir, 'cb-cli.qcow2', 'cb-src.qcow2')).toBe(true);
    expect(chainCheck(temp.dir, 'cb-cli.qcow2')).toEqual({ clean: true, allocated: 1 });
    const raw = platter(['convert', '-B', 'cb-base.qcow2', '-O', 'raw', 'cb-src.qcow2', 'x.raw'], { cwd: temp.dir });
    expect(raw.status).toBe(1);
    expect(raw.stderr).toMatch(/^platter: .*-O qcow2/);
  });

  it.each(['zlib', 'zstd'])('convert -c -B (%s): every data cluster of the overlay is compressed, as qemu-img convert -c -B writes it', (type) => {
    const args = (out: string) => ['convert', '-c', '-o', `compression_type=${type}`, '-B', 'cb-base.qcow2', '-F', 'qcow2', '-O', 'qcow2', 'cb-src.qcow2', out];
    run('qemu-img', args(`cbc-qemu-${type}.qcow2`), { cwd: temp.dir });
    const result = platter(args(`cbc-ours-${type}.qcow2`), { cwd: temp.dir });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(chainSame(temp.dir, `cbc-ours-${type}.qcow2`, 'cb-src.qcow2')).toBe(true);
    const check = (image: string) =>
      JSON.parse(run('qemu-img', ['check', '--output=json', image], { cwd: temp.dir })) as { 'allocated-clusters': number; 'compressed-clusters': number; 'check-errors': number };
    const ours = check(`cbc-ours-${type}.qcow2`);
    const qemu = check(`cbc-qemu-${type}.qcow2`);
    expect(ours['check-errors']).toBe(0);
    expect(ours['compressed-clusters']).toBe(1);
    expect(ours['allocated-clusters']).toBe(ours['compressed-clusters']);
    expect(qemu['allocated-clusters']).toBe(qemu['compressed-clusters']);
    expect(chainBacking(temp.dir, `cbc-ours-${type}.qcow2`)).toEqual(chainBacking(temp.dir, `cbc-qemu-${type}.qcow2`));
  });

  it('commit folds a delta back into its raw base', () => {
    const result = platter(['commit', 'backups/monday.qcow2'], { cwd: temp.dir });
    expect(result.stdout).toBe('Image committed.\n');
    expect(chainSame(temp.dir, 'base.raw', 'new.raw')).toBe(true);
    expect(chainCheck(temp.dir, 'backups/monday.qcow2')).toEqual({ clean: true, allocated: 0 });
  });
});
