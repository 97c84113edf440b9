/**
 * Property: a safe rebase onto any other disk (or onto none) leaves the guest
 * contents as they were, and names the new backing file.
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import type { Image, ImageHost } from '../src/core/image.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { createImage } from '../src/ops/create.js';
import { rebaseImage } from '../src/ops/rebase.js';
import { openQcow2 } from '../formats/qcow2/index.js';
import { RawImage } from '../formats/raw/index.js';

const CLUSTER = 4096;
const CLUSTERS = 16;
const SIZE = CLUSTER * CLUSTERS;

const writes = fc.array(
  fc.tuple(fc.integer({ min: 0, max: SIZE - 1 }), fc.integer({ min: 1, max: 2 * CLUSTER }), fc.integer({ min: 0, max: 3 })),
  { maxLength: 8 },
);

function rawDisk(list: Array<[number, number, number]>, name: string): RawImage {
  const bytes = new Uint8Array(SIZE);
  for (const [at, length, byte] of list) bytes.fill(byte, at, Math.min(SIZE, at + length));
  return new RawImage(new MemoryDevice(bytes, { writable: false, name }));
}

const host: ImageHost = { codecs: nodeCodecs, warn: () => {} };
const over = (backing: Image | undefined): ImageHost => ({ ...host, openBacking: async () => backing! });

describe('safe rebase (property)', () => {
  it('keeps what the guest reads, whatever the old and new backing files hold', async () => {
    await fc.assert(
      fc.asyncProperty(writes, writes, writes, fc.boolean(), async (oldWrites, newWrites, topWrites, flatten) => {
        const oldBase = rawDisk(oldWrites, 'old.raw');
        const newBase = flatten ? undefined : rawDisk(newWrites, 'new.raw');
        const device = new MemoryDevice(0, { name: 'top.qcow2' });
        const options = new Map([['cluster_size', String(CLUSTER)]]);
        await createImage(device, { format: 'qcow2', size: SIZE, options, backingFile: 'old.raw', backingFormat: 'raw', unsafe: true });
        const top = await openQcow2(device, { host: over(oldBase), writable: true });
        for (const [at, length, byte] of topWrites) await top.write(at, new Uint8Array(Math.min(length, SIZE - at)).fill(byte));
        const before = await top.read(0, SIZE);
        await rebaseImage(top, { backingFile: flatten ? '' : 'new.raw', backingFormat: 'raw', newBacking: newBase });
        await top.close();
        const after = await openQcow2(device, { host: over(newBase) });
        expect(after.metadata.backingFileName).toBe(flatten ? undefined : 'new.raw');
        expect(after.backing?.name).toBe(newBase?.name);
        expect(Buffer.from(await after.read(0, SIZE)).equals(Buffer.from(before))).toBe(true);
      }),
      { numRuns: 60 },
    );
  });
});
