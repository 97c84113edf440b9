/** Limits applied while reading LVM2 physical volumes and their metadata. */

/** Sectors searched for the "LABELONE" label: lvm2 scans the first four (LABEL_SCAN_SECTORS). */
export const LABEL_SCAN_SECTORS = 4;

/** The label sector and the metadata area header are 512 bytes each (LABEL_SIZE, MDA_HEADER_SIZE). */
export const LABEL_SIZE = 512;
/** Bytes of the metadata area header (MDA_HEADER_SIZE); the text ring buffer follows it. */
export const MDA_HEADER_SIZE = 512;

/**
 * Largest metadata text read. lvm2's default metadata area is 1 MiB and the text
 * is far smaller; 16 MiB leaves room for huge VGs while bounding memory on a
 * hostile size field.
 */
export const MAX_METADATA_BYTES = 16 * 1024 * 1024;

/** Deepest nesting of sections and arrays in metadata text (real metadata nests 5 deep). */
export const MAX_CONFIG_DEPTH = 32;

/** Most data or metadata area descriptors read from a PV header (lvm2 writes 1 or 2). */
export const MAX_DISK_AREAS = 16;

/** Most raw locations read from a metadata area header (lvm2 uses one, plus the terminator). */
export const MAX_RAW_LOCATIONS = 8;
