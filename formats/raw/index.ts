/**
 * The raw format: the file is the virtual disk. Block status reports the whole
 * range as data at its own offset, or as zeros when the device knows it holds
 * no data at all; the host file system's holes are not visible through a
 * portable file API, so zero detection happens when data is copied.
 *
 * Like qemu's block layer, the virtual size is the file size rounded up to a
 * whole 512-byte sector; the bytes past the end of the file read as zeros.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { readZeroPadded, requireWritable } from '../../src/core/device.js';
import { alignUp, checkRange } from '../../src/core/bytes.js';
import { ReadOnlyError } from '../../src/core/errors.js';
import type { Extent, FormatModule, Image, ImageDescription, OpenOptions } from '../../src/core/image.js';

/** qemu's sector size: virtual sizes are whole sectors. */
const SECTOR_SIZE = 512;
/** What qemu probes when a probed raw image's first sector is written: that sector alone. */
const GUARDED_HEAD = SECTOR_SIZE;

/** A raw image over any device. */
export class RawImage implements Image {
  readonly backing = undefined;

  /**
   * `reprobe`: the format was probed; writes that would make the first sector
   * probe as another format are refused. `format`: 'file' when opened as qemu's
   * file protocol (-f file), which reads the same.
   */
  constructor(
    readonly device: BlockDevice,
    private readonly reprobe?: (head: Uint8Array) => string,
    readonly format: 'raw' | 'file' = 'raw',
  ) {
    // Every byte is the disk: copies read the file's holes too.
    device.willReadHoles?.();
  }

  get probed(): boolean {
    return this.reprobe !== undefined;
  }

  get size(): number {
    return alignUp(this.device.size, SECTOR_SIZE);
  }
  get writable(): boolean {
    return this.device.writable;
  }
  get name(): string {
    return this.device.name;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    checkRange(offset, target.length, this.size, `read from ${this.name}`);
    // Past the end of the file lies the zero tail of the last sector.
    await readZeroPadded(this.device, offset, target);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    requireWritable(this);
    checkRange(offset, data.length, this.size, `write to ${this.name}`);
    if (this.reprobe && offset < GUARDED_HEAD && data.length > 0) await this.guardHead(offset, data);
    await this.device.write!(offset, data);
  }

  /**
   * Refuses a write that would make the first sector of a probed raw image
   * probe as another format, as qemu refuses it (EPERM): the next open
   * that probes would take the file for that format, with whatever backing
   * file its header names. Giving the format (-f raw) lifts the guard.
   */
  private async guardHead(offset: number, data: Uint8Array): Promise<void> {
    const head = new Uint8Array(GUARDED_HEAD);
    await this.readInto(0, head);
    head.set(data.subarray(0, GUARDED_HEAD - offset), offset);
    const format = this.reprobe!(head);
    if (format !== 'raw') {
      throw new ReadOnlyError(
        `write to the first sector refused: the format was probed as raw, and the sector written would make the image probe as ${format} (name the format raw to allow it)`,
      ).inFile(this.name);
    }
  }

  /** Grows (with zeros) or shrinks the image to `size` bytes. */
  async resize(size: number): Promise<void> {
    requireWritable(this);
    if (!this.device.truncate) throw new ReadOnlyError(`${this.name} cannot be resized`);
    await this.device.truncate(size);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    checkRange(offset, length, this.size, `block status of ${this.name}`);
    if (length === 0) return [];
    // A file that is one hole reads as zeros, and qemu calls it so (its holes are found with SEEK_DATA).
    const kind = (await this.device.holdsNoData?.()) ? 'zero' : 'data';
    // In the file: a raw image that is part of one (qemu's offset option) lies past its start.
    const base = this.device.partOf?.offset ?? 0;
    // The tail of the last sector past the end of the file reads zeros, and qemu says so.
    const stored = Math.max(offset, Math.min(offset + length, this.device.size));
    const extents: Extent[] = [];
    if (stored > offset) extents.push({ start: offset, length: stored - offset, kind, depth: 0, hostOffset: offset + base });
    if (stored < offset + length) extents.push({ start: stored, length: offset + length - stored, kind: 'zero', depth: 0, hostOffset: stored + base });
    return extents;
  }

  describe(): ImageDescription {
    return {};
  }

  async flush(): Promise<void> {
    await this.device.flush?.();
  }

  async allocatedBytes(): Promise<number | undefined> {
    return this.device.allocatedBytes?.();
  }

  async close(): Promise<void> {
    await this.device.close();
  }
}

/**
 * qemu's file protocol opened as an image (qemu-img -f file, or
 * --image-opts driver=file): the file's bytes, as raw reads them, under
 * that name. Taken by name only, never probed.
 */
export const fileProtocol: FormatModule = {
  name: 'file',
  probe: () => 0,
  async open(device: BlockDevice, options: OpenOptions): Promise<Image> {
    if (options.writable) requireWritable(device);
    return new RawImage(device, undefined, 'file');
  },
};

/** True for the formats whose image is the file's bytes as they are: raw, and the file protocol. */
export function bytesAsStored(format: string): boolean {
  return format === 'raw' || format === fileProtocol.name;
}

/** The raw format module: matches anything, with the lowest score. */
export const rawFormat: FormatModule = {
  name: 'raw',
  probe: () => 1,
  async open(device: BlockDevice, options: OpenOptions): Promise<Image> {
    if (options.writable) requireWritable(device);
    return new RawImage(device, options.reprobe);
  },
};
