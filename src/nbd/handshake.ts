/**
 * The fixed newstyle handshake: greeting, client flags, then options until the
 * client picks an export (NBD_OPT_GO / NBD_OPT_EXPORT_NAME) or leaves.
 */

import { ProtocolError } from '../core/errors.js';
import {
  BASE_ALLOCATION,
  BASE_ALLOCATION_ID,
  BASE_NAMESPACE,
  ClientFlag,
  DIRTY_BITMAP_PREFIX,
  HandshakeFlag,
  InfoType,
  NBD_IHAVEOPT,
  Option,
  OptionReply,
  QEMU_NAMESPACE,
  TransmissionFlag,
} from './constants.js';
import type { NbdExport } from './export.js';
import { MAX_HANDSHAKE_OPTIONS, MAX_OPTION_BYTES, MAX_REQUEST_BYTES, PREFERRED_BLOCK_SIZE, QUOTED_NAME_CHARS } from './limits.js';
import { decodeText, parseInfoRequest, parseMetaContextRequest, type MetaContextRequest } from './options.js';
import {
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoText,
  encodeMetaContext,
  encodeOptionReply,
  encodeServerEntry,
  encodeText,
} from './replies.js';
import { allocationRuns, type MetaContext } from './status.js';
import type { NbdDuplex } from './stream.js';
import { ExportNameReply, OptionHeader } from './structs.js';

/** The exports a server offers. */
export interface ExportCatalog {
  /** The export for a name; '' asks for the default export. */
  find(name: string): NbdExport | undefined;
  list(): NbdExport[];
}

/** A metadata context a client selected, with the id its replies carry. */
export interface SelectedContext extends MetaContext {
  readonly id: number;
}

/** What the handshake settled: the export and the features agreed on. */
export interface Session {
  export: NbdExport;
  structuredReplies: boolean;
  /** The metadata contexts the client selected for this export, in the order replies give them (none: no block status). */
  contexts: SelectedContext[];
  transmissionFlags: number;
}

/** Negotiation state between options. */
interface HandshakeState {
  catalog: ExportCatalog;
  noZeroes: boolean;
  /** The client speaks fixed newstyle; without it only NBD_OPT_EXPORT_NAME has a defined outcome. */
  fixedNewstyle: boolean;
  structuredReplies: boolean;
  /** What the last SET_META_CONTEXT selected: the export it named, and the contexts' ids. */
  selection: { export: NbdExport; ids: number[] } | undefined;
}

/** The transmission flags for an export, given the features agreed on. */
export function transmissionFlagsFor(exported: NbdExport, structuredReplies: boolean): number {
  let flags = TransmissionFlag.HAS_FLAGS | TransmissionFlag.SEND_FLUSH | TransmissionFlag.SEND_FUA | TransmissionFlag.SEND_CACHE;
  // As qemu-nbd: a read-only export offers no commands that would only be refused.
  if (exported.writable) flags |= TransmissionFlag.SEND_TRIM | TransmissionFlag.SEND_WRITE_ZEROES | TransmissionFlag.SEND_FAST_ZERO;
  else flags |= TransmissionFlag.READ_ONLY;
  // As qemu-nbd: offered when clients are served side by side (--shared above 1).
  if (exported.multiConn) flags |= TransmissionFlag.CAN_MULTI_CONN;
  // DF only means something when reads may be split into chunks.
  if (structuredReplies) flags |= TransmissionFlag.SEND_DF;
  return flags;
}

/**
 * Runs the handshake. Resolves the session when the client picked an export,
 * or null when it aborted or hung up; throws ProtocolError on a broken client.
 */
export async function negotiate(io: NbdDuplex, catalog: ExportCatalog): Promise<Session | null> {
  await io.write(encodeGreeting(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES));
  const flagBytes = await io.readExact(4);
  if (!flagBytes) return null;
  const clientFlags = new DataView(flagBytes.buffer, flagBytes.byteOffset, 4).getUint32(0, false);
  if ((clientFlags & ~(ClientFlag.FIXED_NEWSTYLE | ClientFlag.NO_ZEROES)) !== 0) {
    throw new ProtocolError(`client asked for unknown handshake flags 0x${clientFlags.toString(16)}`);
  }
  const state: HandshakeState = {
    catalog,
    noZeroes: (clientFlags & ClientFlag.NO_ZEROES) !== 0,
    fixedNewstyle: (clientFlags & ClientFlag.FIXED_NEWSTYLE) !== 0,
    structuredReplies: false,
    selection: undefined,
  };
  for (let count = 0; count < MAX_HANDSHAKE_OPTIONS; count++) {
    const headerBytes = await io.readExact(OptionHeader.size);
    if (!headerBytes) return null;
    const header = OptionHeader.decode(headerBytes);
    if (header.magic !== NBD_IHAVEOPT) throw new ProtocolError(`bad option magic 0x${header.magic.toString(16)}`);
    const outcome = await receiveOption(io, state, header.option, header.length);
    if (outcome !== 'continue') return outcome;
  }
  throw new ProtocolError(`handshake went on for more than ${MAX_HANDSHAKE_OPTIONS} options`);
}

