/**
 * Hostile qcow2 input (qemu-iotests 060/080 style): bytes poked at known
 * offsets give a specific PlatterError quickly, never a TypeError, a RangeError
 * from a giant allocation, or a hang.
 */

import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MemoryDevice } from '../src/core/device.js';
import { PlatterError } from '../src/core/errors.js';
import type { Image, ImageHost } from '../src/core/image.js';
import { openImage } from '../src/engine/open.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { TINY_LAYOUT, buildTinyQcow2, tinyGuestPattern } from './helpers/qcow2-tiny.js';

const host: ImageHost = { codecs: nodeCodecs, warn: () => {} };

function open(bytes: Uint8Array): Promise<Image> {
  return openImage(new MemoryDevice(bytes, { writable: false, name: 'tiny.qcow2' }), { host });
}

function poked(pokes: [offset: number, bytes: number[]][]): Uint8Array {
  const image = buildTinyQcow2();
  for (const [offset, bytes] of pokes) image.set(bytes, offset);
  return image;
}

const u32 = (value: number) => [(value >>> 24) & 0xff, (value >>> 16) & 0xff, (value >>> 8) & 0xff, value & 0xff];
const u64 = (value: bigint) => [...u32(Number(value >> 32n)), ...u32(Number(value & 0xffffffffn))];

async function readAll(image: Image): Promise<Uint8Array> {
  return image.read(0, image.size);
}

describe('the tiny hand-built image', () => {
  it('reads data, compressed, zero and unallocated clusters', async () => {
    const image = await open(buildTinyQcow2());
    const bytes = await readAll(image);
    expect(bytes.subarray(0, 65536)).toEqual(tinyGuestPattern(0));
    expect(bytes.subarray(65536, 131072)).toEqual(tinyGuestPattern(1));
    expect(bytes.subarray(131072).every((b) => b === 0)).toBe(true);
    expect((await image.blockStatus(0, image.size)).map((e) => [e.kind, e.length, e.compressed ?? false])).toEqual([
      ['data', 65536, false],
      ['data', 65536, true],
      ['zero', 65536, false],
      ['unallocated', image.size - 3 * 65536, false],
    ]);
  });
});

/** [what, pokes, expected code, message pattern] */
const HEADER_POKES: [string, [number, number[]][], string, RegExp][] = [
  ['unsupported version', [[4, u32(4)]], 'EUNSUPPORTED', /version 4/],
  ['cluster_bits too large', [[20, u32(30)]], 'ECORRUPT', /cluster_bits 30/],
  ['cluster_bits too small', [[20, u32(8)]], 'ECORRUPT', /cluster_bits 8/],
  ['virtual size past 2^53', [[24, u64(1n << 60n)]], 'ECORRUPT', /too large/],
  ['L1 table too large', [[36, u32(0xffffffff)]], 'ELIMIT', /L1 table too large/],
  ['L1 table too small for the size', [[36, u32(0)]], 'ECORRUPT', /L1 table is too small/],
  ['L1 table offset unaligned', [[40, u64(BigInt(TINY_LAYOUT.l1Table + 8))]], 'ECORRUPT', /not cluster-aligned/],
  ['L1 table past the end of the file', [[40, u64(1n << 40n)]], 'ECORRUPT', /past the end/],
  ['refcount table too large', [[56, u32(0xffffffff)]], 'ELIMIT', /reference count table too large/],
  ['no refcount table', [[56, u32(0)]], 'ECORRUPT', /reference count table/],
  ['too many snapshots', [[60, u32(0xffffffff)]], 'ELIMIT', /too many snapshots/],
  ['snapshot table unaligned', [[60, u32(1)], [64, u64(100n)]], 'ECORRUPT', /snapshot table offset/],
  // qemu holds an empty table's offset to the cluster too ("Snapshot table offset invalid", "Active L1 table offset invalid").
  ['snapshot table unaligned with no snapshots', [[64, u64(100n)]], 'ECORRUPT', /snapshot table offset 100 is not cluster-aligned/],
  ['empty L1 table unaligned', [[24, u64(0n)], [36, u32(0)], [40, u64(100n)]], 'ECORRUPT', /L1 table offset 100 is not cluster-aligned/],
  ['snapshot table truncated', [[60, u32(1)], [64, u64(BigInt(TINY_LAYOUT.compressed))]], 'ECORRUPT', /snapshot table entry 0/],
  ['header_length too short', [[100, u32(50)]], 'ECORRUPT', /header too short/],
  ['header_length past the cluster', [[100, u32(1 << 20)]], 'ECORRUPT', /exceeds the cluster size/],
  ['refcount order too large', [[96, u32(7)]], 'ECORRUPT', /refcount_order 7/],
  ['backing file offset past cluster 0', [[8, u64(1n << 20n)], [16, u32(4)]], 'ECORRUPT', /backing file offset/],
  ['backing file name too long', [[8, u64(4096n)], [16, u32(5000)]], 'ECORRUPT', /backing file name too long/],
  ['unknown compression type', [[79, [0x08]], [104, [7]]], 'EUNSUPPORTED', /compression type 7/],
  ['compression bit without a type', [[79, [0x08]]], 'ECORRUPT', /compression type feature bit/],
  ['unknown incompatible bit', [[72, [0x80]]], 'EUNSUPPORTED', /feature bit 63/],
  ['encrypted', [[32, u32(2)]], 'EUNSUPPORTED', /encrypted images are not supported/],
  ['extension longer than cluster 0', [[112, [...u32(0x12345678), ...u32(0x7fffffff)]]], 'ECORRUPT', /too large/],
  // qemu checks the length before it looks at the type (qemu-img: "Header extension too large").
  ['end marker with a length past cluster 0', [[112, [...u32(0), ...u32(0x7fffffff)]]], 'ECORRUPT', /extension 0x0 too large/],
  ['extended L2 with small clusters', [[79, [0x10]], [20, u32(12)]], 'ECORRUPT', /at least 16 KiB/],
  ['snapshot extra data too large', [[60, u32(1)], [64, u64(BigInt(TINY_LAYOUT.refcountBlock))], [TINY_LAYOUT.refcountBlock + 36, u32(5000)]], 'ECORRUPT', /too much extra data/],
];

