/** Limits applied while reading MBR partition tables. */

/**
 * Most logical partitions followed along an EBR chain. Linux stops at 256
 * minors per disk (DISK_MAX_PARTS for msdos), so a longer chain is either a
 * cycle we failed to see or a hostile image; stopping keeps the walk bounded.
 */
export const MAX_EBR_CHAIN = 256;

/** Bytes of an MBR or EBR sector that carry the table (the rest of a larger sector is ignored). */
export const MBR_SECTOR_BYTES = 512;