type Outcome = Session | null | 'continue';

async function receiveOption(io: NbdDuplex, state: HandshakeState, option: number, length: number): Promise<Outcome> {
  // Plain newstyle has no error replies to send: any other option ends the connection, as with qemu-nbd.
  if (!state.fixedNewstyle && option !== Option.EXPORT_NAME) {
    throw new ProtocolError(`option ${option} from a client that does not speak fixed newstyle`);
  }
  if (length > MAX_OPTION_BYTES) {
    // EXPORT_NAME has no error reply: all the server can do is hang up.
    if (option === Option.EXPORT_NAME) throw new ProtocolError(`NBD_OPT_EXPORT_NAME of ${length} bytes`);
    await skip(io, length);
    await reply(io, option, OptionReply.ERR_TOO_BIG, `option data of ${length} bytes exceeds ${MAX_OPTION_BYTES}`);
    return 'continue';
  }
  const data = length === 0 ? new Uint8Array(0) : await io.readExact(length);
  if (!data) throw new ProtocolError(`connection closed inside option ${option}`);
  try {
    return await handleOption(io, state, option, data);
  } catch (error) {
    // A malformed payload of an option that has replies: say so and carry on.
    if (!(error instanceof ProtocolError) || option === Option.EXPORT_NAME) throw error;
    await reply(io, option, OptionReply.ERR_INVALID, error.message);
    return 'continue';
  }
}

async function handleOption(io: NbdDuplex, state: HandshakeState, option: number, data: Uint8Array): Promise<Outcome> {
  switch (option) {
    case Option.EXPORT_NAME:
      return exportName(io, state, decodeText(data, 'export name'));
    case Option.ABORT:
      await reply(io, option, OptionReply.ACK).catch(() => {});
      return null;
    case Option.LIST:
      return list(io, state, data);
    case Option.STRUCTURED_REPLY:
      if (data.length !== 0) return replyContinue(io, option, OptionReply.ERR_INVALID, 'NBD_OPT_STRUCTURED_REPLY takes no data');
      if (state.structuredReplies) return replyContinue(io, option, OptionReply.ERR_INVALID, 'structured replies were already negotiated');
      state.structuredReplies = true;
      return replyContinue(io, option, OptionReply.ACK);
    case Option.INFO:
    case Option.GO:
      return infoOrGo(io, state, option, data);
    case Option.LIST_META_CONTEXT:
    case Option.SET_META_CONTEXT:
      return metaContext(io, state, option, parseMetaContextRequest(data));
    case Option.STARTTLS:
      // As qemu-nbd without TLS credentials: a known option this server will not do.
      return replyContinue(io, option, OptionReply.ERR_POLICY, 'TLS is not configured on this server');
    default:
      return replyContinue(io, option, OptionReply.ERR_UNSUP, `option ${option} is not supported`);
  }
}

async function exportName(io: NbdDuplex, state: HandshakeState, name: string): Promise<Session> {
  const exported = state.catalog.find(name);
  if (!exported) throw new ProtocolError(`client asked for unknown export '${name}'`);
  const session = startSession(state, exported);
  const head = ExportNameReply.encode({ size: BigInt(exported.size), transmissionFlags: session.transmissionFlags });
  // Old clients expect 124 reserved zero bytes; NO_ZEROES clients do not.
  const tail = state.noZeroes ? new Uint8Array(0) : new Uint8Array(124);
  await io.write(head);
  if (tail.length > 0) await io.write(tail);
  return session;
}

async function list(io: NbdDuplex, state: HandshakeState, data: Uint8Array): Promise<'continue'> {
  if (data.length !== 0) return replyContinue(io, Option.LIST, OptionReply.ERR_INVALID, 'NBD_OPT_LIST takes no data');
  for (const exported of state.catalog.list()) {
    await reply(io, Option.LIST, OptionReply.SERVER, encodeServerEntry(exported.name, exported.description));
  }
  return replyContinue(io, Option.LIST, OptionReply.ACK);
}

async function infoOrGo(io: NbdDuplex, state: HandshakeState, option: number, data: Uint8Array): Promise<Outcome> {
  const request = parseInfoRequest(data);
  const exported = state.catalog.find(request.exportName);
  if (!exported) return replyContinue(io, option, OptionReply.ERR_UNKNOWN, `no export named '${shortName(request.exportName)}'`);
  const structured = state.structuredReplies;
  await reply(io, option, OptionReply.INFO, encodeInfoExport(exported.size, transmissionFlagsFor(exported, structured)));
  if (request.infoTypes.includes(InfoType.NAME)) {
    await reply(io, option, OptionReply.INFO, encodeInfoText(InfoType.NAME, exported.name));
  }
  if (request.infoTypes.includes(InfoType.DESCRIPTION) && exported.description) {
    await reply(io, option, OptionReply.INFO, encodeInfoText(InfoType.DESCRIPTION, exported.description));
  }
  // The export's own minimum only where the client said it will keep to it (or only asks), as
  // qemu-nbd does; otherwise 1, which any client takes. The maximum is the request payload limit.
  const keepsToSizes = option === Option.INFO || request.infoTypes.includes(InfoType.BLOCK_SIZE);
  const minimum = keepsToSizes ? (exported.minimumBlockSize ?? 1) : 1;
  await reply(io, option, OptionReply.INFO, encodeInfoBlockSize(minimum, PREFERRED_BLOCK_SIZE, MAX_REQUEST_BYTES));
  await reply(io, option, OptionReply.ACK);
  return option === Option.GO ? startSession(state, exported) : 'continue';
}

