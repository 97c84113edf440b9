/** Random-access byte devices: the one abstraction every format reads and writes through. */

import { checkRange } from './bytes.js';
import { OutOfRangeError, ReadOnlyError } from './errors.js';

/** Random-access bytes: a file, a slice of another device, memory, a remote range source. */
export interface BlockDevice {
  /** Size in bytes. Writes past the end grow a growable device (a file, memory). */
  readonly size: number;
  /** True when `write` is allowed. */
  readonly writable: boolean;
  /** A name for messages: the file path, or a description. */
  readonly name: string;
  /** Reads exactly `length` bytes; throws OutOfRangeError when the range passes the end. */
  read(offset: number, length: number): Promise<Uint8Array>;
  /**
   * Reads exactly `target.length` bytes at `offset` into `target`, allocating
   * nothing: lets bulk copies reuse a fixed set of buffers. Optional.
   */
  readInto?(offset: number, target: Uint8Array): Promise<void>;
  write?(offset: number, data: Uint8Array): Promise<void>;
  /** Sets the size, cutting or zero-extending. */
  truncate?(size: number): Promise<void>;
  flush?(): Promise<void>;
  /** Bytes the host really holds for this device (sparse files hold less), when known. */
  allocatedBytes?(): Promise<number | undefined>;
  /** True when the host knows it holds no data for this device (one hole, all zeros); false when it holds some or cannot tell. */
  holdsNoData?(): Promise<boolean>;
  /**
   * Says that every byte of this device will be read, holes included (a raw
   * image: the file is the disk), so that the host may read holes its cheapest
   * way. Formats that map their data (qcow2) never read their file's holes.
   */
  willReadHoles?(): void;
  /** The file this device is a part of, and where in it byte 0 of the device lies, when the device stands for that part. */
  readonly partOf?: { name: string; offset: number };
  close(): Promise<void>;
}

/** Anything that reads bytes at an offset: a device or an image. */
export interface ByteSource {
  read(offset: number, length: number): Promise<Uint8Array>;
  readInto?(offset: number, target: Uint8Array): Promise<void>;
}

/** Fills `target` with the bytes at `offset`: through `readInto` when the source has it (nothing allocated), else read and copy. */
export async function readFully(source: ByteSource, offset: number, target: Uint8Array): Promise<void> {
  if (source.readInto) await source.readInto(offset, target);
  else target.set(await source.read(offset, target.length));
}

/**
 * Fills `target` with the bytes of `device` at `offset`, those past its end
 * as zeros (the zero tail of a file's last 512-byte sector, as qemu sees it).
 */
export async function readZeroPadded(device: BlockDevice, offset: number, target: Uint8Array): Promise<void> {
  const stored = Math.max(0, Math.min(target.length, device.size - offset));
  target.fill(0, stored);
  if (stored > 0) await readFully(device, offset, target.subarray(0, stored));
}

/** Zeros are written in pieces of at most this many bytes: memory stays bounded whatever the length. */
const ZERO_PIECE_BYTES = 1 << 20;

/** Writes `length` zero bytes at `start` (preallocation that must store real zeros, not holes). */
export async function writeZeros(device: BlockDevice, start: number, length: number): Promise<void> {
  const zeros = new Uint8Array(Math.min(ZERO_PIECE_BYTES, length));
  for (let done = 0; done < length; done += zeros.length) {
    await device.write!(start + done, zeros.subarray(0, Math.min(zeros.length, length - done)));
  }
}

/** Throws ReadOnlyError unless the device may be written. */
export function requireWritable(device: { writable: boolean; name: string }): void {
  if (!device.writable) throw new ReadOnlyError(`${device.name} is open read-only`);
}

/** A device over memory; grows on writes past the end when writable. */
export class MemoryDevice implements BlockDevice {
  private bytes: Uint8Array;
  private length: number;
  readonly writable: boolean;
  readonly name: string;

  constructor(initial: Uint8Array | number = 0, options: { writable?: boolean; name?: string } = {}) {
    this.bytes = typeof initial === 'number' ? new Uint8Array(initial) : initial;
    this.length = this.bytes.length;
    this.writable = options.writable ?? true;
    this.name = options.name ?? 'memory';
  }

  get size(): number {
    return this.length;
  }

