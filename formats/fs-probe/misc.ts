/** Signatures at fixed places: XFS, Btrfs, swap, LUKS, LVM2 PV, squashfs (ISO 9660 in iso9660.ts). */

import { PlatterError } from '../../src/core/errors.js';
import { findPvLabel, formatPvUuid } from '../lvm/label.js';
import { asciiAt, cLabel, isZero, uuidText } from './text.js';
import { isPowerOfTwoIn, le, safeSize, type FilesystemInfo } from './types.js';

/**
 * XFS: "XFSB" at 0; block size u32 BE at 4, data blocks u64 BE at 8, UUID at
 * 32, label at 108. As blkid, a superblock whose block and sector sizes, block
 * count and allocation groups cannot be is not XFS.
 */
export function probeXfs(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 512 || asciiAt(head, 0, 4) !== 'XFSB') return undefined;
  const view = le(head);
  const blockSize = view.getUint32(4, false);
  const sectorSize = view.getUint16(102, false);
  const agBlocks = view.getUint32(84, false);
  const agCount = view.getUint32(88, false);
  if (!isPowerOfTwoIn(blockSize, 512, 65536) || !isPowerOfTwoIn(sectorSize, 512, 32768) || view.getBigUint64(8, false) === 0n || agBlocks === 0 || agCount === 0) return undefined;
  const info: FilesystemInfo = { type: 'xfs', uuid: uuidText(head.subarray(32, 48)) };
  const size = safeSize(view.getBigUint64(8, false), blockSize);
  if (size !== undefined) info.size = size;
  const label = cLabel(head.subarray(108, 120));
  if (label !== undefined) info.label = label;
  return info;
}

const BTRFS_SUPERBLOCK = 65536;

/** Btrfs: "_BHRfS_M" at 65536+0x40; fsid at +0x20, total bytes at +0x70, label at +0x12B. */
export function probeBtrfs(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < BTRFS_SUPERBLOCK + 0x22b || asciiAt(head, BTRFS_SUPERBLOCK + 0x40, 8) !== '_BHRfS_M') return undefined;
  const sb = head.subarray(BTRFS_SUPERBLOCK, BTRFS_SUPERBLOCK + 0x22b);
  const info: FilesystemInfo = {
    type: 'btrfs',
    uuid: uuidText(sb.subarray(0x20, 0x30)),
    size: safeSize(le(sb).getBigUint64(0x70, true)),
  };
  const label = cLabel(sb.subarray(0x12b, 0x22b));
  if (label !== undefined) info.label = label;
  return info;
}

/** Page sizes a swap area may be made for; the signature sits in the last bytes of page 0 (blkid's list). */
const SWAP_PAGE_SIZES = [4096, 8192, 16384, 32768, 65536];

/** Signatures at the end of page 0: swap areas, and hibernation images written over one (blkid's swsuspend). */
const SWAP_MAGICS: ReadonlyArray<readonly [string, string]> = [
  ['SWAPSPACE2', 'swap'],
  ['SWAP-SPACE', 'swap'],
  ['S1SUSPEND', 'swsuspend'],
  ['S2SUSPEND', 'swsuspend'],
  ['ULSUSPEND', 'swsuspend'],
  ['LINHIB0001', 'swsuspend'],
];

/** The first swap signature found, 10 bytes before the end of page 0 for each page size. */
function swapSignature(head: Uint8Array): { pageSize: number; magic: string; type: string } | undefined {
  for (const pageSize of SWAP_PAGE_SIZES) {
    const magic = SWAP_MAGICS.find(([text]) => asciiAt(head, pageSize - 10, text.length) === text);
    if (magic) return { pageSize, magic: magic[0], type: magic[1] };
  }
  return undefined;
}

/**
 * Linux swap: "SWAPSPACE2" at pagesize−10; version 1 at 1024, last page at
 * 1028, UUID at 1036, label at 1052. A version 0 area ("SWAP-SPACE") has no
 * header; a hibernation image keeps the version 1 header.
 */
