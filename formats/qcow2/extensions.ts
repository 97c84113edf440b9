/**
 * qcow2 header extensions (qcow2.rst, "Header extensions"): `{u32 type, u32 length,
 * data padded to 8}` records from header_length up to the backing file name (or
 * the end of cluster 0). Known ones are decoded; every record, known or not, is
 * kept raw and in order so a rewrite can preserve what it does not understand.
 */

import { alignUp, u64ToNumber } from '../../src/core/bytes.js';
import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { defineStruct, u32be, u64be, u8, ascii, trimNul } from '../../src/core/struct.js';
import type { FeatureName, Qcow2Header } from './header.js';
import { clusterSizeOf } from './header.js';
import { MAX_BACKING_FORMAT_NAME, MAX_DATA_FILE_NAME } from './limits.js';

export type { FeatureName } from './header.js';

/** Extension type codes. */
export const EXT_END = 0x00000000;
export const EXT_BACKING_FORMAT = 0xe2792aca;
export const EXT_FEATURE_TABLE = 0x6803f857;
export const EXT_BITMAPS = 0x23852875;
export const EXT_CRYPTO_HEADER = 0x0537be77;
export const EXT_DATA_FILE = 0x44415441;

/** The 8-byte header of every extension record. */
export const ExtensionHeader = defineStruct('qcow2 header extension', 8, {
  type: [0, u32be],
  length: [4, u32be],
});

/** One feature-name table entry (48 bytes). */
export const FeatureNameEntry = defineStruct('qcow2 feature name', 48, {
  type: [0, u8],
  bit: [1, u8],
  name: [2, ascii(46)],
});

/** The bitmaps extension body (24 bytes). */
export const BitmapsExtension = defineStruct('qcow2 bitmaps extension', 24, {
  nbBitmaps: [0, u32be],
  reserved: [4, u32be],
  bitmapDirectorySize: [8, u64be],
  bitmapDirectoryOffset: [16, u64be],
});

/** The full-disk-encryption header pointer body (16 bytes). */
export const CryptoHeaderExtension = defineStruct('qcow2 encryption header pointer', 16, {
  offset: [0, u64be],
  length: [8, u64be],
});

/** One raw extension record as found in the file. */
export interface RawExtension {
  type: number;
  data: Uint8Array;
}

/** Where the bitmap directory is, from the bitmaps extension. */
export interface BitmapsPointer {
  nbBitmaps: number;
  directorySize: number;
  directoryOffset: number;
}

/** Decoded header extensions. */
export interface HeaderExtensions {
  backingFormat?: string;
  featureNames: FeatureName[];
  bitmaps?: BitmapsPointer;
  crypto?: { offset: number; length: number };
  dataFile?: string;
  /** Every record in file order (the end marker excluded), known ones included. */
  all: RawExtension[];
  /** Records of types platter does not know, in file order. */
  unknown: RawExtension[];
}

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder();

/** Where the extension area ends: at the backing file name, or at the end of cluster 0. */
export function extensionAreaEnd(header: Qcow2Header): number {
  return header.backingFileOffset !== 0 ? header.backingFileOffset : clusterSizeOf(header);
}

/**
 * Parses the extension records in `cluster0` (the first cluster of the file,
 * or as much of it as exists) starting at header_length.
 */
export function parseExtensions(cluster0: Uint8Array, header: Qcow2Header): HeaderExtensions {
  const result: HeaderExtensions = { featureNames: [], all: [], unknown: [] };
  const end = Math.min(extensionAreaEnd(header), cluster0.length);
  let offset = header.headerLength;
  while (offset < end) {
    if (end - offset < ExtensionHeader.size) {
      throw new CorruptImageError('header extension header truncated', offset);
    }
    const { type, length } = ExtensionHeader.decode(cluster0, offset);
    offset += ExtensionHeader.size;
    // Checked before the end marker is recognised, as qemu checks it: an end marker with a length past the area is refused too.
    if (length > end - offset) {
      throw new CorruptImageError(`header extension 0x${type.toString(16)} too large (${length} bytes)`, offset - 4);
    }
    if (type === EXT_END) break;
    const data = cluster0.slice(offset, offset + length);
    decodeExtension(result, type, data, offset);
    result.all.push({ type, data });
    offset = alignUp(offset + length, 8);
  }
  return result;
}