  /** The current contents (a view, not a copy). */
  contents(): Uint8Array {
    return this.bytes.subarray(0, this.length);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length, this.length, `read from ${this.name}`);
    return this.bytes.slice(offset, offset + length);
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    checkRange(offset, target.length, this.length, `read from ${this.name}`);
    target.set(this.bytes.subarray(offset, offset + target.length));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    requireWritable(this);
    checkRange(offset, 0, Number.MAX_SAFE_INTEGER - data.length, `write to ${this.name}`);
    this.ensureCapacity(offset + data.length);
    this.bytes.set(data, offset);
    this.length = Math.max(this.length, offset + data.length);
  }

  async truncate(size: number): Promise<void> {
    requireWritable(this);
    checkRange(size, 0, Number.MAX_SAFE_INTEGER, `truncate ${this.name}`);
    this.ensureCapacity(size);
    if (size < this.length) this.bytes.fill(0, size, this.length);
    this.length = size;
  }

  async allocatedBytes(): Promise<number> {
    return this.length;
  }

  async close(): Promise<void> {}

  private ensureCapacity(needed: number): void {
    if (needed <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(needed, Math.min(this.bytes.length * 2, needed + (1 << 26))));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }
}

/**
 * A device read as `size` bytes, at least its parent's: the bytes past the
 * parent's end read as zeros. qemu's block layer sees a file in whole 512-byte
 * sectors, so a part of a file (the raw driver's offset and size) may reach
 * into the zero tail of its last sector. A write there grows the parent, as
 * qemu's write to the file would.
 */
export class ZeroPaddedDevice implements BlockDevice {
  constructor(
    private readonly parent: BlockDevice,
    readonly size: number,
  ) {
    checkRange(0, parent.size, size, `padding of ${parent.name}`);
  }

  get name(): string {
    return this.parent.name;
  }

  get writable(): boolean {
    return this.parent.writable;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(offset, out);
    return out;
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    checkRange(offset, target.length, this.size, `read from ${this.name}`);
    await readZeroPadded(this.parent, offset, target);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    requireWritable(this);
    checkRange(offset, data.length, this.size, `write to ${this.name}`);
    if (!this.parent.write) throw new OutOfRangeError(`${this.parent.name} cannot be written`);
    await this.parent.write(offset, data);
  }

  async flush(): Promise<void> {
    await this.parent.flush?.();
  }

  async allocatedBytes(): Promise<number | undefined> {
    return this.parent.allocatedBytes?.();
  }

  async holdsNoData(): Promise<boolean> {
    return (await this.parent.holdsNoData?.()) ?? false;
  }

  willReadHoles(): void {
    this.parent.willReadHoles?.();
  }

  async close(): Promise<void> {
    await this.parent.close();
  }
}

/**
 * A window [start, start+length) of another device: a partition, a logical volume,
 * the payload of a container. Never grows; closing it leaves the parent open,
 * unless the slice `owns` its parent (it then stands for the whole file: it
 * closes it, and reports its allocation).
 */
export class SliceDevice implements BlockDevice {
  readonly name: string;
  readonly writable: boolean;
  private readonly owns: boolean;

  constructor(
    private readonly parent: BlockDevice,
    readonly start: number,
    readonly size: number,
    options: { name?: string; writable?: boolean; owns?: boolean } = {},
  ) {
    checkRange(start, size, parent.size, `slice of ${parent.name}`);
    this.name = options.name ?? `${parent.name}[${start}+${size}]`;
    this.writable = (options.writable ?? parent.writable) && parent.writable && parent.write !== undefined;
    this.owns = options.owns === true;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length, this.size, `read from ${this.name}`);
    return this.parent.read(this.start + offset, length);
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    checkRange(offset, target.length, this.size, `read from ${this.name}`);
    await readFully(this.parent, this.start + offset, target);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    requireWritable(this);
    checkRange(offset, data.length, this.size, `write to ${this.name}`);
    if (!this.parent.write) throw new OutOfRangeError(`${this.parent.name} cannot be written`);
    await this.parent.write(this.start + offset, data);
  }

  async flush(): Promise<void> {
    await this.parent.flush?.();
  }

  async allocatedBytes(): Promise<number | undefined> {
    return this.owns ? this.parent.allocatedBytes?.() : undefined;
  }

  /** A part of a device that holds no data holds none either. */
  async holdsNoData(): Promise<boolean> {
    return (await this.parent.holdsNoData?.()) ?? false;
  }

  willReadHoles(): void {
    this.parent.willReadHoles?.();
  }

  get partOf(): { name: string; offset: number } | undefined {
    return this.owns ? { name: this.parent.name, offset: this.start } : undefined;
  }

  async close(): Promise<void> {
    if (this.owns) await this.parent.close();
  }
}
