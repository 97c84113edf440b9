/**
 * `dd`: copy a block range of an image into a new raw (or qcow2) file, with qemu-img dd's
 * arithmetic. qemu-img dd reads from skip*bs up to min(count*bs, size): `count`
 * bounds the end of the input rather than the number of blocks copied once
 * `skip` is given, and we keep that so outputs match byte for byte.
 */

import type { BlockDevice } from '../core/device.js';
import { IoError, UsageError } from '../core/errors.js';
import type { Image, ImageHost } from '../core/image.js';
import { openQcow2 } from '../../formats/qcow2/index.js';
import { createImage } from './create.js';
import { portableByteTests, type ByteTests } from './bytes-accel.js';
import { copyImage, type CopyStats } from './copy.js';
import { DEFAULT_IO_SIZE, DEFAULT_PARALLEL, DEFAULT_SPARSE_SIZE, rawOutputSize } from './convert.js';

/** qemu-img dd's default block size. */
export const DD_DEFAULT_BLOCK_SIZE = 512;
/** qemu-img dd takes bs as a C int. */
export const DD_MAX_BLOCK_SIZE = 2 ** 31 - 1;

/** The numeric operands of dd. */
export interface DdOperands {
  /** bs=: bytes per block. */
  blockSize?: number;
  /** count=: blocks. */
  count?: number;
  /** skip=: blocks skipped at the start of the input. */
  skip?: number;
}

/** The byte range dd copies and the size of what it writes. */
export interface DdPlan {
  start: number;
  end: number;
  outputSize: number;
  /** skip points past the end of the input: qemu-img says so and writes an empty file. */
  skipPastEnd: boolean;
}

/** Works out dd's range for an input of `sourceSize` bytes (qemu sees it in whole sectors). */
export function planDd(sourceSize: number, operands: DdOperands): DdPlan {
  const blockSize = operands.blockSize ?? DD_DEFAULT_BLOCK_SIZE;
  if (!Number.isSafeInteger(blockSize) || blockSize < 1 || blockSize > DD_MAX_BLOCK_SIZE) {
    throw new UsageError(`Invalid bs specified. Must be between 1 and ${DD_MAX_BLOCK_SIZE}.`);
  }
  const visibleSize = rawOutputSize(sourceSize);
  const countBytes = operands.count === undefined ? Infinity : operands.count * blockSize;
  const end = Math.min(visibleSize, countBytes);
  const start = (operands.skip ?? 0) * blockSize;
  if (!Number.isSafeInteger(start) || start > end) return { start: end, end, outputSize: 0, skipPastEnd: true };
  return { start, end, outputSize: end - start, skipPastEnd: false };
}

/** Options of `dd`. */
export interface DdOptions {
  tests?: ByteTests;
}

/** What dd did. */
export interface DdResult extends CopyStats, DdPlan {}

/**
 * Copies dd's range of `source` into a new qcow2 image on the empty `device`,
 * as qemu-img dd -O qcow2 writes it: block after block in guest order, zeros
 * included, so every cluster of the output is allocated. Closes the device.
 */
export async function ddToQcow2(source: Image, device: BlockDevice, operands: DdOperands, host: ImageHost, options: DdOptions = {}): Promise<DdResult> {
  const plan = planDd(source.size, operands);
  await createImage(device, { format: 'qcow2', size: plan.outputSize, options: new Map() });
  const target = await openQcow2(device, { host, writable: true, noBacking: true });
  try {
    const stats = await copyImage(
      source,
      target,
      { sparseSize: 0, targetIsZero: false, parallel: 1, ioSize: DEFAULT_IO_SIZE, tests: options.tests ?? portableByteTests },
      { sourceOffset: plan.start, length: plan.outputSize },
    );
    return { ...plan, ...stats };
  } finally {
    await target.close();
  }
}

/** Copies dd's range of `source` into the new raw `target` (sized first, written sparsely). */
export async function ddToRaw(source: Image, target: BlockDevice, operands: DdOperands, options: DdOptions = {}): Promise<DdResult> {
  const plan = planDd(source.size, operands);
  if (!target.truncate) throw new IoError(`${target.name} cannot be resized`);
  // Only when not empty already: on ext4 a truncation to zero makes the final close flush the output.
  if (target.size > 0) await target.truncate(0);
  await target.truncate(rawOutputSize(plan.outputSize));
  // Bytes past the source's end (its last partial sector) read as zeros: the target already holds them.
  const readable = Math.max(0, Math.min(plan.end, source.size) - plan.start);
  const stats = await copyImage(
    source,
    target,
    {
      sparseSize: DEFAULT_SPARSE_SIZE,
      targetIsZero: true,
      parallel: DEFAULT_PARALLEL,
      ioSize: DEFAULT_IO_SIZE,
      tests: options.tests ?? portableByteTests,
    },
    { sourceOffset: plan.start, length: readable },
  );
  return { ...plan, ...stats };
}
