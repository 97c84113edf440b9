/** Sends transmission replies, simple or structured as negotiated. */

import { PlatterError } from '../core/errors.js';
import type { Extent } from '../core/image.js';
import { ChunkFlag, Command, CommandFlag, NbdErrno } from './constants.js';
import type { NbdExport } from './export.js';
import {
  encodeBlockStatus,
  encodeDoneChunk,
  encodeErrorChunk,
  encodeOffsetDataHead,
  encodeOffsetHole,
  encodeSimpleReply,
  type StatusRun,
} from './replies.js';
import type { NbdDuplex } from './stream.js';
import type { NbdRequest } from './transmission.js';

/** The wire errno for an error thrown while serving a command. */
export function errnoFor(error: unknown, command: number): number {
  if (!(error instanceof PlatterError)) return NbdErrno.EIO;
  switch (error.code) {
    case 'EREADONLY':
      return NbdErrno.EPERM;
    case 'ERANGE':
      return command === Command.READ || command === Command.BLOCK_STATUS ? NbdErrno.EINVAL : NbdErrno.ENOSPC;
    case 'EUNSUPPORTED':
      return NbdErrno.ENOTSUP;
    default:
      return NbdErrno.EIO;
  }
}

/** One piece of a structured read: stored bytes to send, or a run that reads as zeros. */
interface ReadPiece {
  offset: number;
  length: number;
  hole: boolean;
}

/**
 * Splits a read by block status so zero and unallocated runs go out as holes,
 * never read; neighbouring data runs are read in one go.
 */
export function readPieces(extents: readonly Extent[], offset: number, length: number): ReadPiece[] {
  const pieces: ReadPiece[] = [];
  let at = offset;
  const end = offset + length;
  for (const extent of [...extents].sort((a, b) => a.start - b.start)) {
    const start = Math.max(extent.start, at);
    const stop = Math.min(extent.start + extent.length, end);
    if (stop <= start || start !== at) continue;
    const hole = extent.kind !== 'data';
    const last = pieces[pieces.length - 1];
    if (last && last.hole === hole) last.length += stop - start;
    else pieces.push({ offset: start, length: stop - start, hole });
    at = stop;
  }
  // Whatever block status left undescribed is read as data.
  if (at < end) pieces.push({ offset: at, length: end - at, hole: false });
  return pieces;
}

/**
 * Writes replies for one connection. Replies to requests served at once may
 * interleave, but never inside a message: a header and its payload are queued
 * in one go, with no wait between them.
 */
export class Replier {
  constructor(private readonly io: NbdDuplex, private readonly structured: boolean) {}

  /** Queues a header and its payload back to back. */
  private async send(head: Uint8Array, payload: Uint8Array): Promise<void> {
    const sent = [this.io.write(head)];
    if (payload.length > 0) sent.push(this.io.write(payload));
    await Promise.all(sent);
  }

  /** Success with no data. */
  async ok(cookie: bigint): Promise<void> {
    await this.io.write(this.structured ? encodeDoneChunk(cookie) : encodeSimpleReply(cookie, 0));
  }

  /** Failure with an errno (the message travels only in structured replies). */
  async error(cookie: bigint, errno: number, message: string): Promise<void> {
    await this.io.write(this.structured ? encodeErrorChunk(cookie, errno, message) : encodeSimpleReply(cookie, errno));
  }

  /** Serves a READ already checked to be in range and under the size limit. */
  async read(exported: NbdExport, request: NbdRequest): Promise<void> {
    const { cookie, offset, length } = request;
    // A data chunk must carry at least one byte: an empty read is a plain success.
    if (this.structured && length === 0) return this.ok(cookie);
    if (!this.structured || (request.flags & CommandFlag.DF) !== 0) {
      // One piece: read everything first, so an error can still be reported.
      const data = await exported.read(offset, length);
      if (!this.structured) return this.send(encodeSimpleReply(cookie, 0), data);
      return this.send(encodeOffsetDataHead(cookie, ChunkFlag.DONE, offset, data.length), data);
    }
    const pieces = readPieces(await exported.blockStatus(offset, length), offset, length);
    for (const [index, piece] of pieces.entries()) {
      const flags = index === pieces.length - 1 ? ChunkFlag.DONE : 0;
      if (piece.hole) {
        await this.io.write(encodeOffsetHole(cookie, flags, piece.offset, piece.length));
        continue;
      }
      let data: Uint8Array;
      try {
        data = await exported.read(piece.offset, piece.length);
      } catch (error) {
        // Chunks already sent stand; the error chunk ends the reply.
        const message = error instanceof Error ? error.message : String(error);
        return this.error(cookie, errnoFor(error, Command.READ), message);
      }
      await this.send(encodeOffsetDataHead(cookie, flags, piece.offset, data.length), data);
    }
  }

  /** A base:allocation reply. */
  /** One BLOCK_STATUS chunk per context, the last one ending the reply. */
  async blockStatus(cookie: bigint, chunks: readonly { id: number; runs: readonly StatusRun[] }[]): Promise<void> {
    for (const [index, chunk] of chunks.entries()) {
      const flags = index === chunks.length - 1 ? ChunkFlag.DONE : 0;
      await this.io.write(encodeBlockStatus(cookie, flags, chunk.id, chunk.runs));
    }
  }
}

