import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { nonZeroRuns, portableByteTests } from '../src/ops/bytes-accel.js';
import { convertToRaw } from '../src/ops/convert.js';
import { copyImage, WRITES_IN_FLIGHT } from '../src/ops/copy.js';
import { MemoryDevice } from '../src/core/device.js';
import { outsideTopLayer } from '../src/ops/extents.js';
import { ddToRaw, planDd } from '../src/ops/dd.js';
import { nodeByteTests } from '../src/node/byte-tests.js';
import { RecordingDevice, ScriptedImage, type ScriptedRun } from './helpers/convert-fake-image.js';

const SECTOR = 512;

/** Random images: runs of whole sectors, data runs sometimes holding only zeros. */
const runsArbitrary = fc.array(
  fc.record({
    kind: fc.constantFrom('data' as const, 'zero' as const, 'unallocated' as const),
    sectors: fc.integer({ min: 1, max: 40 }),
    fill: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 255 })),
  }),
  { minLength: 0, maxLength: 12 },
);

function toRuns(spec: Array<{ kind: ScriptedRun['kind']; sectors: number; fill: number }>): ScriptedRun[] {
  return spec.map((run) => ({ kind: run.kind, length: run.sectors * SECTOR, fill: run.kind === 'data' ? run.fill : 0 }));
}

function overlapsNonData(image: ScriptedImage, offset: number, length: number): boolean {
  return image.extents.some(
    (extent) => extent.kind !== 'data' && extent.start < offset + length && offset < extent.start + extent.length,
  );
}

