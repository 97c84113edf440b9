/**
 * The copy pipeline behind convert and dd: driven by block status, several
 * requests in flight, large I/O units, zero detection, and a bounded window of
 * buffers. Raw targets accept writes in any order, so requests complete as they may.
 */

import type { BlockDevice } from '../core/device.js';
import { IoError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { nonZeroRuns, type ByteTests } from './bytes-accel.js';
import { walkRuns } from './extents.js';
import type { ProgressCallback } from './progress.js';


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

/**
 * Copies `length` guest bytes of `source` from `sourceOffset` to the target at 0.
 * Unallocated and zero runs are never read; with a zeroed target they are not written either.
 */
export async function copyImage(
  source: Image,
  target: BlockDevice,
  options: CopyOptions,
  range: { sourceOffset: number; length: number } = { sourceOffset: 0, length: source.size },
): Promise<CopyStats> {
  if (!target.write) throw new IoError(`${target.name} cannot be written`);
  const stats: CopyStats = { bytesRead: 0, bytesWritten: 0 };
  const writeZeros = options.sparseSize === 0 || !options.targetIsZero;
  const zeroBuffer = writeZeros ? new Uint8Array(options.ioSize) : undefined;
  let done = 0;
  const advance = (bytes: number) => {
    done += bytes;
    options.onProgress?.(done, range.length);
  };
  options.onProgress?.(0, range.length);

  const write = async (at: number, bytes: Uint8Array) => {
    await target.write!(at - range.sourceOffset, bytes);
    stats.bytesWritten += bytes.length;
  };
  const copyBytes = async (job: CopyJob, bytes: Uint8Array) => {
    stats.bytesRead += bytes.length;
    if (writeZeros) return write(job.offset, bytes);
    for (const [from, to] of nonZeroRuns(bytes, job.offset, options.sparseSize, options.tests)) {
      await write(job.offset + from, bytes.subarray(from, to));
    }
  };
  // One buffer per request in flight, reused: no allocation (and no page faults) per request.
  const buffers: Uint8Array[] = [];
  const handle = async (job: CopyJob) => {
    if (job.zero) {
      await write(job.offset, zeroBuffer!.subarray(0, job.length));
    } else if (source.readInto) {
      const buffer = buffers.pop() ?? new Uint8Array(options.ioSize);
      try {
        const bytes = buffer.subarray(0, job.length);
        await source.readInto(job.offset, bytes);
        await copyBytes(job, bytes);
      } finally {
        buffers.push(buffer);
      }
    } else {
      await copyBytes(job, await source.read(job.offset, job.length));
    }
    advance(job.length);
  };
  const jobs = copyJobs(source, range.sourceOffset, range.sourceOffset + range.length, options.ioSize, writeZeros, advance);
  await runPool(jobs, options.parallel, handle);
  return stats;
}

/**
 * Turns block status into jobs of at most `ioSize` bytes, cut at multiples of
 * `ioSize` so requests stay aligned. Zero runs become jobs only when zeros must
 * be written; otherwise they are skipped at once (and counted as progress).
 */
async function* copyJobs(
  source: Image,
  start: number,
  end: number,
  ioSize: number,
  writeZeros: boolean,
  skip: (bytes: number) => void,
): AsyncGenerator<CopyJob> {
  for await (const run of walkRuns(source, start, end)) {
    if (run.zero && !writeZeros) {
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
  const results = await Promise.allSettled(Array.from({ length: width }, worker));
  const rejected = results.find((result): result is PromiseRejectedResult => result.status === 'rejected');
  if (rejected) throw rejected.reason;
}
