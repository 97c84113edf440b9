/**
 * Numbers of the NBD protocol (the NBD project's doc/proto.md): magics, option
 * and reply codes, flags and the errno values sent on the wire.
 */

/** "NBDMAGIC": the first 8 bytes a server sends. */
export const NBD_MAGIC = 0x4e42444d41474943n;
/** "IHAVEOPT": the newstyle greeting, and the magic of every client option. */
export const NBD_IHAVEOPT = 0x49484156454f5054n;
/** Magic of every option reply. */
export const NBD_OPTION_REPLY_MAGIC = 0x3e889045565a9n;
/** Magic of every transmission request. */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** Magic of a simple reply. */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;
/** Magic of a structured reply chunk. */
export const NBD_STRUCTURED_REPLY_MAGIC = 0x668e33ef;

/** Handshake flags the server sends after the greeting. */
export const HandshakeFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Flags the client answers with; any other bit set means the client wants something we lack. */
export const ClientFlag = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const;

/** Transmission flags: what an export supports (sent with its size). */
export const TransmissionFlag = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const;

/** Option codes (NBD_OPT_*). */
export const Option = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
} as const;

/** Bit 31 marks an option reply as an error. */
const REP_ERROR = 0x80000000;

/** Option reply types (NBD_REP_*), errors included. */
export const OptionReply = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: (REP_ERROR | 1) >>> 0,
  ERR_POLICY: (REP_ERROR | 2) >>> 0,
  ERR_INVALID: (REP_ERROR | 3) >>> 0,
  ERR_PLATFORM: (REP_ERROR | 4) >>> 0,
  ERR_TLS_REQD: (REP_ERROR | 5) >>> 0,
  ERR_UNKNOWN: (REP_ERROR | 6) >>> 0,
  ERR_SHUTDOWN: (REP_ERROR | 7) >>> 0,
  ERR_BLOCK_SIZE_REQD: (REP_ERROR | 8) >>> 0,
  ERR_TOO_BIG: (REP_ERROR | 9) >>> 0,
} as const;

/** Information types asked for by NBD_OPT_INFO / NBD_OPT_GO and sent in NBD_REP_INFO. */
export const InfoType = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const;

/** Transmission commands (NBD_CMD_*). */
export const Command = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const;

/** Command flags (NBD_CMD_FLAG_*). */
export const CommandFlag = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const;

/** Structured reply chunk flags. */
export const ChunkFlag = {
  DONE: 1 << 0,
} as const;

/** Structured reply chunk types (NBD_REPLY_TYPE_*). */
export const ChunkType = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const;

/** Error values on the wire: Linux errno numbers, whatever the server's platform. */
export const NbdErrno = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const;

/** The metadata context every export offers. */
export const BASE_ALLOCATION = 'base:allocation';

/** The namespace of BASE_ALLOCATION: a query for it lists every context in it. */
export const BASE_NAMESPACE = 'base:';

/** Status bits of base:allocation descriptors. */
export const AllocationFlag = {
  /** Unallocated: no storage behind these bytes. */
  HOLE: 1 << 0,
  /** Reads return zeros. */
  ZERO: 1 << 1,
} as const;

/** The context id platter gives base:allocation (any value the server picks; 0 is avoided for clarity); the export's other contexts follow it. */
export const BASE_ALLOCATION_ID = 1;

/** qemu's namespace: a query for it lists every qemu: context the export offers. */
export const QEMU_NAMESPACE = 'qemu:';

/**
 * qemu-nbd -A's context: each descriptor's value is the chain layer that
 * holds the range, 1 being the top image, or 0 where no layer does.
 */
export const ALLOCATION_DEPTH = 'qemu:allocation-depth';

/** qemu-nbd -B's contexts: this prefix, then the persistent bitmap's name. */
export const DIRTY_BITMAP_PREFIX = 'qemu:dirty-bitmap:';

/** Status bit of qemu:dirty-bitmap: descriptors: the range's bits are set. */
export const DIRTY_FLAG = 1;
