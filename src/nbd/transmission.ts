/**
 * The transmission phase: read a request, check it, run it on the export,
 * reply; until NBD_CMD_DISC or the client hangs up. Reads and block status
 * queries are served several at a time (clients such as qemu and nbdcopy keep
 * many in flight), their replies going out as each is ready, which the
 * protocol allows; a request that changes the export (or flushes it) waits
 * for them and runs alone, so it never overlaps a read. Memory is bounded by
 * MAX_CONCURRENT_READ_BYTES.
 */

import { ProtocolError } from '../core/errors.js';
import { MAX_SAFE_OFFSET } from '../core/limits.js';
import { Command, CommandFlag, NbdErrno, NBD_REQUEST_MAGIC } from './constants.js';
import type { Session } from './handshake.js';
import { InFlight } from '../core/in-flight.js';
import { CACHE_CHUNK_BYTES, MAX_CONCURRENT_READ_BYTES, MAX_CONCURRENT_REQUESTS, MAX_REQUEST_BYTES } from './limits.js';
import { Replier, errnoFor } from './reply-sender.js';
import type { NbdDuplex } from './stream.js';
import { Request } from './structs.js';

/** One decoded request, with its offset as a number (or Infinity when past 2^53). */
export interface NbdRequest {
  type: number;
  flags: number;
  cookie: bigint;
  offset: number;
  length: number;
}

/**
 * Flags each command accepts beside FUA, which the protocol has servers accept
 * (and ignore where it means nothing) on every command; any other bit is
 * refused with EINVAL.
 */
const COMMAND_FLAGS: Record<number, number> = {
  [Command.READ]: CommandFlag.DF,
  [Command.WRITE]: 0,
  [Command.DISC]: 0,
  [Command.FLUSH]: 0,
  [Command.TRIM]: 0,
  [Command.WRITE_ZEROES]: CommandFlag.NO_HOLE | CommandFlag.FAST_ZERO,
  [Command.BLOCK_STATUS]: CommandFlag.REQ_ONE,
  [Command.CACHE]: 0,
};

/** The flags a request may carry; undefined for an unknown command. DF only where reads can come in chunks. */
function allowedFlags(type: number, structuredReplies: boolean): number | undefined {
  const own = COMMAND_FLAGS[type];
  if (own === undefined) return undefined;
  const usable = structuredReplies ? own : own & ~CommandFlag.DF;
  return usable | CommandFlag.FUA;
}

/** Reads the next request; null when the client hung up between requests. */
async function readRequest(io: NbdDuplex): Promise<NbdRequest | null> {
  const bytes = await io.readExact(Request.size);
  if (!bytes) return null;
  const raw = Request.decode(bytes);
  if (raw.magic !== NBD_REQUEST_MAGIC) {
    // Nothing after a bad magic can be trusted to be in step: hang up.
    throw new ProtocolError(`bad request magic 0x${raw.magic.toString(16)}`);
  }
  const offset = raw.offset > BigInt(MAX_SAFE_OFFSET) ? Infinity : Number(raw.offset);
  return { type: raw.type, flags: raw.flags, cookie: raw.cookie, offset, length: raw.length };
}

/** True when [offset, offset+length) lies inside an export of `size` bytes. */
function inRange(request: NbdRequest, size: number): boolean {
  return request.offset <= size && request.length <= size - request.offset;
}

/** Requests that only look at the export, and so may be served alongside each other. */
function readsOnly(request: NbdRequest): boolean {
  return request.type === Command.READ || request.type === Command.BLOCK_STATUS || request.type === Command.CACHE;
}

/** Serves requests until the client disconnects; what is in flight then is finished first. */
export async function transmit(io: NbdDuplex, session: Session): Promise<void> {
  const replier = new Replier(io, session.structuredReplies);
  const inFlight = new InFlight(MAX_CONCURRENT_REQUESTS, MAX_CONCURRENT_READ_BYTES);
  try {
    for (;;) {
      const request = await readRequest(io);
      if (!request || request.type === Command.DISC) return;
      if (readsOnly(request)) {
        // A read over the size limit is refused without reading: it holds nothing.
        const bytes = request.type === Command.READ && request.length <= MAX_REQUEST_BYTES ? request.length : 0;
        await inFlight.room(bytes);
        inFlight.start(bytes, () => serveRequest(io, session, replier, request));
      } else {
        await inFlight.drain();
        await serveRequest(io, session, replier, request);
      }
    }
  } finally {
    await inFlight.drain();
  }
}

