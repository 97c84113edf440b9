/** MBR (DOS) partition tables with extended boot record chains. */

export { parseMbr, looksLikeMbr, hasProtectiveEntry, formatDiskId } from './parse.js';
export { encodeMbr, parseDiskId, type EbrPlacement } from './write.js';
export { MAX_EBR_CHAIN, MBR_SECTOR_BYTES } from './limits.js';
export { MbrEntry, encodeChs, decodeChs, hasBootSignature } from './struct.js';
export { MBR_TYPE_NAMES } from './types.js';