function decodeExtension(result: HeaderExtensions, type: number, data: Uint8Array, at: number): void {
  switch (type) {
    case EXT_BACKING_FORMAT:
      if (data.length > MAX_BACKING_FORMAT_NAME) {
        throw new CorruptImageError(`backing format name too long (${data.length} bytes)`, at);
      }
      result.backingFormat = trimNul(latin1.decode(data));
      break;
    case EXT_FEATURE_TABLE:
      for (let entry = 0; entry + FeatureNameEntry.size <= data.length; entry += FeatureNameEntry.size) {
        const decoded = FeatureNameEntry.decode(data, entry);
        result.featureNames.push({ type: decoded.type, bit: decoded.bit, name: trimNul(decoded.name) });
      }
      break;
    case EXT_BITMAPS:
      result.bitmaps = decodeBitmapsPointer(data, at);
      break;
    case EXT_CRYPTO_HEADER: {
      if (data.length !== CryptoHeaderExtension.size) {
        throw new CorruptImageError(`encryption header pointer has ${data.length} bytes, expected 16`, at);
      }
      const crypto = CryptoHeaderExtension.decode(data);
      result.crypto = {
        offset: u64ToNumber(crypto.offset, 'encryption header offset', at),
        length: u64ToNumber(crypto.length, 'encryption header length', at + 8),
      };
      break;
    }
    case EXT_DATA_FILE:
      if (data.length > MAX_DATA_FILE_NAME) {
        throw new LimitExceededError(`external data file name too long (${data.length} bytes)`);
      }
      result.dataFile = trimNul(utf8.decode(data));
      break;
    default:
      result.unknown.push({ type, data });
  }
}

function decodeBitmapsPointer(data: Uint8Array, at: number): BitmapsPointer {
  if (data.length !== BitmapsExtension.size) {
    throw new CorruptImageError(`bitmaps extension has ${data.length} bytes, expected ${BitmapsExtension.size}`, at);
  }
  const decoded = BitmapsExtension.decode(data);
  return {
    nbBitmaps: decoded.nbBitmaps,
    directorySize: u64ToNumber(decoded.bitmapDirectorySize, 'bitmap directory size', at + 8),
    directoryOffset: u64ToNumber(decoded.bitmapDirectoryOffset, 'bitmap directory offset', at + 16),
  };
}

/** Encodes extension records (each padded to 8 bytes) followed by the end marker. */
export function encodeExtensions(records: readonly RawExtension[]): Uint8Array {
  let total = ExtensionHeader.size;
  for (const record of records) total += ExtensionHeader.size + alignUp(record.data.length, 8);
  const out = new Uint8Array(total);
  let offset = 0;
  for (const record of records) {
    ExtensionHeader.encodeInto(out, { type: record.type, length: record.data.length }, offset);
    out.set(record.data, offset + ExtensionHeader.size);
    offset += ExtensionHeader.size + alignUp(record.data.length, 8);
  }
  ExtensionHeader.encodeInto(out, { type: EXT_END, length: 0 }, offset);
  return out;
}

/** Reads the backing file name that follows the extensions in cluster 0. */
export function readBackingFileName(cluster0: Uint8Array, header: Qcow2Header): string | undefined {
  if (header.backingFileOffset === 0 || header.backingFileSize === 0) return undefined;
  const start = header.backingFileOffset;
  if (start > cluster0.length || header.backingFileSize > cluster0.length - start) {
    throw new CorruptImageError('backing file name lies past the end of the file', 8);
  }
  return utf8.decode(cluster0.subarray(start, start + header.backingFileSize));
}
