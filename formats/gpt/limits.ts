/** Limits applied while reading GUID partition tables. */

/** Smallest header the UEFI spec allows (revision 1.0 is 92 bytes). */
export const MIN_HEADER_SIZE = 92;

/**
 * Largest partition entry array read, in bytes. The spec's default is 16 KiB
 * (128 entries of 128 bytes); tools allow larger arrays, but 4 MiB already holds
 * 32768 default entries, and capping it keeps a hostile count from driving a
 * giant allocation.
 */
export const MAX_ENTRY_ARRAY_BYTES = 4 * 1024 * 1024;

/** Entry sizes must be 128 × 2^n (UEFI §5.3.2); we accept up to 4096 bytes. */
export const MIN_ENTRY_SIZE = 128;
/** Largest entry size accepted: 128 × 2^5; no tool writes bigger ones. */
export const MAX_ENTRY_SIZE = 4096;

/** Sector sizes probed for a GPT header, in order: 512-byte and 4Kn disks. */
export const GPT_SECTOR_SIZES = [512, 4096] as const;

/** Entries written by default (the UEFI minimum array of 16 KiB). */
export const DEFAULT_ENTRY_COUNT = 128;
/** Bytes per entry written (UEFI's default). */
export const DEFAULT_ENTRY_SIZE = 128;
