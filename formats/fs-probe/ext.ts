/** ext2/3/4: superblock at byte 1024, magic 0xEF53 at 1080. */

import { cLabel, isZero, uuidText } from './text.js';
import { le, safeSize, type FilesystemInfo } from './types.js';

const SUPERBLOCK = 1024;
const EXT_MAGIC = 0xef53;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_64BIT = 0x80;
// Features an ext3 driver understands; anything beyond makes it ext4 (blkid's rule).
const EXT3_INCOMPAT_SUPPORTED = 0x2 | 0x4 | 0x10; // filetype, recover, meta_bg
const EXT3_RO_COMPAT_SUPPORTED = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
const EXT2_INCOMPAT_SUPPORTED = 0x2 | 0x10; // filetype, meta_bg
/** s_flags: "test_fs", a filesystem for in-development code (blkid's ext4dev). */
const FLAGS_TEST_FILESYS = 0x4;

/** Probes ext2/3/4. */
export function probeExt(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < SUPERBLOCK + 1024) return undefined;
  const sb = head.subarray(SUPERBLOCK, SUPERBLOCK + 1024);
  const view = le(sb);
  if (view.getUint16(0x38, true) !== EXT_MAGIC) return undefined;
  const compat = view.getUint32(0x5c, true);
  const incompat = view.getUint32(0x60, true);
  const roCompat = view.getUint32(0x64, true);
  const type = extVariant(compat, incompat, roCompat, view.getUint32(0x160, true));
  if (type === undefined) return undefined;
  const logBlockSize = view.getUint32(0x18, true);
  if (logBlockSize > 6) return undefined;
  const blockSize = 1024 << logBlockSize;
  let blocks = BigInt(view.getUint32(0x04, true));
  if (incompat & INCOMPAT_64BIT) blocks += BigInt(view.getUint32(0x150, true)) << 32n;
  const info: FilesystemInfo = { type };
  const size = safeSize(blocks, blockSize);
  if (size !== undefined) info.size = size;
  const uuid = sb.subarray(0x68, 0x78);
  if (!isZero(uuid)) info.uuid = uuidText(uuid);
  const label = cLabel(sb.subarray(0x78, 0x88));
  if (label !== undefined) info.label = label;
  return info;
}

/**
 * blkid's name for an ext superblock: jbd for an external journal, ext4dev for
 * one marked for test use, ext4 where an ext3 driver would not understand a
 * feature, ext3 with a journal, ext2 where an ext2 driver understands it all;
 * none otherwise (ext2 features with the journal-recovery flag but no journal).
 */
function extVariant(compat: number, incompat: number, roCompat: number, flags: number): string | undefined {
  if (incompat & INCOMPAT_JOURNAL_DEV) return 'jbd';
  if (flags & FLAGS_TEST_FILESYS) return 'ext4dev';
  if (incompat & ~EXT3_INCOMPAT_SUPPORTED || roCompat & ~EXT3_RO_COMPAT_SUPPORTED) return 'ext4';
  if (compat & COMPAT_HAS_JOURNAL) return 'ext3';
  return incompat & ~EXT2_INCOMPAT_SUPPORTED ? undefined : 'ext2';
}
