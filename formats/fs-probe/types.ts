/** What a filesystem probe reports. */

/** A filesystem (or other content) found at the start of a device, with blkid's names. */
export interface FilesystemInfo {
  /** blkid's TYPE: ext2, ext3, ext4, ext4dev, jbd, xfs, btrfs, vfat, exfat, ntfs, swap, swsuspend, crypto_LUKS, LVM2_member, iso9660, squashfs, squashfs3. */
  type: string;
  label?: string;
  /** Formatted as blkid prints it. */
  uuid?: string;
  /** Bytes the filesystem says it spans, where the superblock tells. */
  size?: number;
}

/** One signature prober: looks at the first bytes of a device. */
export type Prober = (head: Uint8Array) => FilesystemInfo | undefined;

/**
 * A byte size from a u64 count and a unit, or undefined when it is past what a
 * number holds exactly: a probe reports a size as a fact, never a guess.
 */
export function safeSize(count: bigint, unit = 1): number | undefined {
  const bytes = count * BigInt(unit);
  return bytes <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(bytes) : undefined;
}

/** True when `value` is a power of two from `least` to `most` (sector, cluster and block sizes). */
export function isPowerOfTwoIn(value: number, least = 1, most = 2 ** 31): boolean {
  return value >= least && value <= most && (value & (value - 1)) === 0;
}

/** A little-endian view over `bytes`, bounds-checked by DataView itself. */
export function le(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
