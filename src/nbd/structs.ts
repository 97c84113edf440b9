/**
 * The fixed-size NBD messages, each declared once in wire order (all
 * big-endian). Variable-length payloads follow some of them on the wire.
 */

import { defineStruct, u16be, u32be, u64be } from '../core/struct.js';

/** S: the newstyle greeting: "NBDMAGIC", "IHAVEOPT", handshake flags. */
export const ServerGreeting = defineStruct('NBD server greeting', 18, {
  nbdMagic: [0, u64be], // NBD_MAGIC
  optionMagic: [8, u64be], // NBD_IHAVEOPT
  handshakeFlags: [16, u16be],
});

/** C: one option header; `length` bytes of option data follow. */
export const OptionHeader = defineStruct('NBD option header', 16, {
  magic: [0, u64be], // NBD_IHAVEOPT
  option: [8, u32be],
  length: [12, u32be],
});

/** S: one option reply header; `length` bytes of reply data follow. */
export const OptionReplyHeader = defineStruct('NBD option reply header', 20, {
  magic: [0, u64be], // NBD_OPTION_REPLY_MAGIC
  option: [8, u32be],
  replyType: [12, u32be],
  length: [16, u32be],
});

/** S: the answer to NBD_OPT_EXPORT_NAME (124 zero bytes follow unless NO_ZEROES). */
export const ExportNameReply = defineStruct('NBD export name reply', 10, {
  size: [0, u64be],
  transmissionFlags: [8, u16be],
});

/** S: NBD_REP_INFO data of type NBD_INFO_EXPORT. */
export const InfoExport = defineStruct('NBD_INFO_EXPORT', 12, {
  infoType: [0, u16be],
  size: [2, u64be],
  transmissionFlags: [10, u16be],
});

/** S: NBD_REP_INFO data of type NBD_INFO_BLOCK_SIZE. */
export const InfoBlockSize = defineStruct('NBD_INFO_BLOCK_SIZE', 14, {
  infoType: [0, u16be],
  minimum: [2, u32be],
  preferred: [6, u32be],
  maximum: [10, u32be],
});

/** C: one transmission request; a WRITE's `length` bytes of data follow. */
export const Request = defineStruct('NBD request', 28, {
  magic: [0, u32be], // NBD_REQUEST_MAGIC
  flags: [4, u16be],
  type: [6, u16be],
  cookie: [8, u64be], // opaque to the server, echoed in the reply
  offset: [16, u64be],
  length: [24, u32be],
});

/** S: a simple reply; a successful READ's data follows. */
export const SimpleReply = defineStruct('NBD simple reply', 16, {
  magic: [0, u32be], // NBD_SIMPLE_REPLY_MAGIC
  error: [4, u32be],
  cookie: [8, u64be],
});

/** S: a structured reply chunk header; `length` bytes of payload follow. */
export const ChunkHeader = defineStruct('NBD structured reply chunk', 20, {
  magic: [0, u32be], // NBD_STRUCTURED_REPLY_MAGIC
  flags: [4, u16be],
  type: [6, u16be],
  cookie: [8, u64be],
  length: [16, u32be],
});

/** S: the payload head of NBD_REPLY_TYPE_OFFSET_HOLE. */
export const OffsetHole = defineStruct('NBD offset hole', 12, {
  offset: [0, u64be],
  holeSize: [8, u32be],
});

/** S: the payload head of an error chunk; `messageLength` bytes of UTF-8 follow. */
export const ErrorChunk = defineStruct('NBD error chunk', 6, {
  error: [0, u32be],
  messageLength: [4, u16be],
});

/** S: one base:allocation descriptor of NBD_REPLY_TYPE_BLOCK_STATUS. */
export const StatusDescriptor = defineStruct('NBD block status descriptor', 8, {
  length: [0, u32be],
  flags: [4, u32be],
});
