/**
 * `compare`: are two images' guest contents the same? qemu-img compare's rules:
 * runs that read as zero in both are equal without reading; a size difference
 * is fine when the extra part reads as zeros (unless strict); a mismatch is
 * reported at the start of the first differing 512-byte sector of a chunk.
 */

import { PlatterError } from '../core/errors.js';
import type { Extent, Image } from '../core/image.js';
import { alignedBuffer } from './aligned.js';
import { portableByteTests, type ByteTests } from './bytes-accel.js';
import type { ProgressCallback } from './progress.js';
import { walkExtents } from './extents.js';

/** qemu-img compare reads at most this much per step (its IO_BUF_SIZE). */
export const COMPARE_CHUNK = 2 * 1024 * 1024;
/** Mismatch offsets are reported with this granularity (qemu's BDRV_SECTOR_SIZE). */
const SECTOR = 512;

/** Options of `compare`. */
export interface CompareOptions {
  /** -s: sizes and block status must match too. */
  strict?: boolean;
  tests?: ByteTests;
  onProgress?: ProgressCallback;
}

/** Why two images differ. */
export type CompareMismatch =
  | { kind: 'content'; offset: number }
  | { kind: 'block-status'; offset: number }
  | { kind: 'size' };

/** The outcome of `compare`. */
export interface CompareResult {
  identical: boolean;
  /** The sizes differ. */
  sizeMismatch: boolean;
  /** The sizes differ and the common part matched, so the larger image's extra part was checked (qemu-img warns then). */
  extraPartChecked: boolean;
  mismatch?: CompareMismatch;
}

/**
 * What compare was doing when an image failed: finding allocation ('block
 * status') or reading data ('read'). It is recorded in the error's data as
 * `step`; qemu-img compare exits 3 and 4 for these.
 */
export type CompareStep = 'block status' | 'read';

/** Runs `work`, recording `step` in a PlatterError it throws. */
async function during<T>(step: CompareStep, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    if (error instanceof PlatterError) error.data.step ??= step;
    throw error;
  }
}

/** Steps through an image's extents by increasing offset. */
class ExtentCursor {
  private current: Extent | undefined;
  private readonly extents: AsyncGenerator<Extent>;

  constructor(image: Image, end: number) {
    this.extents = walkExtents(image, 0, end);
  }

  /** The extent covering `offset` (offsets must not go backwards). */
  async at(offset: number): Promise<Extent> {
    while (!this.current || this.current.start + this.current.length <= offset) {
      const next = await during('block status', () => this.extents.next());
      if (next.done) throw new RangeError(`no extent at offset ${offset}`);
      this.current = next.value;
    }
    return this.current;
  }
}

/** Two reused read buffers, so a long compare allocates nothing per chunk. */
class ChunkBuffers {
  private readonly buffers: Uint8Array[] = [new Uint8Array(0), new Uint8Array(0)];

  /** Reads [offset, offset+length) of `image` into buffer `slot` (0 or 1). */
  async read(image: Image, offset: number, length: number, slot: 0 | 1): Promise<Uint8Array> {
    if (!image.readInto) return during('read', () => image.read(offset, length));
    if (this.buffers[slot]!.length < length) this.buffers[slot] = alignedBuffer(COMPARE_CHUNK);
    const view = this.buffers[slot]!.subarray(0, length);
    await during('read', () => image.readInto!(offset, view));
    return view;
  }
}

const allocated = (extent: Extent) => extent.kind !== 'unallocated';
const readsZero = (extent: Extent) => extent.kind !== 'data';

/**
 * The block status flags qemu-img compare -s compares: data or zero, allocated
 * (in whichever layer answers: a backing file's run counts as its own), and
 * whether the run has a host offset (a compressed run has none).
 */
function sameBlockStatus(a: Extent, b: Extent): boolean {
  const hasOffset = (extent: Extent) => extent.hostOffset !== undefined && !extent.compressed;
  return readsZero(a) === readsZero(b) && allocated(a) === allocated(b) && hasOffset(a) === hasOffset(b);
}

