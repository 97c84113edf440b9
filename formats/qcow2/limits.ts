/**
 * Limits for qcow2, each one qemu's own (block/qcow2.h) unless said otherwise.
 * Every size read from an image is checked against these before it is used to
 * allocate memory or to bound a loop.
 */

/** Smallest cluster: 512 bytes (cluster_bits 9), one sector. */
export const MIN_CLUSTER_BITS = 9;

/** Largest cluster: 2 MiB (cluster_bits 21); qemu refuses bigger ones. */
export const MAX_CLUSTER_BITS = 21;

/** Extended L2 entries need clusters of at least 16 KiB (32 subclusters of 512 bytes). */
export const MIN_EXTENDED_L2_CLUSTER_BITS = 14;

/** The active L1 table may take at most 32 MiB (qemu's QCOW_MAX_L1_SIZE). */
export const MAX_L1_BYTES = 32 * 1024 * 1024;

/** The refcount table may take at most 8 MiB (qemu's QCOW_MAX_REFTABLE_SIZE). */
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024;

/** refcount_order ≤ 6: refcounts are at most 64 bits wide. */
export const MAX_REFCOUNT_ORDER = 6;

/** At most 65536 internal snapshots (qemu's QCOW_MAX_SNAPSHOTS). */
export const MAX_SNAPSHOTS = 65536;

/** The snapshot table may take at most 64 MiB (qemu's QCOW_MAX_SNAPSHOTS_SIZE). */
export const MAX_SNAPSHOT_TABLE_BYTES = 64 * 1024 * 1024;

/** Extra data per snapshot entry is at most 1 KiB (qemu's QCOW_MAX_SNAPSHOT_EXTRA_DATA). */
export const MAX_SNAPSHOT_EXTRA_DATA = 1024;

/** A backing file name is at most 1023 bytes (qemu keeps it in a 1024-byte buffer). */
export const MAX_BACKING_FILE_NAME = 1023;

/** The backing format name is shorter than 16 bytes (qemu's bs->backing_format buffer). */
export const MAX_BACKING_FORMAT_NAME = 15;

/** qemu keeps the external data file name in a 1023-byte buffer as well. */
export const MAX_DATA_FILE_NAME = 1023;

/** At most 65535 persistent bitmaps (qemu's QCOW2_MAX_BITMAPS). */
export const MAX_BITMAPS = 65535;

/**
 * A bitmap table copied by convert --bitmaps has at most this many entries
 * (8 MiB of table, held in memory): a bitmap of 64 KiB granularity in 64 KiB
 * clusters needs one entry per 32 GiB of disk, so only a tiny granularity on a
 * huge disk comes near it. (qemu's own limit, BME_MAX_TABLE_SIZE, is 16 times larger.)
 */
export const MAX_BITMAP_TABLE_ENTRIES = 1 << 20;

/** qemu refuses a bitmap whose table has more entries (BME_MAX_TABLE_SIZE). */
export const MAX_BITMAP_TABLE_ENTRIES_ON_DISK = 0x8000000;
/** qemu refuses a bitmap whose data clusters would exceed 512 MiB (BME_MAX_PHYS_SIZE): it holds the bits in memory. */
export const MAX_BITMAP_DATA_BYTES = 0x20000000;
/** Longest bitmap name, in bytes (qemu's BME_MAX_NAME_SIZE). */
export const MAX_BITMAP_NAME_BYTES = 1023;

/**
 * Runs of written guest bytes kept for the enabled bitmaps (see
 * WrittenRanges): 65536 runs are 2-3 MiB of memory. Writes scattered wider
 * than that mark somewhat coarser ranges dirty, never fewer.
 */
export const MAX_WRITTEN_RUNS = 65536;

/** The bitmap directory takes at most 64 MiB (qemu's QCOW2_MAX_BITMAP_DIRECTORY_SIZE). */
export const MAX_BITMAP_DIRECTORY_BYTES = 64 * 1024 * 1024;

/** Host offsets in L1/L2 entries use bits 9..55: anything at or above 2^56 is corrupt. */
export const MAX_HOST_OFFSET_BITS = 56;

/**
 * L2 tables kept in memory per open image. 64 tables of 64 KiB cover 32 GiB of
 * guest space in 4 MiB of memory; with large clusters the cache holds at most
 * MAX_L2_CACHE_BYTES, whichever is smaller.
 */
export const L2_CACHE_TABLES = 64;
/** L2 tables read ahead of the one a walk (block status, check) is on. */
export const L2_READ_AHEAD = 8;
/**
 * Bytes of L2 tables check reads ahead at most: eight 64 KiB tables, but one
 * 2 MiB table (eight of those held the check of an image of 2 MiB clusters
 * near 200 MiB of RSS).
 */
export const L2_READ_AHEAD_BYTES = 512 * 1024;

/**
 * Upper bound on L2 cache memory whatever the cluster size (8 MiB): it bites
 * from 256 KiB clusters on. Four 2 MiB tables still map 2 TiB of guest space,
 * and a walk visits each table once, so convert of a 32 TiB image of 2 MiB
 * clusters took the same time as with 32 MiB (50 s). compare holds two caches,
 * and a Node process starts near 46 MiB: with 32 MiB, map and compare of
 * such an image peaked at 128 and 140 MiB of RSS even with buffers reused;
 * with 8 MiB, at 103 and 97 MiB.
 */
export const MAX_L2_CACHE_BYTES = 8 * 1024 * 1024;
/**
 * Buffers of evicted L2 tables kept to read the next tables into (see
 * l2-cache.ts). A walk evicts one table for each it loads, so one spare is
 * usually enough; a few cover the tables read ahead.
 */
export const L2_SPARE_BUFFERS = 4;

/** Subclusters per cluster with extended L2 entries (fixed by the spec). */
export const SUBCLUSTERS_PER_CLUSTER = 32;

/** Refcount blocks kept in memory by a writer: enough for sequential allocation, flat whatever the image size. */
export const REFCOUNT_BLOCK_CACHE = 32;

/**
 * Decoded bytes one guest read holds at most while its compressed clusters
 * are in flight: enough clusters to keep every decoder thread busy, bounded
 * memory whatever the read size.
 */
export const COMPRESSED_WINDOW_BYTES = 4 * 1024 * 1024;

/** Spare buffers an image keeps for the compressed streams of its reads: one per read in flight (convert runs up to 16). */
export const STREAM_BUFFERS_KEPT = 16;
/** Size of a new stream buffer at least: a 2 MiB read of 64 KiB clusters packed by qemu fits. */
export const STREAM_BUFFER_BYTES = 512 * 1024;
