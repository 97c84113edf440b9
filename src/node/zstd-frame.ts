/**
 * Measures one zstd frame without decoding it (RFC 8878 §3.1.1): the frame
 * header, then blocks of `{last, type, size}` headers, then an optional
 * checksum. This lets a decoder ignore bytes after the frame, and tells how
 * much output the frame can make before anything is allocated.
 */

import { CorruptImageError } from '../core/errors.js';

const ZSTD_MAGIC = 0xfd2fb528;
/** RFC 8878: a block never regenerates more than 128 KiB. */
const MAX_BLOCK_OUTPUT = 128 * 1024;

/** What a frame walk tells. */
export interface ZstdFrameInfo {
  /** Bytes of the frame, header to checksum. */
  length: number;
  /** Frame_Content_Size when the header has it. */
  contentSize?: number;
  /** Output of raw and RLE blocks (exact). */
  knownOutput: number;
  /** The most output the compressed blocks can add. */
  maxCompressedOutput: number;
}

/** Walks the zstd frame at the start of `input`. */
export function zstdFrameInfo(input: Uint8Array): ZstdFrameInfo {
  const view = new DataView(input.buffer, input.byteOffset, input.byteLength);
  const need = (at: number, bytes: number) => {
    if (bytes > input.length - at) throw new CorruptImageError('zstd frame is truncated');
  };
  need(0, 5);
  if (view.getUint32(0, true) !== ZSTD_MAGIC) throw new CorruptImageError('not a zstd frame (bad magic)');
  const descriptor = view.getUint8(4);
  const contentSizeFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const hasChecksum = (descriptor >> 2) & 1;
  const dictionaryFlag = descriptor & 3;
  let at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictionaryFlag]!;
  const contentSizeBytes = [singleSegment ? 1 : 0, 2, 4, 8][contentSizeFlag]!;
  need(at, contentSizeBytes);
  const info: ZstdFrameInfo = { length: 0, knownOutput: 0, maxCompressedOutput: 0 };
  if (contentSizeBytes > 0) info.contentSize = readContentSize(view, at, contentSizeBytes);
  at += contentSizeBytes;
  for (let last = 0; !last; ) {
    need(at, 3);
    const blockHeader = view.getUint8(at) | (view.getUint8(at + 1) << 8) | (view.getUint8(at + 2) << 16);
    last = blockHeader & 1;
    const type = (blockHeader >> 1) & 3;
    const size = blockHeader >>> 3;
    at += 3;
    if (type === 3) throw new CorruptImageError('zstd frame has a reserved block type');
    const stored = type === 1 ? 1 : size;
    need(at, stored);
    at += stored;
    if (type === 2) info.maxCompressedOutput += MAX_BLOCK_OUTPUT;
    else info.knownOutput += size;
  }
  if (hasChecksum) {
    need(at, 4);
    at += 4;
  }
  info.length = at;
  return info;
}

function readContentSize(view: DataView, at: number, bytes: number): number {
  switch (bytes) {
    case 1:
      return view.getUint8(at);
    case 2:
      return view.getUint16(at, true) + 256;
    case 4:
      return view.getUint32(at, true);
    default: {
      const value = view.getBigUint64(at, true);
      return value > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(value);
    }
  }
}
