/** Named limits of the NBD server, each with its reason. */

/**
 * Largest READ or WRITE payload served (and advertised as the maximum block
 * size). qemu-nbd uses the same 32 MiB; it bounds the memory one request needs.
 */
export const MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/**
 * Minimum block size advertised for a probed raw image (qemu's request
 * alignment for one, which keeps its guarded first sector whole); other
 * exports take any byte alignment (1).
 */
export const GUARDED_RAW_BLOCK_SIZE = 512;

/** Preferred block size advertised: a common page/cluster granularity. */
export const PREFERRED_BLOCK_SIZE = 4096;

/**
 * Largest option payload read during the handshake. Option payloads hold export
 * names and metadata queries; the spec caps strings at 4096 bytes, so 64 KiB leaves
 * room for many queries while bounding memory. Bigger options are skipped unread
 * and answered NBD_REP_ERR_TOO_BIG.
 */
export const MAX_OPTION_BYTES = 64 * 1024;

/** Longest string (export name, query) accepted: the spec's MUST limit. */
export const MAX_STRING_BYTES = 4096;

/**
 * Options accepted in one handshake before the connection is dropped: real
 * clients send fewer than ten; this only stops a client that never ends it.
 */
export const MAX_HANDSHAKE_OPTIONS = 1024;

/** Most base:allocation descriptors in one reply; clients ask again for the rest. */
export const MAX_STATUS_DESCRIPTORS = 64 * 1024;

/** Most NBD_INFO requests in one NBD_OPT_INFO/GO: there are four info types. */
export const MAX_INFO_REQUESTS = 1024;

/** Size of the reused zero buffer for WRITE_ZEROES: bounded memory whatever the length. */
export const ZERO_CHUNK_BYTES = 1024 * 1024;

/** Bytes buffered from a socket before reading pauses, beyond what a pending read needs. */
export const READ_HIGH_WATER_BYTES = 1024 * 1024;

/** Time a client has to finish the handshake (qemu-nbd allows 10 s too). */
export const HANDSHAKE_TIMEOUT_MS = 10_000;

/**
 * Clients kept waiting for a --shared slot (like a listen backlog, as qemu-nbd
 * leaves them); more are turned away so waiting sockets cannot pile up.
 */
export const MAX_WAITING_CLIENTS = 64;

/**
 * Requests served at once on one connection (qemu-nbd allows 16 too). Only
 * READ and BLOCK_STATUS overlap; anything that changes the export waits for
 * them and runs alone.
 */
export const MAX_CONCURRENT_REQUESTS = 16;

/** READ bytes being served at once on one connection: bounds memory whatever a client queues. */
export const MAX_CONCURRENT_READ_BYTES = 64 * 1024 * 1024;

/** Bytes read at a time for a CACHE request (which may name up to 4 GiB): its memory stays bounded. */
export const CACHE_CHUNK_BYTES = 1024 * 1024;

/**
 * Characters of an export name quoted in an error message; longer names are cut
 * (qemu-nbd cuts at 80 too), so a message stays within the 4096-byte string limit.
 */
export const QUOTED_NAME_CHARS = 80;
