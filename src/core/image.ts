/** What a guest sees: images, their block status, and the formats that open them. */

import type { BlockDevice } from './device.js';

/**
 * How a run of guest bytes is stored (qemu's block_status):
 * - `data`: bytes stored at layer `depth` (0 = the top image);
 * - `zero`: stored as zeros at layer `depth` (reads as zeros, nothing to copy);
 * - `unallocated`: no layer of the chain has it; reads as zeros.
 */
export type ExtentKind = 'data' | 'zero' | 'unallocated';

/** One run of block status. */
export interface Extent {
  start: number;
  length: number;
  kind: ExtentKind;
  /** The chain layer that answers for this run; for `unallocated`, the chain length. */
  depth: number;
  /** Where the bytes sit in the answering layer's file, when that is one contiguous run. */
  hostOffset?: number;
  /** The run is stored compressed. */
  compressed?: boolean;
}

/** One internal snapshot, with qemu-img's fields. */
export interface SnapshotInfo {
  id: string;
  name: string;
  vmStateSize: number;
  dateSec: number;
  dateNsec: number;
  /** Guest clock in nanoseconds (a u64: past 2^53 after 104 days of guest time). */
  vmClockNsec: bigint;
  /** Instructions executed, where recorded (a u64). */
  icount?: bigint;
  /** Virtual disk size recorded with the snapshot. */
  diskSize?: number;
}

/** The facts `info` shows beyond size and format. */
export interface ImageDescription {
  clusterSize?: number;
  /** The backing file name as written in the image. */
  backingFilename?: string;
  /** The backing file name resolved against the naming image's directory. */
  fullBackingFilename?: string;
  backingFormat?: string;
  dirty?: boolean;
  /** qemu-img's `format-specific` object. */
  formatSpecific?: { type: string; data: Record<string, unknown> };
  /** The guest data is encrypted. */
  encrypted?: boolean;
  snapshots?: SnapshotInfo[];
}

/** The virtual disk of an image, with allocation knowledge. */
/** How a zero write may store its zeros. */
export interface ZeroWriteOptions {
  /** Storage the range has stays allocated (marked zero where the format can): NBD's NO_HOLE. */
  keepAllocation?: boolean;
  /**
   * Only zero what changing metadata can (NBD's FAST_ZERO, qemu's
   * no-fallback): where zeros would have to be written, an
   * UnsupportedFeatureError is thrown and nothing is changed.
   */
  fast?: boolean;
}

export interface Image extends BlockDevice {
  /** qemu-img's -f name: 'raw', 'qcow2', ... */
  readonly format: string;
  /** The file (or other device) the image is stored in. */
  readonly device: BlockDevice;
  /** The opened backing image, if any (top first). */
  readonly backing?: Image;
  /** Where the guest data lies when not in `device` (a qcow2 external data file): extents' host offsets point into it. */
  readonly dataDevice?: BlockDevice;
  /** True when the format was probed, not given (a writable raw image then guards its first sector: see OpenOptions.reprobe). */
  readonly probed?: boolean;
  /** Describes [offset, offset+length) as runs, never reading guest data. */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  describe(): ImageDescription;
  /**
   * Makes [offset, offset+length) read as zeros, storing as little as the
   * format can (space may be freed, unless `keepAllocation`). Formats without
   * it are zeroed by writing zeros.
   */
  writeZeroes?(offset: number, length: number, options?: ZeroWriteOptions): Promise<void>;
  /** Frees what [offset, offset+length) stores, where the format can; the range then reads as unwritten. */
  discard?(offset: number, length: number): Promise<void>;
  /**
   * A guest's discard (NBD's TRIM): frees what [offset, offset+length) stores,
   * where the format can, as qemu's discard requests do: unlike `discard`, a
   * freed range of a qcow2 version 3 image reads zeros, never the older data
   * of a backing file.
   */
  trim?(offset: number, length: number): Promise<void>;
}

/** Codecs injected by the runtime: formats never import a compression library themselves. */
export interface Codecs {
  /** Raw deflate (no zlib header), stopping after `outputLength` bytes. */
  inflateRaw(input: Uint8Array, outputLength: number): Promise<Uint8Array>;
  /** Raw deflate inflated straight into `output` (no buffer per call); resolves with the bytes written. */
  inflateRawInto?(input: Uint8Array, output: Uint8Array): Promise<number>;
  /** A zstd frame, stopping after `outputLength` bytes. */
  zstdDecompress(input: Uint8Array, outputLength: number): Promise<Uint8Array>;
  /** A zstd frame decoded straight into `output` (no buffer per call); resolves with the bytes written. */
  zstdDecompressInto?(input: Uint8Array, output: Uint8Array): Promise<number>;
  deflateRaw?(input: Uint8Array): Promise<Uint8Array>;
  zstdCompress?(input: Uint8Array): Promise<Uint8Array>;
}

/** Services a format needs from its runtime: opening files named inside images, codecs, warnings. */
export interface ImageHost {
  codecs: Codecs;
  /**
   * A warning about the image being opened; `file` names another file it is
   * about (a backing image's own warnings name the backing file, not the top).
   */
  warn(message: string, file?: string): void;
  /**
   * Opens a file named inside an image (a data file, a backing file) relative to
   * the naming device; applies the runtime's policy on which names are allowed.
   */
  openNamedFile?(name: string, namedBy: BlockDevice, options: { writable: boolean }): Promise<BlockDevice>;
  /** Where a name found inside `namedBy` resolves to, for display (qemu's full-backing-filename). */
  resolveName?(name: string, namedBy: BlockDevice): string;
  /** Opens a backing image: the engine applies format probing, depth and cycle limits. */
  openBacking?(name: string, namedBy: BlockDevice, format: string | undefined): Promise<Image>;
  /** The format a name itself gives (a json: name's driver); it wins over the format recorded beside the name, as in qemu. */
  namedFormat?(name: string): string | undefined;
  /** True when a name itself says to open its image without a backing file (a json: name's `"backing": null`). */
  namedAlone?(name: string): boolean;
}

/** Options every format's `open` takes. */
export interface OpenOptions {
  host: ImageHost;
  writable?: boolean;
  /** Do not open backing or data files (inspect only). */
  noBacking?: boolean;
  /** With noBacking: open the external data file all the same (a size change must reach it), only the backing chain stays closed. */
  withDataFile?: boolean;
  /** An encrypted image opens, to be described only (info): its guest data cannot be read or written. */
  describeEncrypted?: boolean;
  /**
   * Writable images: metadata writes (tables, refcounts, header) are held in
   * memory and land, merged, at the next flush or close (or once 16 MiB are
   * held); guest data is written as usual, but a write into new clusters
   * lets the next write be allocated while its data lands. For a new image
   * that convert fills: an interrupted convert loses the output anyway.
   */
  writeBehindMetadata?: boolean;
  /**
   * Present when the format was probed, not given: names the format that a
   * first sector would probe as. A probed raw image refuses a write that
   * would make its first sector probe as another format, as qemu refuses it:
   * a guest could otherwise turn its disk into, say, a qcow2 image whose
   * backing file is any file of the host, to be read at the next probe.
   */
  reprobe?: (head: Uint8Array) => string;
}

/** One on-disk image format. */
export interface FormatModule {
  /** qemu-img's -f name. */
  readonly name: string;
  /** 0 = not mine, 100 = certain; raw answers 1. */
  probe(head: Uint8Array): number;
  open(device: BlockDevice, options: OpenOptions): Promise<Image>;
}
