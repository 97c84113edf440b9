/**
 * Byte-mutation fuzzing of qcow2 images in memory: arbitraries for mutations
 * aimed at each structure of the base image, and an "exercise" that opens the
 * result and walks it, recording anything that is not a PlatterError.
 */

import fc from 'fast-check';
import { MemoryDevice } from '../../src/core/device.js';
import { BoundsCheckingDevice } from './fuzz-device.js';
import { PlatterError } from '../../src/core/errors.js';
import type { Image, ImageHost } from '../../src/core/image.js';
import { openImage } from '../../src/engine/open.js';
import { openSnapshotView, Qcow2Image } from '../../formats/qcow2/index.js';
import { nodeCodecs } from '../../src/node/codecs.js';
import { info } from '../../src/ops/info.js';
import { LAYOUT, buildQcow2, type BaseImageOptions } from './hostile-qcow2.js';

/** The seed images mutations start from. */
export const FUZZ_SEEDS: BaseImageOptions[] = [
  {},
  { version: 2 },
  { compressionType: 1 },
  { clusterBits: 9 },
  { extendedL2: true, clusterBits: 14 },
  { backingFile: 'base.qcow2', backingFormat: 'qcow2' },
];

/** One byte-level change. */
export interface Mutation {
  /** Which structure (a cluster index of LAYOUT, or 0 for the header). */
  cluster: number;
  /** Byte offset inside that cluster's first 512 bytes, where the tables' live entries are. */
  offset: number;
  /** What to write there. */
  value: Uint8Array;
}

/** Values that break parsers: zero, all ones, sign bits, large powers of two, random bytes. */
const valueArb = fc.oneof(
  fc.uint8Array({ minLength: 1, maxLength: 8 }),
  fc.constantFrom(
    [0xff, 0xff, 0xff, 0xff],
    [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    [0x80, 0, 0, 0],
    [0x7f, 0xff, 0xff, 0xff],
    [0, 0, 0, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],
    [0x00, 0x20, 0, 0, 0, 0, 0, 0],
    [0x40, 0, 0, 0, 0, 0, 0x10, 0x00],
    [0x80, 0, 0, 0, 0, 0, 0x40, 0x00],
    [0, 0, 0, 1],
    [0, 0, 0x10, 0],
  ).map((bytes) => Uint8Array.from(bytes)),
);

/** A mutation aimed at one of the structures; offsets favour field starts (multiples of 4). */
export const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  cluster: fc.constantFrom(
    LAYOUT.header,
    LAYOUT.header,
    LAYOUT.l1,
    LAYOUT.refcountTable,
    LAYOUT.refcountBlock,
    LAYOUT.l2,
    LAYOUT.l2,
    LAYOUT.compressed,
    LAYOUT.snapshotTable,
    LAYOUT.snapshotL1,
  ),
  offset: fc.oneof(fc.integer({ min: 0, max: 63 }).map((n) => n * 4), fc.integer({ min: 0, max: 511 })),
  value: valueArb,
});

/** A whole fuzz case: a seed, some mutations, maybe a truncation. */
export interface FuzzCase {
  seed: number;
  mutations: Mutation[];
  /** Cut the file to this fraction of its length (1 = keep it whole). */
  keep: number;
}

export const fuzzCaseArb: fc.Arbitrary<FuzzCase> = fc.record({
  seed: fc.integer({ min: 0, max: FUZZ_SEEDS.length - 1 }),
  mutations: fc.array(mutationArb, { minLength: 1, maxLength: 6 }),
  keep: fc.oneof({ weight: 5, arbitrary: fc.constant(1) }, { weight: 1, arbitrary: fc.double({ min: 0, max: 1, noNaN: true }) }),
});

const seedImages = FUZZ_SEEDS.map((options) => buildQcow2(options));

/** Applies a case to a copy of its seed image. */
export function mutatedImage(fuzzCase: FuzzCase): Uint8Array {
  const seed = seedImages[fuzzCase.seed]!;
  const clusterSize = 2 ** (FUZZ_SEEDS[fuzzCase.seed]!.clusterBits ?? 12);
  const image = seed.slice();
  for (const { cluster, offset, value } of fuzzCase.mutations) {
    const at = cluster * clusterSize + offset;
    image.set(value.subarray(0, Math.max(0, image.length - at)), at);
  }
  return image.subarray(0, Math.floor(image.length * fuzzCase.keep));
}

/** What one fuzz case did. */
export interface FuzzOutcome {
  /** Opened and walked without error. */
  ok: boolean;
  /** A PlatterError code, when it failed the expected way. */
  code?: string;
  /** Anything that should never happen: a foreign exception, an out-of-bounds request, bad extents. */
  problems: string[];
}

/** Any backing or data file name opens a fresh copy of the plain seed image. */
const host: ImageHost = {
  codecs: nodeCodecs,
  warn: () => {},
  openNamedFile: async (name) => new MemoryDevice(seedImages[0]!.slice(), { writable: false, name }),
};

/** Opens the bytes as an image and walks block status, reads and snapshots, like a careful consumer. */
export async function exercise(bytes: Uint8Array, format?: string): Promise<FuzzOutcome> {
  const device = new BoundsCheckingDevice(new MemoryDevice(bytes, { writable: false, name: 'fuzz.qcow2' }));
  const outcome: FuzzOutcome = { ok: false, problems: [] };
  try {
    const image = await openImage(device, { host, format });
    try {
      await info(image, { backingChain: true });
      await walk(image, outcome);
      if (image instanceof Qcow2Image) {
        for (const snapshot of image.metadata.snapshots.slice(0, 4)) await walk(await openSnapshotView(image, snapshot.id), outcome);
      }
      outcome.ok = true;
    } finally {
      await image.close();
    }
  } catch (error) {
    if (error instanceof PlatterError) outcome.code = error.code;
    else outcome.problems.push(`foreign exception: ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`);
  }
  outcome.problems.push(...device.violations.map((v) => `out of bounds: ${v}`));
  return outcome;
}

/** Block status over the whole disk (must tile it), then a read at the start of the first extents. */
async function walk(image: Image, outcome: FuzzOutcome): Promise<void> {
  if (image.size === 0) return;
  const extents = await image.blockStatus(0, image.size);
  let expected = 0;
  for (const extent of extents) {
    if (extent.start !== expected || !(extent.length > 0)) outcome.problems.push(`extents do not tile the disk at ${expected}`);
    expected = extent.start + extent.length;
  }
  if (expected !== image.size) outcome.problems.push(`extents end at ${expected}, not ${image.size}`);
  for (const extent of extents.slice(0, 16)) {
    const length = Math.min(extent.length, 64 * 1024);
    const data = await image.read(extent.start, length);
    if (data.length !== length) outcome.problems.push(`read returned ${data.length} of ${length} bytes`);
  }
}
