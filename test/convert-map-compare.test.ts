import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { compareImages } from '../src/ops/compare.js';
import { mapImage, type MapEntry } from '../src/ops/map.js';
import { nodeByteTests } from '../src/node/byte-tests.js';
import { mapEntryHuman, mapEntryJson } from '../src/cli/render/map.js';
import { ScriptedImage, type ScriptedRun } from './helpers/convert-fake-image.js';

async function collect(image: ScriptedImage, options = {}): Promise<MapEntry[]> {
  const entries: MapEntry[] = [];
  for await (const entry of mapImage(image, options)) entries.push(entry);
  return entries;
}

describe('map', () => {
  it('merges runs with the same flags and continuing host offsets, as qemu-img does', async () => {
    const image = new ScriptedImage([
      { kind: 'data', length: 4096, fill: 1, hostOffset: 65536 },
      { kind: 'data', length: 4096, fill: 1, hostOffset: 65536 + 4096 },
      { kind: 'data', length: 4096, fill: 1, hostOffset: 1 << 20 },
      { kind: 'zero', length: 4096 },
      { kind: 'unallocated', length: 8192, depth: 1 },
    ]);
    image.statusPieceSize = 1024;
    const entries = await collect(image);
    expect(entries.map(({ filename: _ignored, ...rest }) => rest)).toEqual([
      { start: 0, length: 8192, depth: 0, present: true, zero: false, data: true, offset: 65536 },
      { start: 8192, length: 4096, depth: 0, present: true, zero: false, data: true, offset: 1 << 20 },
      { start: 12288, length: 4096, depth: 0, present: true, zero: true, data: false },
      { start: 16384, length: 8192, depth: 0, present: false, zero: true, data: false },
    ]);
  });

  it('covers exactly the asked window, in order, whatever the pieces', async () => {
    const runs = fc.array(
      fc.record({
        kind: fc.constantFrom('data' as const, 'zero' as const, 'unallocated' as const),
        length: fc.integer({ min: 1, max: 5000 }),
      }),
      { minLength: 1, maxLength: 10 },
    );
    await fc.assert(
      fc.asyncProperty(runs, fc.integer({ min: 1, max: 3000 }), fc.nat(), fc.nat(), async (spec, piece, startSeed, lengthSeed) => {
        const image = new ScriptedImage(spec.map((run): ScriptedRun => ({ ...run, fill: 1 })));
        image.statusPieceSize = piece;
        const startOffset = startSeed % image.size;
        const maxLength = 1 + (lengthSeed % image.size);
        const entries = await collect(image, { startOffset, maxLength });
        let at = startOffset;
        for (const [index, entry] of entries.entries()) {
          expect(entry.start).toBe(at);
          at += entry.length;
          const next = entries[index + 1];
          if (next) expect([entry.zero, entry.data, entry.present]).not.toEqual([next.zero, next.data, next.present]);
        }
        expect(at).toBe(Math.min(image.size, startOffset + maxLength));
      }),
      { numRuns: 100 },
    );
  });

  it("prints qemu-img's JSON and table lines", () => {
    const entry: MapEntry = { start: 0, length: 65536, depth: 0, present: true, zero: false, data: true, offset: 327680, filename: 'a.qcow2' };
    expect(mapEntryJson(entry)).toBe('{ "start": 0, "length": 65536, "depth": 0, "present": true, "zero": false, "data": true, "offset": 327680}');
    expect(mapEntryHuman(entry)).toBe('0               0x10000         0x50000         a.qcow2\n');
    expect(() => mapEntryHuman({ ...entry, offset: undefined })).toThrow('File contains external, encrypted or compressed clusters.');
    expect(mapEntryHuman({ ...entry, zero: true, data: false })).toBe('');
  });
});

describe('compare', () => {
  it('does not read runs that read as zero in both images', async () => {
    const a = new ScriptedImage([
      { kind: 'zero', length: 1 << 20 },
      { kind: 'data', length: 4096, fill: 5 },
      { kind: 'unallocated', length: 1 << 20 },
    ]);
    const b = new ScriptedImage([
      { kind: 'unallocated', length: 1 << 20 },
      { kind: 'data', length: 4096, fill: 5 },
      { kind: 'zero', length: 1 << 20 },
    ]);
    expect(await compareImages(a, b, { tests: nodeByteTests })).toMatchObject({ identical: true });
    expect(a.reads).toEqual([{ offset: 1 << 20, length: 4096 }]);
    expect(await compareImages(a, b, { strict: true })).toMatchObject({ identical: false, mismatch: { kind: 'block-status', offset: 0 } });
  });

  it('reports the first differing sector of the chunk', async () => {
    const a = new ScriptedImage([{ kind: 'data', length: 8192, fill: 1 }]);
    const b = new ScriptedImage([{ kind: 'data', length: 8192, fill: 1 }]);
    b.bytes[5000] = 0xfe;
    expect(await compareImages(a, b, { tests: nodeByteTests })).toMatchObject({ mismatch: { kind: 'content', offset: 4608 } });
    a.enableReadInto();
    b.enableReadInto();
    expect(await compareImages(a, b, { tests: nodeByteTests })).toMatchObject({ mismatch: { kind: 'content', offset: 4608 } });
    expect(await compareImages(a, a, { tests: nodeByteTests })).toMatchObject({ identical: true });
  });

  it('allows a longer image whose extra part reads as zeros, unless strict', async () => {
    const a = new ScriptedImage([{ kind: 'data', length: 4096, fill: 1 }]);
    const b = new ScriptedImage([
      { kind: 'data', length: 4096, fill: 1 },
      { kind: 'data', length: 4096, fill: 0 },
      { kind: 'unallocated', length: 4096 },
    ]);
    expect(await compareImages(a, b)).toEqual({ identical: true, sizeMismatch: true, extraPartChecked: true });
    expect(await compareImages(b, a, { strict: true })).toMatchObject({ identical: false, mismatch: { kind: 'size' } });
    b.bytes[4096 + 3000] = 1;
    expect(await compareImages(b, a)).toMatchObject({ identical: false, mismatch: { kind: 'content', offset: 4096 + 2560 } });
  });
});

describe('inconsistent block status', () => {
  it('is a corruption error, not a hang or a silent skip', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 8192, fill: 1 }]);
    const gappy = async (offset: number, length: number) => [{ start: offset + 512, length: length - 512, kind: 'data' as const, depth: 0 }];
    const empty = async () => [];
    const zeroLength = async (offset: number) => [{ start: offset, length: 0, kind: 'data' as const, depth: 0 }];
    for (const blockStatus of [gappy, empty, zeroLength]) {
      image.blockStatus = blockStatus;
      await expect(collect(image)).rejects.toMatchObject({ code: 'ECORRUPT' });
      await expect(compareImages(image, image)).rejects.toMatchObject({ code: 'ECORRUPT' });
    }
  });
});
