/**
 * Write safety on images that cannot be trusted: images marked corrupt, or
 * with incompatible features platter does not know, are never opened for
 * writing; a dirty one has its refcounts rebuilt (and its dirty bit cleared)
 * before anything else is written; with lazy refcounts the dirty bit reaches the disk before any
 * other change, and is cleared on a clean close. convert refuses to write
 * over any file of its source chain and leaves the chain untouched.
 */

import { createHash } from 'node:crypto';
import { linkSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice, type BlockDevice } from '../src/core/device.js';
import type { ImageHost } from '../src/core/image.js';
import { openImage } from '../src/engine/open.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { buildQcow2, putU64 } from './helpers/hostile-qcow2.js';
import { platter, tempDir } from './helpers/tools.js';

const host: ImageHost = { codecs: nodeCodecs, warn: () => {} };
const DIRTY = 1n;
const LAZY_REFCOUNTS = 1n;

/** A writable device that records the incompatible-feature bits on disk at every write. */
class RecordingDevice extends MemoryDevice {
  readonly log: Array<{ offset: number; length: number; dirtyOnDisk: boolean }> = [];
  override async write(offset: number, data: Uint8Array): Promise<void> {
    await super.write(offset, data);
    this.log.push({ offset, length: data.length, dirtyOnDisk: dirtyBit(this.contents()) });
  }
}

function dirtyBit(bytes: Uint8Array): boolean {
  return (new DataView(bytes.buffer, bytes.byteOffset).getBigUint64(72) & DIRTY) !== 0n;
}

function imageWith(poke: (image: Uint8Array) => void): Uint8Array {
  const image = buildQcow2({ noSnapshot: true });
  poke(image);
  return image;
}

function openWritable(device: BlockDevice) {
  return openImage(device, { host, writable: true });
}

describe('write safety', () => {
  it('refuses to write an image marked corrupt', async () => {
    const device = new MemoryDevice(imageWith((i) => putU64(i, 72, 2n)));
    await expect(openWritable(device)).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringMatching(/marked corrupt/) });
  });

  it('repairs an image left dirty before writing it, and says so', async () => {
    const device = new MemoryDevice(imageWith((i) => putU64(i, 72, DIRTY)));
    const warnings: string[] = [];
    const image = await openImage(device, { host: { ...host, warn: (message) => warnings.push(message) }, writable: true });
    expect(dirtyBit(device.contents())).toBe(false);
    expect(warnings).toEqual([expect.stringMatching(/not closed cleanly.*refcounts repaired/)]);
    await image.close();
  });

  it('refuses to write an image with an unknown incompatible feature', async () => {
    const device = new MemoryDevice(imageWith((i) => putU64(i, 72, 1n << 7n)));
    await expect(openWritable(device)).rejects.toMatchObject({ code: 'EUNSUPPORTED' });
  });

  it('refuses to write through a read-only device', async () => {
    const device = new MemoryDevice(buildQcow2({ noSnapshot: true }), { writable: false });
    await expect(openWritable(device)).rejects.toMatchObject({ code: 'EREADONLY' });
  });

  it('with lazy refcounts, sets the dirty bit before any other write and clears it on close', async () => {
    const device = new RecordingDevice(imageWith((i) => putU64(i, 80, LAZY_REFCOUNTS)));
    const image = await openWritable(device);
    await image.write!(64 * 1024, new Uint8Array(4096).fill(7));
    expect(device.log.length).toBeGreaterThan(1);
    expect(device.log[0]).toMatchObject({ offset: 0, dirtyOnDisk: true });
    expect(device.log.every((entry) => entry.dirtyOnDisk || entry === device.log.at(-1))).toBe(true);
    await image.close();
    expect(dirtyBit(device.contents())).toBe(false);
  });

  it('refuses to write when a refcount block lies past the end of the file (it would write terabytes out)', async () => {
    const device = new MemoryDevice(imageWith((i) => putU64(i, 2 * 4096, 2 ** 40)));
    await expect(openWritable(device)).rejects.toMatchObject({
      code: 'ECORRUPT',
      message: expect.stringMatching(/refcount block 0 at 1099511627776 lies past the end of the file/),
    });
    expect(device.size).toBe(buildQcow2({ noSnapshot: true }).length);
  });

  it('without lazy refcounts, never sets the dirty bit', async () => {
    const device = new RecordingDevice(buildQcow2({ noSnapshot: true }));
    const image = await openWritable(device);
    await image.write!(64 * 1024, new Uint8Array(4096).fill(7));
    await image.close();
    expect(device.log.some((entry) => entry.dirtyOnDisk)).toBe(false);
  });
});

describe('convert never writes its source', () => {
  const tmp = tempDir('platter-hostile-write-');
  afterAll(() => tmp.cleanup());
  const base = tmp.path('base.qcow2');
  const top = tmp.path('top.qcow2');
  writeFileSync(base, buildQcow2({ noSnapshot: true }));
  writeFileSync(top, buildQcow2({ noSnapshot: true, empty: true, backingFile: 'base.qcow2', backingFormat: 'qcow2' }));
  symlinkSync(top, tmp.path('alias.qcow2'));
  linkSync(top, tmp.path('hardlink.qcow2'));
  const hashes = () => [base, top].map((path) => createHash('sha256').update(readFileSync(path)).digest('hex'));
  const before = hashes();

  it.each([
    ['the source itself', top],
    ['a symlink to the source', tmp.path('alias.qcow2')],
    ['a hard link to the source', tmp.path('hardlink.qcow2')],
    ['the backing file of the source', base],
  ])('refuses %s as the target', (_what, target) => {
    const result = platter(['convert', '-O', 'raw', top, target]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing to convert onto the source image/);
    expect(hashes()).toEqual(before);
  });

  it.each([top, tmp.path('hardlink.qcow2'), base])('dd refuses %s as its output', (target) => {
    const result = platter(['dd', `if=${top}`, `of=${target}`]);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing to write onto the source image/);
    expect(hashes()).toEqual(before);
  });

  it.each(['convert', 'dd'])('%s refuses the external data file of its source as output', (command) => {
    const data = tmp.path('data.raw');
    writeFileSync(data, new Uint8Array(64 * 1024));
    const image = tmp.path('with-data.qcow2');
    writeFileSync(image, buildQcow2({ noSnapshot: true, empty: true, dataFile: 'data.raw' }));
    const argv = command === 'convert' ? ['convert', '-O', 'raw', image, data] : ['dd', `if=${image}`, `of=${data}`];
    const result = platter(argv);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing to (convert|write) onto the source image/);
  });

  it('leaves the source chain unchanged after a conversion', () => {
    const result = platter(['convert', '-O', 'raw', top, tmp.path('out.raw')]);
    expect(result.status, result.stderr).toBe(0);
    expect(hashes()).toEqual(before);
  });
});
