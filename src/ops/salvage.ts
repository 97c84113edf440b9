/**
 * convert --salvage: a damaged image (a compressed cluster that no longer
 * decodes, a cluster that cannot be read) is copied all the same, with zeros
 * where its bytes cannot be read, as qemu-img convert --salvage does. A read
 * that fails is taken again in smaller pieces, down to 512-byte sectors, so
 * only the sectors that really fail are lost; each run of them is reported.
 * Where even the mapping cannot be read, the range reads as zeros.
 */

import { readFully } from '../core/device.js';
import { PlatterError } from '../core/errors.js';
import type { Extent, Image } from '../core/image.js';
import { SECTOR_SIZE } from './convert.js';

/** Where a failed read is taken again first: a cluster at most, so a chunk loses no more than its bad clusters. */
const RETRY_PIECE = 64 * 1024;

/** A run of guest bytes that could not be read, and why. */
export interface Loss {
  offset: number;
  length: number;
  reason: string;
}

/**
 * `source`, but reads never fail on damaged data: what cannot be read reads
 * as zeros and is reported to `onLoss`, one call per run of sectors lost for
 * the same reason. Errors that are not about the image (a bug) still throw.
 */
export function salvaging(source: Image, onLoss: (loss: Loss) => void): Image {
  const readInto = async (offset: number, target: Uint8Array): Promise<void> => {
    try {
      await readFully(source, offset, target);
    } catch (error) {
      if (!(error instanceof PlatterError)) throw error;
      const losses: Loss[] = [];
      await salvagePieces(source, offset, target, RETRY_PIECE, losses);
      for (const loss of losses) onLoss(loss);
    }
  };
  const blockStatus = async (offset: number, length: number): Promise<Extent[]> => {
    try {
      return await source.blockStatus(offset, length);
    } catch (error) {
      if (!(error instanceof PlatterError)) throw error;
      const losses: Loss[] = [];
      const extents = await salvageStatus(source, offset, length, losses);
      for (const loss of losses) onLoss(loss);
      return extents;
    }
  };
  return new Proxy(source, {
    get(target, key) {
      if (key === 'readInto') return readInto;
      if (key === 'blockStatus') return blockStatus;
      if (key === 'read') {
        return async (offset: number, length: number) => {
          const bytes = new Uint8Array(length);
          await readInto(offset, bytes);
          return bytes;
        };
      }
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

/**
 * Block status of [offset, offset+length) asked in RETRY_PIECE pieces; a piece
 * whose mapping cannot be read (a damaged L2 table) reads as zeros and is
 * lost: reading it could only fail the same way.
 */
async function salvageStatus(source: Image, offset: number, length: number, losses: Loss[]): Promise<Extent[]> {
  const extents: Extent[] = [];
  const end = offset + length;
  for (let at = offset; at < end; ) {
    const next = Math.min(end, at + RETRY_PIECE - (at % RETRY_PIECE));
    try {
      extents.push(...(await source.blockStatus(at, next - at)));
    } catch (error) {
      if (!(error instanceof PlatterError)) throw error;
      extents.push({ start: at, length: next - at, kind: 'zero', depth: 0 });
      record(losses, at, next - at, error.message);
    }
    at = next;
  }
  return extents;
}

/** Reads `target` in aligned pieces of `piece` bytes; a piece that fails is read again in sectors (the smallest piece, as qemu-img salvages), or zeroed. */
async function salvagePieces(source: Image, offset: number, target: Uint8Array, piece: number, losses: Loss[]): Promise<void> {
  for (let at = 0; at < target.length; ) {
    const end = Math.min(target.length, at + piece - ((offset + at) % piece));
    const part = target.subarray(at, end);
    try {
      await readFully(source, offset + at, part);
    } catch (error) {
      if (!(error instanceof PlatterError)) throw error;
      if (piece > SECTOR_SIZE) await salvagePieces(source, offset + at, part, SECTOR_SIZE, losses);
      else lose(losses, offset + at, part, error.message);
    }
    at = end;
  }
}

/** Zeros a sector that cannot be read, and records it. */
function lose(losses: Loss[], offset: number, part: Uint8Array, reason: string): void {
  part.fill(0);
  record(losses, offset, part.length, reason);
}

/** Records lost bytes, joined to the run before them when that was lost for the same reason. */
function record(losses: Loss[], offset: number, length: number, reason: string): void {
  const last = losses[losses.length - 1];
  if (last && last.offset + last.length === offset && last.reason === reason) last.length += length;
  else losses.push({ offset, length, reason });
}