describe('convert pipeline (property)', () => {
  it('copies exactly the image bytes and never reads unallocated or zero extents', async () => {
    await fc.assert(
      fc.asyncProperty(
        runsArbitrary,
        fc.constantFrom(0, 512, 4096, 65536),
        fc.integer({ min: 1, max: 16 }),
        fc.constantFrom(4096, 65536, 1 << 20),
        fc.integer({ min: 1, max: 8192 }),
        fc.boolean(),
        fc.boolean(),
        async (spec, sparseSize, parallel, ioSize, statusPiece, native, readInto) => {
          const image = new ScriptedImage(toRuns(spec));
          if (readInto) image.enableReadInto();
          image.statusPieceSize = statusPiece;
          const target = new RecordingDevice();
          await convertToRaw(image, target, {
            sparseSize,
            parallel,
            ioSize,
            tests: native ? nodeByteTests : portableByteTests,
          });
          expect(target.size).toBe(image.size);
          expect(Buffer.from(target.contents()).equals(Buffer.from(image.bytes))).toBe(true);
          for (const read of image.reads) expect(overlapsNonData(image, read.offset, read.length)).toBe(false);
          if (sparseSize > 0) {
            // Nothing written is all zeros at the sparse granularity.
            for (const write of target.writes) {
              expect(overlapsNonData(image, write.offset, write.length)).toBe(false);
              expect(portableByteTests.isZero(target.contents(), write.offset, write.offset + write.length)).toBe(false);
            }
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it('-n -B: writes what the top layer holds, its zeros by zero writes when the target has them, and leaves the rest', async () => {
    const layered = fc.array(
      fc.record({
        kind: fc.constantFrom('data' as const, 'zero' as const, 'unallocated' as const),
        sectors: fc.integer({ min: 1, max: 40 }),
        fill: fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 255 })),
        depth: fc.constantFrom(0, 0, 1, 2),
      }),
      { minLength: 0, maxLength: 12 },
    );
    await fc.assert(
      fc.asyncProperty(layered, fc.boolean(), fc.constantFrom(0, 512, 4096), fc.boolean(), async (spec, hasBacking, sparseSize, zeroWrites) => {
        const image = new ScriptedImage(
          spec.map((run) => ({ kind: run.kind, length: run.sectors * SECTOR, fill: run.kind === 'data' ? run.fill : 0, depth: run.kind === 'unallocated' ? 1 : run.depth })),
        );
        if (hasBacking) image.backing = new ScriptedImage([]);
        const target = new RecordingDevice(new Uint8Array(image.size).fill(0xee));
        const zeroed: Array<[number, number]> = [];
        const writeZeroes = async (offset: number, length: number) => {
          zeroed.push([offset, length]);
          // Past the recording: target.writes then holds the data writes only.
          await MemoryDevice.prototype.write.call(target, offset, new Uint8Array(length));
        };
        await copyImage(image, target, {
          sparseSize,
          targetIsZero: false,
          leave: outsideTopLayer(image),
          writeZeroes: zeroWrites ? writeZeroes : undefined,
          parallel: 4,
          ioSize: 8192,
          tests: portableByteTests,
        });
        const expected = new Uint8Array(image.size).fill(0xee);
        for (const extent of image.extents) {
          const held = extent.kind === 'unallocated' ? !hasBacking : extent.depth === 0;
          if (held) expected.set(image.bytes.subarray(extent.start, extent.start + extent.length), extent.start);
        }
        expect(Buffer.from(target.contents()).equals(Buffer.from(expected))).toBe(true);
        // Zeros the top layer holds go through zero writes when the target has them, never as written zeros.
        if (zeroWrites && sparseSize > 0) {
          for (const write of target.writes) expect(portableByteTests.isZero(target.contents(), write.offset, write.offset + write.length)).toBe(false);
        }
        if (!zeroWrites) expect(zeroed).toEqual([]);
        for (const read of image.reads) expect(overlapsNonData(image, read.offset, read.length)).toBe(false);
      }),
      { numRuns: 150 },
    );
  });

  it('dd copies the window qemu-img dd copies', async () => {
    await fc.assert(
      fc.asyncProperty(
        runsArbitrary,
        fc.integer({ min: 1, max: 5000 }),
        fc.option(fc.integer({ min: 0, max: 200 }), { nil: undefined }),
        fc.option(fc.integer({ min: 0, max: 200 }), { nil: undefined }),
        async (spec, blockSize, count, skip) => {
          const image = new ScriptedImage(toRuns(spec));
          const target = new RecordingDevice();
          const result = await ddToRaw(image, target, { blockSize, count, skip });
          const end = Math.min(image.size, count === undefined ? Infinity : count * blockSize);
          const start = (skip ?? 0) * blockSize;
          const expected = start > end ? new Uint8Array(0) : image.bytes.slice(start, end);
          expect(result.outputSize).toBe(expected.length);
          expect(target.size).toBe(Math.ceil(expected.length / SECTOR) * SECTOR);
          expect(Buffer.from(target.contents().subarray(0, expected.length)).equals(Buffer.from(expected))).toBe(true);
          for (const read of image.reads) expect(overlapsNonData(image, read.offset, read.length)).toBe(false);
        },
      ),
      { numRuns: 100 },
    );
  });
});

describe('nonZeroRuns', () => {
  it('skips aligned zero blocks and keeps the rest', () => {
    const bytes = new Uint8Array(10 * 1024);
    bytes[100] = 1; // block [0, 4096) relative to base 0
    bytes[9000] = 2; // block [8192, 10240)
    expect(nonZeroRuns(bytes, 0, 4096, nodeByteTests)).toEqual([
      [0, 4096],
      [8192, 10240],
    ]);
  });

  it('matches a block-by-block scan, for all-zero, all-data and mixed buffers', () => {
    const scan = (bytes: Uint8Array, base: number, granularity: number) => {
      const runs: Array<[number, number]> = [];
      for (let start = 0; start < bytes.length; ) {
        const end = Math.min(bytes.length, (Math.floor((base + start) / granularity) + 1) * granularity - base);
        if (bytes.subarray(start, end).some((byte) => byte !== 0)) {
          const last = runs.at(-1);
          if (last && last[1] === start) last[1] = end;
          else runs.push([start, end]);
        }
        start = end;
      }
      return runs;
    };
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 20_000 }),
        fc.integer({ min: 0, max: 5000 }),
        fc.constantFrom(512, 4096),
        fc.array(fc.nat(), { maxLength: 6 }),
        (length, base, granularity, marks) => {
          const bytes = new Uint8Array(length);
          for (const mark of marks) if (length > 0) bytes[mark % length] = 1;
          for (const tests of [nodeByteTests, portableByteTests]) {
            expect(nonZeroRuns(bytes, base, granularity, tests)).toEqual(scan(bytes, base, granularity));
          }
        },
      ),
    );
  });

  it('aligns blocks to guest offsets, not to the buffer', () => {
    const bytes = new Uint8Array(8192);
    bytes[0] = 1; // guest offset 1000, in the block [0, 4096)
    expect(nonZeroRuns(bytes, 1000, 4096, portableByteTests)).toEqual([[0, 3096]]);
  });
});

