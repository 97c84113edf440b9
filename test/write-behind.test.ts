/** The write-behind device: held writes land merged, in order (later bytes win), before any read. */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { WriteBehindDevice, mergeWrites } from '../src/core/write-behind.js';
import { MAX_WRITE_BEHIND_BYTES } from '../src/core/limits.js';

const writeArbitrary = fc.record({
  offset: fc.integer({ min: 0, max: 300 }),
  data: fc.uint8Array({ minLength: 1, maxLength: 40 }),
});

/** A memory device that counts its writes. */
class CountingDevice extends MemoryDevice {
  writes = 0;
  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.writes++;
    await super.write(offset, data);
  }
}

/** A memory device whose writes fail. */
class FullDevice extends MemoryDevice {
  override async write(): Promise<void> {
    throw new Error('disk full');
  }
}

describe('WriteBehindDevice', () => {
  it('ends with the bytes of writing each write in order, whatever they overlap', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(writeArbitrary, { maxLength: 30 }), fc.integer({ min: 0, max: 29 }), async (writes, readAfter) => {
        const direct = new MemoryDevice(64);
        const inner = new CountingDevice(64);
        const behind = new WriteBehindDevice(inner);
        for (const [index, { offset, data }] of writes.entries()) {
          await direct.write(offset, data);
          await behind.write(offset, data);
          // A read in the middle sees every write made so far.
          if (index === readAfter) expect(await behind.read(0, direct.size)).toEqual(await direct.read(0, direct.size));
          expect(behind.size).toBe(direct.size);
        }
        await behind.flush();
        expect(inner.contents()).toEqual(direct.contents());
        expect(inner.writes).toBeLessThanOrEqual(writes.length);
      }),
    );
  });

  it('merges touching writes into one', () => {
    const merged = mergeWrites([
      { offset: 8, data: Uint8Array.of(3, 4), order: 0 },
      { offset: 0, data: Uint8Array.of(1, 1, 1, 1, 1, 1, 1, 1), order: 1 },
      { offset: 20, data: Uint8Array.of(9), order: 2 },
      { offset: 1, data: Uint8Array.of(2), order: 3 },
    ]);
    expect(merged).toEqual([
      { offset: 0, data: Uint8Array.of(1, 2, 1, 1, 1, 1, 1, 1, 3, 4) },
      { offset: 20, data: Uint8Array.of(9) },
    ]);
  });

  it('lands what it holds once the bound is passed, and reports a failed write at the next drain', async () => {
    const inner = new CountingDevice(0);
    const behind = new WriteBehindDevice(inner);
    await behind.write(0, new Uint8Array(MAX_WRITE_BEHIND_BYTES / 2));
    expect(inner.writes).toBe(0);
    await behind.write(MAX_WRITE_BEHIND_BYTES / 2, new Uint8Array(MAX_WRITE_BEHIND_BYTES / 2));
    expect(inner.writes).toBe(1);
    // Small writes count for more than their bytes: thousands of them reach the bound too.
    for (let i = 0; i < MAX_WRITE_BEHIND_BYTES / 64 && inner.writes === 1; i++) await behind.write(i * 8, new Uint8Array(8));
    expect(inner.writes).toBe(2);
    const broken = new WriteBehindDevice(new FullDevice(16));
    await broken.write(0, Uint8Array.of(1));
    await expect(broken.flush()).rejects.toThrow('disk full');
    await expect(broken.close()).rejects.toThrow('disk full');
  });
});