describe('hostile headers', () => {
  for (const [what, pokes, code, message] of HEADER_POKES) {
    it(`refuses: ${what}`, async () => {
      const error = await open(poked(pokes)).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(PlatterError);
      expect(error).toMatchObject({ code, file: 'tiny.qcow2' });
      expect((error as Error).message).toMatch(message);
    });
  }
});

/** Pokes that open fine but make reads fail. */
const TABLE_POKES: [string, [number, number[]][], RegExp][] = [
  ['L2 table offset unaligned', [[TINY_LAYOUT.l1Table, u64((1n << 63n) | BigInt(TINY_LAYOUT.l2Table + 512))]], /L2 table offset .* not cluster-aligned/],
  ['L2 table past the end of the file', [[TINY_LAYOUT.l1Table, u64(1n << 40n)]], /L2 table at .* past the end/],
  ['L1 entry past 2^53', [[TINY_LAYOUT.l1Table, u64(0x00f0000000000000n)]], /2\^53/],
  ['data cluster unaligned', [[TINY_LAYOUT.l2Table, u64(BigInt(TINY_LAYOUT.dataCluster + 512))]], /cluster offset .* not cluster-aligned/],
  ['compressed stream garbage', [[TINY_LAYOUT.compressed, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff]]], /decompress|deflate/],
  ['compressed cluster past the end', [[TINY_LAYOUT.l2Table + 8, u64((1n << 62n) | (1n << 40n))]], /past the end/],
];

describe('hostile tables', () => {
  for (const [what, pokes, message] of TABLE_POKES) {
    it(`reports: ${what}`, async () => {
      const image = await open(poked(pokes));
      await expect(readAll(image)).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringMatching(message) });
    });
  }
});

describe('random pokes', () => {
  it('either read or fail with a PlatterError', async () => {
    const regions = [
      fc.integer({ min: 0, max: 200 }),
      fc.integer({ min: TINY_LAYOUT.l1Table, max: TINY_LAYOUT.l1Table + 7 }),
      fc.integer({ min: TINY_LAYOUT.l2Table, max: TINY_LAYOUT.l2Table + 31 }),
      fc.integer({ min: TINY_LAYOUT.compressed, max: TINY_LAYOUT.compressed + 64 }),
    ];
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.oneof(...regions), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }), async (pokes) => {
        const bytes = poked(pokes.map(([offset, value]) => [offset, [value]]));
        try {
          const image = await open(bytes);
          await image.blockStatus(0, image.size);
          if (image.size <= 1 << 24) await readAll(image);
        } catch (error) {
          if (!(error instanceof PlatterError)) throw error;
        }
      }),
      { numRuns: 300 },
    );
  });
});

describe('open modes', () => {
  it('refuses to open an image marked corrupt for writing', async () => {
    const bytes = poked([[79, [0x02]]]);
    await expect(
      openImage(new MemoryDevice(bytes, { name: 'tiny.qcow2' }), { host, writable: true }),
    ).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringMatching(/marked corrupt/) });
  });

  it('opens dirty and corrupt images read-only with a warning', async () => {
    for (const [bit, pattern] of [[0x01, /dirty/], [0x02, /corrupt/]] as const) {
      const warnings: string[] = [];
      const image = await openImage(new MemoryDevice(poked([[79, [bit]]]), { writable: false }), {
        host: { ...host, warn: (w) => warnings.push(w) },
      });
      expect(image.writable).toBe(false);
      expect(warnings).toEqual([expect.stringMatching(pattern)]);
      expect((await image.read(0, 65536))).toEqual(tinyGuestPattern(0));
    }
  });
});
