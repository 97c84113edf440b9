/**
 * A sparse file opened read-only for a reader of its holes (a raw image) is
 * read with O_DIRECT where the read allows (holes answer at memory speed
 * instead of through the page cache); every other read goes through the page
 * cache. The bytes are the same either way.
 */

import { closeSync, openSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { FileDevice } from '../src/node/file-device.js';
import { alignedBuffer } from '../src/ops/aligned.js';
import { tempDir } from './helpers/tools.js';

const tmp = tempDir();
/** Byte equality through memcmp: expect's deep equality walks typed arrays element by element. */
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a.buffer, a.byteOffset, a.length).equals(Buffer.from(b.buffer, b.byteOffset, b.length));
afterAll(() => tmp.cleanup());
const MiB = 1 << 20;

/** A 64 MiB file, mostly holes, with random data at a few places (one not page-aligned); and its bytes. */
function sparseFile(name: string): { path: string; bytes: Uint8Array } {
  const path = tmp.path(name);
  writeFileSync(path, '');
  truncateSync(path, 64 * MiB);
  const bytes = new Uint8Array(64 * MiB);
  const fd = openSync(path, 'r+');
  for (const [at, length] of [[0, 4096], [5 * MiB + 100, 70_000], [40 * MiB, MiB], [64 * MiB - 512, 512]] as const) {
    const data = randomFillSync(new Uint8Array(length));
    writeSync(fd, data, 0, length, at);
    bytes.set(data, at);
  }
  closeSync(fd);
  return { path, bytes };
}

describe('FileDevice reads of a sparse file', () => {
  const { path, bytes } = sparseFile('sparse.raw');

  it('aligned reads into page-aligned buffers go through O_DIRECT, with the same bytes, once the reader reads holes', async () => {
    const device = await FileDevice.open(path);
    device.willReadHoles();
    try {
      const buffer = alignedBuffer(2 * MiB, { shared: true });
      for (let at = 0; at < 64 * MiB; at += 2 * MiB) {
        await device.readInto(at, buffer);
        expect(same(buffer, bytes.subarray(at, at + 2 * MiB)), `at ${at}`).toBe(true);
      }
      // Where the file system has no O_DIRECT (tmpfs before Linux 6.6), every read went through the cache: still right.
      expect(device.directReads === 32 || device.directReads === 0).toBe(true);
    } finally {
      await device.close();
    }
  });

  it('reads at unaligned offsets, of unaligned lengths or into unaligned buffers go through the page cache', async () => {
    const device = await FileDevice.open(path);
    device.willReadHoles();
    try {
      const page = alignedBuffer(3 * 4096);
      for (const [at, target] of [
        [5 * MiB + 100, new Uint8Array(70_000)],
        [4096, page.subarray(0, 4096 + 512)],
        [40 * MiB, page.subarray(512, 512 + 4096)],
        [64 * MiB - 4096, new Uint8Array(4096)],
      ] as const) {
        await device.readInto(at, target);
        expect(same(target, bytes.subarray(at, at + target.length)), `at ${at}`).toBe(true);
      }
      // The last one: an ordinary buffer, 16-byte aligned in memory, which the kernel refuses for O_DIRECT (or, by chance, takes).
      expect(device.directReads).toBeLessThanOrEqual(1);
    } finally {
      await device.close();
    }
  });

  it('a file open for writing, with no holes to speak of, or whose reader skips holes (qcow2), is read through the page cache only', async () => {
    const dense = tmp.path('dense.raw');
    writeFileSync(dense, randomFillSync(new Uint8Array(8 * MiB)));
    for (const [file, options, holesRead] of [[path, { writable: true }, true], [dense, {}, true], [path, {}, false]] as const) {
      const device = await FileDevice.open(file, options);
      if (holesRead) device.willReadHoles();
      try {
        await device.readInto(0, alignedBuffer(2 * MiB));
        expect(device.directReads).toBe(0);
      } finally {
        await device.close();
      }
    }
  });
});