export function probeSwap(head: Uint8Array): FilesystemInfo | undefined {
  const found = swapSignature(head);
  if (!found) return undefined;
  if (found.magic === 'SWAP-SPACE') return { type: 'swap' };
  const view = le(head);
  // As blkid: a header of another version, or with no pages, is not a swap area (in either byte order).
  const littleEndian = view.getUint32(1024, true) === 1;
  if (!littleEndian && view.getUint32(1024, false) !== 1) return undefined;
  const lastPage = view.getUint32(1028, littleEndian);
  if (lastPage === 0) return undefined;
  const info: FilesystemInfo = { type: found.type, size: (lastPage + 1) * found.pageSize };
  const uuid = head.subarray(1036, 1052);
  if (!isZero(uuid)) info.uuid = uuidText(uuid);
  const label = cLabel(head.subarray(1052, 1068));
  if (label !== undefined) info.label = label;
  return info;
}

/** Where LUKS2 keeps its second header copy, one per header size cryptsetup allows (those the probed head holds are looked at). */
const LUKS2_SECONDARY_OFFSETS = [0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000];

/** A LUKS header at `offset` of the head with magic `magic`, as blkid's luks_valid checks it (a LUKS2 header knows its own offset). */
function luksHeaderAt(head: Uint8Array, offset: number, magic: string): Uint8Array | undefined {
  if (offset + 512 > head.length || asciiAt(head, offset, 6) !== magic) return undefined;
  const header = head.subarray(offset, offset + 512);
  const view = le(header);
  if (view.getUint16(6, false) === 2 && view.getBigUint64(256, false) !== BigInt(offset)) return undefined;
  return header;
}

/**
 * LUKS1/2: `LUKS\xBA\xBE` at 0, or a LUKS2 secondary header (`SKUL\xBA\xBE`)
 * when the first is gone; UUID text at 168 (version 1 or 2 only), LUKS2 label at 24.
 */
export function probeLuks(head: Uint8Array): FilesystemInfo | undefined {
  const header =
    luksHeaderAt(head, 0, 'LUKS\xba\xbe') ?? LUKS2_SECONDARY_OFFSETS.map((offset) => luksHeaderAt(head, offset, 'SKUL\xba\xbe')).find((found) => found !== undefined);
  if (!header) return undefined;
  const info: FilesystemInfo = { type: 'crypto_LUKS' };
  const version = le(header).getUint16(6, false);
  if (version !== 1 && version !== 2) return info;
  const uuid = cLabel(header.subarray(168, 208));
  if (uuid !== undefined) info.uuid = uuid;
  if (version === 2) {
    const label = cLabel(header.subarray(24, 72));
    if (label !== undefined) info.label = label;
  }
  return info;
}

/** An LVM2 physical volume. */
export function probeLvm(head: Uint8Array): FilesystemInfo | undefined {
  let label;
  try {
    label = findPvLabel(head);
  } catch (error) {
    // A label whose checksum holds but whose area lists are broken: not a PV we can use.
    if (error instanceof PlatterError) return undefined;
    throw error;
  }
  if (!label) return undefined;
  return { type: 'LVM2_member', uuid: formatPvUuid(label.uuid), size: label.deviceSize };
}

/** squashfs: "hsqs" at 0, major version at 28; bytes used at 40. Versions before 4 (and big-endian "sqsh") are blkid's squashfs3. */
export function probeSquashfs(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < 96) return undefined;
  const magic = asciiAt(head, 0, 4);
  if (magic === 'sqsh') return { type: 'squashfs3' };
  if (magic !== 'hsqs') return undefined;
  if (le(head).getUint16(28, true) < 4) return { type: 'squashfs3' };
  return { type: 'squashfs', size: safeSize(le(head).getBigUint64(40, true)) };
}