describe('planDd', () => {
  it("follows qemu-img dd's arithmetic: count bounds the input end", () => {
    expect(planDd(1 << 20, { blockSize: 4096, count: 10, skip: 3 })).toMatchObject({ start: 12288, end: 40960, outputSize: 28672 });
    expect(planDd(1 << 20, { blockSize: 1 << 20, skip: 2 })).toMatchObject({ outputSize: 0, skipPastEnd: true });
    expect(planDd(1000, {})).toMatchObject({ start: 0, end: 1024, outputSize: 1024 });
  });
  it('refuses a zero block size', () => {
    expect(() => planDd(4096, { blockSize: 0 })).toThrow(/Invalid bs/);
  });
});

describe('convert', () => {
  it('refuses an existing target smaller than the source', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 4096, fill: 1 }]);
    await expect(convertToRaw(image, new RecordingDevice(1024), { existingTarget: true })).rejects.toThrow(
      /output file is smaller than input file/,
    );
  });

  it('keeps the target size with -n and zeroes what the source does not hold', async () => {
    const image = new ScriptedImage([
      { kind: 'unallocated', length: 4096 },
      { kind: 'data', length: 4096, fill: 9 },
    ]);
    const target = new RecordingDevice(new Uint8Array(16384).fill(0xee));
    await convertToRaw(image, target, { existingTarget: true });
    expect(target.size).toBe(16384);
    expect(Buffer.from(target.contents().subarray(0, 8192)).equals(Buffer.from(image.bytes))).toBe(true);
    expect(target.contents()[8192]).toBe(0xee);
  });

  it('rounds the raw output up to whole sectors, as qemu-img does', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 1000, fill: 3 }]);
    const target = new RecordingDevice();
    const result = await convertToRaw(image, target);
    expect(result.outputSize).toBe(1024);
    expect(target.size).toBe(1024);
  });

  it('rejects bad -S and -m values', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 4096, fill: 1 }]);
    await expect(convertToRaw(image, new RecordingDevice(), { sparseSize: 1000 })).rejects.toThrow(/Invalid buffer size/);
    await expect(convertToRaw(image, new RecordingDevice(), { parallel: 17 })).rejects.toThrow(/coroutines/);
  });

  it('overlaps writes, never more than WRITES_IN_FLIGHT at once', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 16 << 20, fill: 7 }]);
    image.enableReadInto();
    const target = new SlowDevice();
    await convertToRaw(image, target, { ioSize: 1 << 20, parallel: 8 });
    expect(Buffer.from(target.contents()).equals(Buffer.from(image.bytes))).toBe(true);
    expect(target.mostAtOnce).toBe(WRITES_IN_FLIGHT);
  });

  it('writes one at a time with -m 1', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 4 << 20, fill: 7 }]);
    const target = new SlowDevice();
    await convertToRaw(image, target, { ioSize: 1 << 20, parallel: 1 });
    expect(target.mostAtOnce).toBe(1);
  });

  it('passes a read failure through without leaving writes in flight', async () => {
    const image = new ScriptedImage([{ kind: 'data', length: 8 << 20, fill: 1 }]);
    let calls = 0;
    image.read = async () => {
      calls += 1;
      if (calls === 3) throw new Error('disk on fire');
      return new Uint8Array(1 << 20).fill(1);
    };
    await expect(convertToRaw(image, new RecordingDevice(), { ioSize: 1 << 20 })).rejects.toThrow('disk on fire');
  });
});

/** A target whose writes take a few milliseconds, counting how many run at once. */
class SlowDevice extends RecordingDevice {
  private running = 0;
  mostAtOnce = 0;

  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.running += 1;
    this.mostAtOnce = Math.max(this.mostAtOnce, this.running);
    try {
      await new Promise((resolve) => setTimeout(resolve, 2));
      await super.write(offset, data);
    } finally {
      this.running -= 1;
    }
  }
}