async function serveRequest(io: NbdDuplex, session: Session, replier: Replier, request: NbdRequest): Promise<void> {
  // A WRITE's payload must be consumed before anything else, even to refuse it.
  const payload = request.type === Command.WRITE ? await readPayload(io, request) : undefined;
  const allowed = allowedFlags(request.type, session.structuredReplies);
  if (allowed === undefined) return replier.error(request.cookie, NbdErrno.EINVAL, `command ${request.type} is not supported`);
  if ((request.flags & ~allowed) !== 0) {
    return replier.error(request.cookie, NbdErrno.EINVAL, `flags 0x${request.flags.toString(16)} are not valid here`);
  }
  try {
    await runCommand(session, replier, request, payload);
  } catch (error) {
    await replier.error(request.cookie, errnoFor(error, request.type), error instanceof Error ? error.message : String(error));
  }
}

async function readPayload(io: NbdDuplex, request: NbdRequest): Promise<Uint8Array> {
  if (request.length > MAX_REQUEST_BYTES) {
    // The spec lets a server drop a client that sends more than the advertised maximum.
    throw new ProtocolError(`write of ${request.length} bytes exceeds the ${MAX_REQUEST_BYTES}-byte maximum`);
  }
  const payload = request.length === 0 ? new Uint8Array(0) : await io.readExact(request.length);
  if (!payload) throw new ProtocolError(`connection closed inside a ${request.length}-byte write`);
  return payload;
}

async function runCommand(session: Session, replier: Replier, request: NbdRequest, payload?: Uint8Array): Promise<void> {
  const exported = session.export;
  const { cookie, offset, length } = request;
  const fua = (request.flags & CommandFlag.FUA) !== 0;
  switch (request.type) {
    case Command.READ:
      if (length > MAX_REQUEST_BYTES) {
        const errno = session.structuredReplies ? NbdErrno.EOVERFLOW : NbdErrno.EINVAL;
        return replier.error(cookie, errno, `read of ${length} bytes exceeds the ${MAX_REQUEST_BYTES}-byte maximum`);
      }
      if (!inRange(request, exported.size)) return replier.error(cookie, NbdErrno.EINVAL, 'read past the end of the export');
      return replier.read(exported, request);
    case Command.WRITE:
      return mutate(session, replier, request, fua, () => exported.write(offset, payload!));
    case Command.WRITE_ZEROES:
      // With FAST_ZERO, zeroing that would mean writing zeros fails (ENOTSUP) and changes nothing.
      return mutate(session, replier, request, fua, () =>
        exported.writeZeroes(offset, length, {
          noHole: (request.flags & CommandFlag.NO_HOLE) !== 0,
          fast: (request.flags & CommandFlag.FAST_ZERO) !== 0,
        }),
      );
    case Command.TRIM:
      return mutate(session, replier, request, fua, () => exported.trim(offset, length));
    case Command.FLUSH:
      await exported.flush();
      return replier.ok(cookie);
    case Command.BLOCK_STATUS:
      return blockStatus(session, replier, request);
    case Command.CACHE:
      if (!inRange(request, exported.size)) return replier.error(cookie, NbdErrno.EINVAL, 'cache request past the end of the export');
      // A hint to have the range ready: it is read (a chunk at a time) so later reads find it cached.
      for (let done = 0; done < length; done += CACHE_CHUNK_BYTES) await exported.read(offset + done, Math.min(CACHE_CHUNK_BYTES, length - done));
      return replier.ok(cookie);
    default:
      return replier.error(cookie, NbdErrno.EINVAL, `command ${request.type} is not supported`);
  }
}

/** Checks and runs a command that changes the export; FUA flushes before replying. */
async function mutate(session: Session, replier: Replier, request: NbdRequest, fua: boolean, change: () => Promise<void>) {
  const exported = session.export;
  if (!exported.writable) return replier.error(request.cookie, NbdErrno.EPERM, 'the export is read-only');
  if (!inRange(request, exported.size)) return replier.error(request.cookie, NbdErrno.ENOSPC, 'write past the end of the export');
  await change();
  if (fua) await exported.flush();
  return replier.ok(request.cookie);
}

async function blockStatus(session: Session, replier: Replier, request: NbdRequest): Promise<void> {
  const { cookie } = request;
  if (session.contexts.length === 0) {
    return replier.error(cookie, NbdErrno.EINVAL, 'no metadata context was selected');
  }
  if (request.length === 0 || !inRange(request, session.export.size)) {
    return replier.error(cookie, NbdErrno.EINVAL, 'block status range is empty or past the end');
  }
  const only = (request.flags & CommandFlag.REQ_ONE) !== 0;
  // Every context is answered before the first chunk goes out: an error then is the whole reply.
  const chunks = [];
  for (const context of session.contexts) {
    const runs = await context.status(request.offset, request.length);
    // An image that describes nothing at the offset is still readable: flags 0 call it data, which is never wrong.
    if (runs.length === 0) runs.push({ length: request.length, flags: 0 });
    chunks.push({ id: context.id, runs: only ? runs.slice(0, 1) : runs });
  }
  return replier.blockStatus(cookie, chunks);
}
