/** GUID partition tables (UEFI §5.3). */

export { parseGpt, headerCrc } from './parse.js';
export { encodeGpt, encodeProtectiveMbr, gptGeometry } from './write.js';
export { randomGuid } from './guid.js';
export { GPT_TYPE_NAMES, GPT_TYPE_ALIASES } from './types.js';
export { GptHeader, GptEntry, NIL_GUID } from './struct.js';
export { GPT_SECTOR_SIZES, MAX_ENTRY_ARRAY_BYTES, DEFAULT_ENTRY_SIZE } from './limits.js';
