/**
 * What the server exports: a byte range with block status, built from an Image
 * (its whole virtual disk, or a window of it such as one partition).
 */

import { checkRange } from '../core/bytes.js';
import { SliceDevice } from '../core/device.js';
import { ReadOnlyError, UnsupportedFeatureError } from '../core/errors.js';
import type { Extent, Image } from '../core/image.js';
import { GUARDED_RAW_BLOCK_SIZE, ZERO_CHUNK_BYTES } from './limits.js';
import { allocationDepthContext, chainLayers, type MetaContext } from './status.js';

/** One export as the protocol code sees it. */
export interface NbdExport {
  /** The name clients ask for ('' is the default export). */
  readonly name: string;
  readonly description?: string;
  readonly size: number;
  readonly writable: boolean;
  /**
   * Served to several clients at once by one process: a flush on any of them
   * covers the writes of all (NBD_FLAG_CAN_MULTI_CONN), as one image stands behind them.
   */
  readonly multiConn?: boolean;
  /**
   * The smallest request the export handles without a read-modify-write: 1
   * (any byte; the default), or a probed raw image's 512, as qemu aligns it
   * so that the guarded first sector is written whole.
   */
  readonly minimumBlockSize?: number;
  read(offset: number, length: number): Promise<Uint8Array>;
  write(offset: number, data: Uint8Array): Promise<void>;
  /**
   * Makes [offset, offset+length) read as zeros; with `noHole` (NBD_CMD_FLAG_NO_HOLE)
   * the range stays allocated, else the image may free it. With `fast`
   * (NBD_CMD_FLAG_FAST_ZERO) zeroing that would mean writing zeros throws an
   * UnsupportedFeatureError instead, with nothing changed.
   */
  writeZeroes(offset: number, length: number, options?: { noHole?: boolean; fast?: boolean }): Promise<void>;
  /** A hint that the range is no longer needed; contents may stay as they were. */
  trim(offset: number, length: number): Promise<void>;
  flush(): Promise<void>;
  /** Block status of [offset, offset+length), relative to the export. */
  blockStatus(offset: number, length: number): Promise<Extent[]>;
  /** Metadata contexts offered beside base:allocation, in the order they are listed. */
  readonly metaContexts?: readonly MetaContext[];
}

/** A window of an image: bytes [start, start+length) of its virtual disk. */
export interface ExportWindow {
  start: number;
  length: number;
}

/** How to export an image. */
export interface ImageExportOptions {
  name: string;
  description?: string;
  writable: boolean;
  /** Export only this range of the virtual disk (a partition); default the whole disk. */
  window?: ExportWindow;
  /** TRIM frees what the range stores (qemu-nbd's --discard=unmap); by default it is ignored. */
  unmapOnTrim?: boolean;
  /** Several clients may be served at once (see NbdExport.multiConn). */
  multiConn?: boolean;
  /** Offer qemu:allocation-depth (qemu-nbd's -A). */
  allocationDepth?: boolean;
  /** Further contexts (dirty bitmaps), offered after it, over the export's own offsets. */
  metaContexts?: readonly MetaContext[];
}

/** Zero bytes shared by every WRITE_ZEROES: never written to, so one buffer serves all. */
let zeroChunk: Uint8Array | undefined;

function zeros(length: number): Uint8Array {
  zeroChunk ??= new Uint8Array(ZERO_CHUNK_BYTES);
  return zeroChunk.subarray(0, length);
}

/**
 * Exports an image through its Image interface. A window is a SliceDevice over
 * the image for data, with block status asked of the image and shifted.
 */
export function imageExport(image: Image, options: ImageExportOptions): NbdExport {
  if (options.writable && (!image.writable || !image.write)) {
    throw new ReadOnlyError(`${image.name}: the ${image.format} image cannot be written here`);
  }
  const window = options.window ?? { start: 0, length: image.size };
  const data = new SliceDevice(image, window.start, window.length, { writable: options.writable, name: image.name });
  async function blockStatus(offset: number, length: number): Promise<Extent[]> {
    checkRange(offset, length, window.length, `block status of ${image.name}`);
    const extents = await image.blockStatus(window.start + offset, length);
    return extents.map((extent) => ({ ...extent, start: extent.start - window.start }));
  }
  const metaContexts = [...(options.allocationDepth ? [allocationDepthContext(blockStatus, chainLayers(image))] : []), ...(options.metaContexts ?? [])];
  return {
    name: options.name,
    description: options.description,
    size: window.length,
    writable: options.writable,
    multiConn: options.multiConn === true,
    minimumBlockSize: image.probed && image.format === 'raw' ? GUARDED_RAW_BLOCK_SIZE : 1,
    read: (offset, length) => data.read(offset, length),
    write: (offset, bytes) => data.write(offset, bytes),
    async writeZeroes(offset, length, zeroOptions = {}) {
      checkRange(offset, length, window.length, `zero ${image.name}`);
      // The image's own zeroing stores as little as it can; with NO_HOLE it keeps what is
      // allocated (qcow2: allocated zero clusters), as qemu-nbd does.
      if (image.writeZeroes) {
        return image.writeZeroes(window.start + offset, length, { keepAllocation: zeroOptions.noHole === true, fast: zeroOptions.fast === true });
      }
      if (zeroOptions.fast) throw new UnsupportedFeatureError(`zeroing the ${image.format} image ${image.name} means writing zeros`);
      for (let done = 0; done < length; done += ZERO_CHUNK_BYTES) {
        await data.write(offset + done, zeros(Math.min(ZERO_CHUNK_BYTES, length - done)));
      }
    },
    async trim(offset, length) {
      checkRange(offset, length, window.length, `trim ${image.name}`);
      // Trim is advisory: without --discard=unmap (or a format that can free), the bytes stay.
      if (options.unmapOnTrim && image.trim) await image.trim(window.start + offset, length);
    },
    flush: async () => {
      if (options.writable) await image.flush?.();
    },
    blockStatus,
    metaContexts,
  };
}