/**
 * The metadata contexts an export offers, each with its id (its place in the
 * list, from 1): base:allocation, then its own (qemu:allocation-depth, then
 * dirty bitmaps), the order qemu-nbd lists them in.
 */
export function offeredContexts(exported: NbdExport): SelectedContext[] {
  const base: SelectedContext = {
    id: BASE_ALLOCATION_ID,
    name: BASE_ALLOCATION,
    status: async (offset, length) => allocationRuns(await exported.blockStatus(offset, length), offset, length),
  };
  const own = (exported.metaContexts ?? []).map((context, index) => ({ id: BASE_ALLOCATION_ID + 1 + index, name: context.name, status: (offset: number, length: number) => context.status(offset, length) }));
  return [base, ...own];
}

/** Queries that, when listing, name every context under them (as qemu-nbd takes them). */
const NAMESPACES = [BASE_NAMESPACE, QEMU_NAMESPACE, DIRTY_BITMAP_PREFIX];

/** True when a query names the context `name`: by its name, or (listing) by its namespace. */
function queryNames(query: string, name: string, listing: boolean): boolean {
  if (query === name) return true;
  return listing && NAMESPACES.includes(query) && name.startsWith(query);
}

/** The contexts a request names, in the order offered; listing with no query names all. */
function matchQueries(request: MetaContextRequest, offered: readonly SelectedContext[], listing: boolean): SelectedContext[] {
  if (listing && request.queries.length === 0) return [...offered];
  return offered.filter((context) => request.queries.some((query) => queryNames(query, context.name, listing)));
}

async function metaContext(io: NbdDuplex, state: HandshakeState, option: number, request: MetaContextRequest): Promise<'continue'> {
  const listing = option === Option.LIST_META_CONTEXT;
  if (!listing && !state.structuredReplies) {
    return replyContinue(io, option, OptionReply.ERR_INVALID, 'structured replies must be negotiated first');
  }
  const exported = state.catalog.find(request.exportName);
  if (!exported) return replyContinue(io, option, OptionReply.ERR_UNKNOWN, `no export named '${shortName(request.exportName)}'`);
  const selected = matchQueries(request, offeredContexts(exported), listing);
  for (const context of selected) {
    await reply(io, option, OptionReply.META_CONTEXT, encodeMetaContext(listing ? 0 : context.id, context.name));
  }
  // Each SET replaces the previous selection.
  if (!listing) state.selection = selected.length > 0 ? { export: exported, ids: selected.map((context) => context.id) } : undefined;
  return replyContinue(io, option, OptionReply.ACK);
}

/**
 * An export name as error messages quote it: names may be 4096 bytes, as long
 * as the whole message may be, so long ones are cut (at 80 characters, as
 * qemu-nbd cuts them).
 */
function shortName(name: string): string {
  return name.length < QUOTED_NAME_CHARS ? name : `${name.slice(0, QUOTED_NAME_CHARS)}...`;
}

function startSession(state: HandshakeState, exported: NbdExport): Session {
  return {
    export: exported,
    structuredReplies: state.structuredReplies,
    contexts: selectedContexts(state, exported),
    transmissionFlags: transmissionFlagsFor(exported, state.structuredReplies),
  };
}

/** The contexts selected for `exported`: those chosen for another export do not carry over. */
function selectedContexts(state: HandshakeState, exported: NbdExport): SelectedContext[] {
  const selection = state.selection;
  if (!state.structuredReplies || selection?.export !== exported) return [];
  return offeredContexts(exported).filter((context) => selection.ids.includes(context.id));
}

async function reply(io: NbdDuplex, option: number, replyType: number, data?: Uint8Array | string): Promise<void> {
  const bytes = typeof data === 'string' ? encodeText(data) : data;
  await io.write(encodeOptionReply(option, replyType, bytes));
}

async function replyContinue(io: NbdDuplex, option: number, replyType: number, data?: Uint8Array | string): Promise<'continue'> {
  await reply(io, option, replyType, data);
  return 'continue';
}

/** Reads and drops `length` bytes in bounded pieces. */
async function skip(io: NbdDuplex, length: number): Promise<void> {
  for (let left = length; left > 0; ) {
    const piece = Math.min(left, MAX_OPTION_BYTES);
    if (!(await io.readExact(piece))) throw new ProtocolError('connection closed inside an option');
    left -= piece;
  }
}
