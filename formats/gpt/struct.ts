/** GPT on-disk structures (UEFI §5.3): the 92-byte header and the 128-byte entry. */

import { ascii, defineStruct, guid, u32le, u64le, utf16le } from '../../src/core/struct.js';

/** "EFI PART". */
export const GPT_SIGNATURE = 'EFI PART';
/** Revision 1.0. */
export const GPT_REVISION = 0x00010000;

/** The GPT header (92 bytes; the rest of its sector is reserved and zero). */
export const GptHeader = defineStruct('GPT header', 92, {
  signature: [0, ascii(8)],
  revision: [8, u32le],
  headerSize: [12, u32le],
  headerCrc32: [16, u32le], // over headerSize bytes, computed with this field zero
  reserved: [20, u32le],
  myLba: [24, u64le],
  alternateLba: [32, u64le],
  firstUsableLba: [40, u64le],
  lastUsableLba: [48, u64le],
  diskGuid: [56, guid],
  entriesLba: [72, u64le],
  entryCount: [80, u32le],
  entrySize: [84, u32le],
  entriesCrc32: [88, u32le],
});

/** A decoded GPT header. */
export type GptHeaderValue = ReturnType<typeof GptHeader.decode>;

/** One partition entry (128 bytes in the default layout; larger entries carry reserved bytes). */
export const GptEntry = defineStruct('GPT entry', 128, {
  typeGuid: [0, guid],
  uniqueGuid: [16, guid],
  firstLba: [32, u64le],
  lastLba: [40, u64le], // inclusive
  attributes: [48, u64le],
  name: [56, utf16le(36)],
});

/** A decoded GPT entry. */
export type GptEntryValue = ReturnType<typeof GptEntry.decode>;

/** The all-zero GUID: an unused entry. */
export const NIL_GUID = '00000000-0000-0000-0000-000000000000';

/** Attribute bit 0: platform required. */
export const ATTR_REQUIRED = 0n;
/** Attribute bit 1: no block I/O protocol. */
export const ATTR_NO_BLOCK_IO = 1n;
/** Attribute bit 2: legacy BIOS bootable. */
export const ATTR_LEGACY_BOOTABLE = 2n;
/** Bits 48–63 belong to the partition type. */
export const ATTR_TYPE_FIRST = 48n;