/** Start of the first 512-byte sector (counted from the chunk start) where the test fails, or -1. */
function firstSectorWhere(length: number, sectorDiffers: (start: number, end: number) => boolean): number {
  for (let start = 0; start < length; start += SECTOR) {
    if (sectorDiffers(start, Math.min(length, start + SECTOR))) return start;
  }
  return -1;
}

/** Compares the guest contents of `a` and `b`. */
export async function compareImages(a: Image, b: Image, options: CompareOptions = {}): Promise<CompareResult> {
  const tests = options.tests ?? portableByteTests;
  const sizeMismatch = a.size !== b.size;
  const result = (mismatch?: CompareMismatch, extraPartChecked = false): CompareResult =>
    mismatch ? { identical: false, sizeMismatch, extraPartChecked, mismatch } : { identical: true, sizeMismatch, extraPartChecked };
  if (options.strict && sizeMismatch) return result({ kind: 'size' });
  const common = Math.min(a.size, b.size);
  const total = Math.max(a.size, b.size);
  const progress = (done: number) => options.onProgress?.(done, total);
  progress(0);
  const io = new ChunkBuffers();
  const cursorA = new ExtentCursor(a, common);
  const cursorB = new ExtentCursor(b, common);
  for (let offset = 0; offset < common; ) {
    const [extentA, extentB] = [await cursorA.at(offset), await cursorB.at(offset)];
    let chunk = Math.min(extentA.start + extentA.length, extentB.start + extentB.length) - offset;
    if (options.strict && !sameBlockStatus(extentA, extentB)) {
      return result({ kind: 'block-status', offset });
    }
    if (!(readsZero(extentA) && readsZero(extentB))) {
      chunk = Math.min(chunk, COMPARE_CHUNK);
      const found =
        allocated(extentA) === allocated(extentB)
          ? await firstDifference(io, a, b, offset, chunk, tests)
          : await firstNonZero(io, allocated(extentA) ? a : b, offset, chunk, tests);
      if (found >= 0) return result({ kind: 'content', offset: offset + found });
    }
    offset += chunk;
    progress(offset);
  }
  if (sizeMismatch) {
    const found = await extraPartNonZero(io, a.size > b.size ? a : b, common, tests, progress);
    if (found >= 0) return result({ kind: 'content', offset: found }, true);
  }
  progress(total);
  return result(undefined, sizeMismatch);
}

/** Offset (from `offset`) of the first differing sector of the two images, or -1. */
async function firstDifference(
  io: ChunkBuffers,
  a: Image,
  b: Image,
  offset: number,
  length: number,
  tests: ByteTests,
): Promise<number> {
  const [bytesA, bytesB] = await Promise.all([io.read(a, offset, length, 0), io.read(b, offset, length, 1)]);
  if (tests.rangesEqual(bytesA, bytesB, 0, length)) return -1;
  return firstSectorWhere(length, (start, end) => !tests.rangesEqual(bytesA, bytesB, start, end));
}

/** Offset (from `offset`) of the first sector holding a non-zero byte, or -1. */
async function firstNonZero(io: ChunkBuffers, image: Image, offset: number, length: number, tests: ByteTests): Promise<number> {
  const bytes = await io.read(image, offset, length, 0);
  if (tests.isZero(bytes, 0, length)) return -1;
  return firstSectorWhere(length, (start, end) => !tests.isZero(bytes, start, end));
}

/** Guest offset of the first non-zero sector of `image` past `from`, or -1; reads data runs only. */
async function extraPartNonZero(
  io: ChunkBuffers,
  image: Image,
  from: number,
  tests: ByteTests,
  progress: (done: number) => void,
): Promise<number> {
  const extents = walkExtents(image, from, image.size);
  for (let next = await during('block status', () => extents.next()); !next.done; next = await during('block status', () => extents.next())) {
    const extent = next.value;
    const end = extent.start + extent.length;
    for (let offset = extent.start; offset < end && !readsZero(extent); ) {
      const chunk = Math.min(COMPARE_CHUNK, end - offset);
      const found = await firstNonZero(io, image, offset, chunk, tests);
      if (found >= 0) return offset + found;
      offset += chunk;
      progress(offset);
    }
    progress(end);
  }
  return -1;
}
