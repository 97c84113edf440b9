/**
 * The copy pipeline behind convert and dd: driven by block status, several
 * requests in flight, large I/O units, zero detection, and a bounded window of
 * buffers. Raw targets accept writes in any order, so requests complete as they may
 * and several writes overlap.
 */

import type { BlockDevice } from '../core/device.js';
import { IoError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { settleAll, Slots } from '../core/slots.js';
import { alignedBuffer } from './aligned.js';
import { nonZeroRuns, type ByteTests } from './bytes-accel.js';
import { walkRuns, type LeaveTest } from './extents.js';
import type { ProgressCallback } from './progress.js';
import type { WriteLimit } from './rate-limit.js';

/** How to copy. */
export interface CopyOptions {
  /** Zero blocks of this many bytes (aligned to guest offsets) are not written; 0 = write every byte. */
  sparseSize: number;
  /** The target already reads as zeros everywhere (a new, truncated file); else zeros are written too. */
  targetIsZero: boolean;
  /** Requests in flight. */
  parallel: number;
  /** Bytes per request. */
  ioSize: number;
  tests: ByteTests;
  /** `-r`: guest bytes written per second at most (none by default). */
  limit?: WriteLimit;
  /** The source's extents to leave alone: neither read nor written over in the target (counted as progress). */
  leave?: LeaveTest;
  /**
   * Makes a range of the target read as zeros (an image's zero write). When
   * given and zeros must be written, zero runs, and zero blocks of `sparseSize`
   * inside data, go through it rather than as written zeros, as qemu-img writes
   * zeros into a target that may hold data.
   */
  writeZeroes?: (offset: number, length: number) => Promise<void>;
  onProgress?: ProgressCallback;
}

/** What a copy did. */
export interface CopyStats {
  /** Guest bytes read from the source (zero and unallocated runs are never read). */
  bytesRead: number;
  /** Bytes written to the target. */
  bytesWritten: number;
}

/** One unit of work: copy guest bytes, or write zeros over a range of the target. */
interface CopyJob {
  offset: number;
  length: number;
  zero: boolean;
}

/** The guest range a copy covers; it lands at target offset 0. */
export interface CopyRange {
  sourceOffset: number;
  length: number;
}

/**
 * Copies `range` of `source` to the target at offset 0 (the whole image by default).
 * Unallocated and zero runs are never read; with a zeroed target they are not written either.
 */
export async function copyImage(
  source: Image,
  target: BlockDevice,
  options: CopyOptions,
  range: CopyRange = { sourceOffset: 0, length: source.size },
): Promise<CopyStats> {
  if (!target.write) throw new IoError(`${target.name} cannot be written`);
  return new CopyRun(source, target, options, range).run();
}

/** The state of one copy: counters, reused buffers, and the write queue. */
class CopyRun {
  readonly stats: CopyStats = { bytesRead: 0, bytesWritten: 0 };
  private readonly writeZeros: boolean;
  private readonly zeroBuffer: Uint8Array | undefined;
  /** One page-aligned buffer per request in flight, reused: no allocation (and no page faults) per request. */
  private readonly buffers: Uint8Array[] = [];
  private readonly writeSlots = new Slots(WRITES_IN_FLIGHT);
  private done = 0;

  constructor(
    private readonly source: Image,
    private readonly target: BlockDevice,
    private readonly options: CopyOptions,
    private readonly range: CopyRange,
  ) {
    this.writeZeros = options.sparseSize === 0 || !options.targetIsZero;
    this.zeroBuffer = this.writeZeros && !options.writeZeroes ? alignedBuffer(options.ioSize) : undefined;
  }

  async run(): Promise<CopyStats> {
    const { sourceOffset, length } = this.range;
    this.options.onProgress?.(0, length);
    const jobs = copyJobs(this.source, { start: sourceOffset, end: sourceOffset + length, leave: this.options.leave }, this.options.ioSize, this.writeZeros, (bytes) =>
      this.advance(bytes),
    );
    await runPool(jobs, this.options.parallel, (job) => this.handle(job));
    return this.stats;
  }

  private advance(bytes: number): void {
    this.done += bytes;
    this.options.onProgress?.(this.done, this.range.length);
  }

  private async handle(job: CopyJob): Promise<void> {
    if (job.zero) {
      await this.zero(job.offset, job.length);
    } else if (this.source.readInto) {
      const buffer = this.buffers.pop() ?? alignedBuffer(this.options.ioSize, { shared: true });
      try {
        const bytes = buffer.subarray(0, job.length);
        await this.source.readInto(job.offset, bytes);
        await this.copyBytes(job, bytes);
      } finally {
        this.buffers.push(buffer);
      }
    } else {
      await this.copyBytes(job, await this.source.read(job.offset, job.length));
    }
    this.advance(job.length);
  }

  /**
   * Writes what was read: all of it (-S 0, or zeros to be written and no zero
   * write), or its non-zero blocks, the zero blocks between them made zero
   * when the target may not read zeros there.
   */
  private async copyBytes(job: CopyJob, bytes: Uint8Array): Promise<void> {
    this.stats.bytesRead += bytes.length;
    const zeroWrites = this.writeZeros && this.options.sparseSize > 0 && this.options.writeZeroes !== undefined;
    if (this.writeZeros && !zeroWrites) return this.write(job.offset, bytes);
    let at = 0;
    for (const [from, to] of nonZeroRuns(bytes, job.offset, this.options.sparseSize, this.options.tests)) {
      if (zeroWrites && from > at) await this.zero(job.offset + at, from - at);
      await this.write(job.offset + from, bytes.subarray(from, to));
      at = to;
    }
    if (zeroWrites && at < bytes.length) await this.zero(job.offset + at, bytes.length - at);
  }

  /** Makes a range of the target read as zeros: a zero write where the target has one, else written zeros. */
  private async zero(guestOffset: number, length: number): Promise<void> {
    const writeZeroes = this.options.writeZeroes;
    if (!writeZeroes) return this.write(guestOffset, this.zeroBuffer!.subarray(0, length));
    await this.options.limit?.take(length);
    await writeZeroes(guestOffset - this.range.sourceOffset, length);
  }

  /** Writes overlap, up to WRITES_IN_FLIGHT of them (the target takes writes in any order). */
  private async write(guestOffset: number, bytes: Uint8Array): Promise<void> {
    await this.options.limit?.take(bytes.length);
    await this.writeSlots.take();
    try {
      await this.target.write!(guestOffset - this.range.sourceOffset, bytes);
      this.stats.bytesWritten += bytes.length;
    } finally {
      this.writeSlots.give();
    }
  }
}

/**
 * Writes in flight at once. A write waits on the pool for each step, so one at
 * a time leaves the disk idle between them; more than this only queue on the
 * file's inode lock. Measured on a 2-core VM, 1 GiB of qcow2 data to raw:
 * 0.53-0.69 s one at a time, 0.40-0.42 s with 2, 0.37-0.39 s with 4, 0.40-0.47 s with 8.
 */
export const WRITES_IN_FLIGHT = 4;

/**
 * Turns block status into jobs of at most `ioSize` bytes, cut at multiples of
 * `ioSize` so requests stay aligned. Zero runs become jobs only when zeros must
 * be written; otherwise they are skipped at once (and counted as progress), as
 * are runs to be left alone.
 */
async function* copyJobs(
  source: Image,
  range: { start: number; end: number; leave: LeaveTest | undefined },
  ioSize: number,
  writeZeros: boolean,
  skip: (bytes: number) => void,
): AsyncGenerator<CopyJob> {
  for await (const run of walkRuns(source, range.start, range.end, range.leave)) {
    if (run.left || (run.zero && !writeZeros)) {
      skip(run.length);
      continue;
    }
    const runEnd = run.start + run.length;
    for (let offset = run.start; offset < runEnd; ) {
      const next = Math.min(runEnd, (Math.floor(offset / ioSize) + 1) * ioSize);
      yield { offset, length: next - offset, zero: run.zero };
      offset = next;
    }
  }
}

/**
 * Runs `handle` over `jobs` with at most `width` in flight. The first failure
 * stops the others from taking new jobs and is rethrown once all have settled,
 * so no write is still pending when the caller closes the target.
 */
export async function runPool<T>(jobs: AsyncIterator<T>, width: number, handle: (job: T) => Promise<void>): Promise<void> {
  let failed = false;
  const worker = async () => {
    while (!failed) {
      const next = await jobs.next();
      if (next.done) return;
      try {
        await handle(next.value);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await settleAll(Array.from({ length: width }, worker));
}
