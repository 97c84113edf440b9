/** Encoders for everything the server sends: pure functions from values to bytes. */

import { concatBytes } from '../core/bytes.js';
import {
  ChunkFlag,
  ChunkType,
  InfoType,
  NBD_IHAVEOPT,
  NBD_MAGIC,
  NBD_OPTION_REPLY_MAGIC,
  NBD_SIMPLE_REPLY_MAGIC,
  NBD_STRUCTURED_REPLY_MAGIC,
} from './constants.js';
import {
  ChunkHeader,
  ErrorChunk,
  InfoBlockSize,
  InfoExport,
  OffsetHole,
  OptionReplyHeader,
  ServerGreeting,
  SimpleReply,
  StatusDescriptor,
} from './structs.js';

const utf8 = new TextEncoder();

/** Encodes a string as UTF-8. */
export function encodeText(text: string): Uint8Array {
  return utf8.encode(text);
}

/** A u32 big-endian length prefix followed by the string. */
function lengthPrefixed(text: string): Uint8Array {
  const body = encodeText(text);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, body.length, false);
  out.set(body, 4);
  return out;
}

/** The newstyle greeting. */
export function encodeGreeting(handshakeFlags: number): Uint8Array {
  return ServerGreeting.encode({ nbdMagic: NBD_MAGIC, optionMagic: NBD_IHAVEOPT, handshakeFlags });
}

/** One option reply: header plus data. */
export function encodeOptionReply(option: number, replyType: number, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const header = OptionReplyHeader.encode({ magic: NBD_OPTION_REPLY_MAGIC, option, replyType, length: data.length });
  return concatBytes([header, data]);
}

/** NBD_REP_SERVER data: an export's name (and description, when it has one). */
export function encodeServerEntry(name: string, description?: string): Uint8Array {
  const parts = [lengthPrefixed(name)];
  if (description) parts.push(encodeText(description));
  return concatBytes(parts);
}

/** NBD_REP_META_CONTEXT data: the context id and its name. */
export function encodeMetaContext(contextId: number, name: string): Uint8Array {
  const body = encodeText(name);
  const out = new Uint8Array(4 + body.length);
  new DataView(out.buffer).setUint32(0, contextId, false);
  out.set(body, 4);
  return out;
}

/** NBD_INFO_EXPORT data. */
export function encodeInfoExport(size: number, transmissionFlags: number): Uint8Array {
  return InfoExport.encode({ infoType: InfoType.EXPORT, size: BigInt(size), transmissionFlags });
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION data. */
export function encodeInfoText(infoType: number, text: string): Uint8Array {
  const body = encodeText(text);
  const out = new Uint8Array(2 + body.length);
  new DataView(out.buffer).setUint16(0, infoType, false);
  out.set(body, 2);
  return out;
}

/** NBD_INFO_BLOCK_SIZE data. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Uint8Array {
  return InfoBlockSize.encode({ infoType: InfoType.BLOCK_SIZE, minimum, preferred, maximum });
}

/** A simple reply header (a successful READ's data follows it). */
export function encodeSimpleReply(cookie: bigint, error: number): Uint8Array {
  return SimpleReply.encode({ magic: NBD_SIMPLE_REPLY_MAGIC, error, cookie });
}

/** A structured reply chunk header for `length` bytes of payload. */
export function encodeChunkHeader(cookie: bigint, type: number, flags: number, length: number): Uint8Array {
  return ChunkHeader.encode({ magic: NBD_STRUCTURED_REPLY_MAGIC, flags, type, cookie, length });
}

/** A chunk of type NONE with DONE: success with nothing to say. */
export function encodeDoneChunk(cookie: bigint): Uint8Array {
  return encodeChunkHeader(cookie, ChunkType.NONE, ChunkFlag.DONE, 0);
}

/** NBD_REPLY_TYPE_ERROR with a message, always the final chunk. */
export function encodeErrorChunk(cookie: bigint, error: number, message: string): Uint8Array {
  // The message length field is 16 bits; keep well under it.
  const text = encodeText(message).subarray(0, 1024);
  const head = ErrorChunk.encode({ error, messageLength: text.length });
  const payload = concatBytes([head, text]);
  return concatBytes([encodeChunkHeader(cookie, ChunkType.ERROR, ChunkFlag.DONE, payload.length), payload]);
}

/** The header and offset of an OFFSET_DATA chunk; `dataLength` bytes of data follow. */
export function encodeOffsetDataHead(cookie: bigint, flags: number, offset: number, dataLength: number): Uint8Array {
  const out = new Uint8Array(ChunkHeader.size + 8);
  out.set(encodeChunkHeader(cookie, ChunkType.OFFSET_DATA, flags, 8 + dataLength));
  new DataView(out.buffer).setBigUint64(ChunkHeader.size, BigInt(offset), false);
  return out;
}

/** An OFFSET_HOLE chunk: `holeSize` bytes at `offset` read as zeros. */
export function encodeOffsetHole(cookie: bigint, flags: number, offset: number, holeSize: number): Uint8Array {
  const payload = OffsetHole.encode({ offset: BigInt(offset), holeSize });
  return concatBytes([encodeChunkHeader(cookie, ChunkType.OFFSET_HOLE, flags, payload.length), payload]);
}

/** One base:allocation run: its length and status flags. */
export interface StatusRun {
  length: number;
  flags: number;
}

/** A BLOCK_STATUS chunk for one metadata context. */
export function encodeBlockStatus(cookie: bigint, flags: number, contextId: number, runs: readonly StatusRun[]): Uint8Array {
  const payloadLength = 4 + runs.length * StatusDescriptor.size;
  const out = new Uint8Array(ChunkHeader.size + payloadLength);
  out.set(encodeChunkHeader(cookie, ChunkType.BLOCK_STATUS, flags, payloadLength));
  new DataView(out.buffer).setUint32(ChunkHeader.size, contextId, false);
  runs.forEach((run, index) => {
    StatusDescriptor.encodeInto(out, run, ChunkHeader.size + 4 + index * StatusDescriptor.size);
  });
  return out;
}
