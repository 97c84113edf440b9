/**
 * Helpers for qcow2 writer tests: images created in memory through the create
 * op, opened writable with an optional raw backing image in memory, and a
 * device that stops writing after a given number of writes (a simulated crash).
 */

import { MemoryDevice, type BlockDevice } from '../../src/core/device.js';
import type { ImageHost } from '../../src/core/image.js';
import { RawImage } from '../../formats/raw/index.js';
import { openQcow2, type Qcow2Image } from '../../formats/qcow2/index.js';
import { createImage } from '../../src/ops/create.js';
import { nodeCodecs } from '../../src/node/codecs.js';
import { FileDevice } from '../../src/node/file-device.js';

/** Name the backing file gets inside test images (a raw file next to the image). */
export const WRITER_BACKING_NAME = 'backing.raw';

/** A host whose backing image is `backing` (raw, in memory). */
export function writerTestHost(backing?: Uint8Array): ImageHost {
  return {
    codecs: nodeCodecs,
    warn: () => {},
    openBacking: async () => new RawImage(new MemoryDevice(backing ?? new Uint8Array(0), { writable: false, name: WRITER_BACKING_NAME })),
  };
}

/** Creates a qcow2 image in memory with `-o` options (and a raw backing file when `backing` is given). */
export async function createQcow2InMemory(size: number, options: Record<string, string>, backing?: Uint8Array): Promise<MemoryDevice> {
  const device = new MemoryDevice(0, { name: 'test.qcow2' });
  await createImage(device, {
    format: 'qcow2',
    size,
    options: new Map(Object.entries(options)),
    ...(backing ? { backingFile: WRITER_BACKING_NAME, backingFormat: 'raw', unsafe: true } : {}),
  });
  return device;
}

/** Opens a qcow2 image on `device` for writing. */
export function openWritable(device: BlockDevice, backing?: Uint8Array): Promise<Qcow2Image> {
  return openQcow2(device, { host: writerTestHost(backing), writable: true });
}

/** Opens a qcow2 image on `device` read-only. */
export function openReadOnly(device: BlockDevice, backing?: Uint8Array): Promise<Qcow2Image> {
  return openQcow2(device, { host: writerTestHost(backing) });
}

/**
 * A memory device that loses power after `budget` writes: the writer goes on
 * reading back everything it wrote (as from the page cache), while
 * `contents()`, the disk, keeps only the first `budget` writes and truncates.
 */
export class CrashingDevice extends MemoryDevice {
  writes = 0;
  private readonly disk: MemoryDevice;

  constructor(initial: Uint8Array, private readonly budget: number) {
    super(initial.slice(), { name: 'crashing.qcow2' });
    this.disk = new MemoryDevice(initial.slice(), { name: 'crashing.qcow2' });
  }

  override async write(offset: number, data: Uint8Array): Promise<void> {
    await super.write(offset, data);
    if (++this.writes <= this.budget) await this.disk.write(offset, data);
  }

  override async truncate(size: number): Promise<void> {
    await super.truncate(size);
    if (++this.writes <= this.budget) await this.disk.truncate(size);
  }

  /** What reached the disk before power failed. */
  override contents(): Uint8Array {
    return this.disk.contents();
  }
}

/** A qcow2 image in memory with an external data file (also in memory) named `data.raw`. */
export async function createQcow2WithDataFile(size: number, options: Record<string, string>): Promise<{ device: MemoryDevice; data: MemoryDevice }> {
  const device = new MemoryDevice(0, { name: 'test.qcow2' });
  const data = new MemoryDevice(0, { name: 'data.raw' });
  await createImage(device, {
    format: 'qcow2',
    size,
    options: new Map(Object.entries({ ...options, data_file: 'data.raw' })),
    createDataFile: async (_name, dataSize) => data.truncate(dataSize),
  });
  return { device, data };
}

/** Opens a qcow2 image whose external data file is `data`. */
export function openWithDataFile(device: BlockDevice, data: MemoryDevice, writable: boolean): Promise<Qcow2Image> {
  const host: ImageHost = { ...writerTestHost(), openNamedFile: async () => data };
  return openQcow2(device, { host, writable });
}

/**
 * Leaves the enabled bitmaps of the qcow2 file at `path` in use, as a writer
 * that stopped before closing the image leaves them (qemu killed, power lost):
 * one sector is written back as it was, and only the file is closed.
 */
export async function leaveBitmapsInUse(path: string): Promise<void> {
  const device = await FileDevice.open(path, { writable: true });
  const image = await openQcow2(device, { host: writerTestHost(), writable: true });
  await image.write(0, await image.read(0, 512));
  await device.close();
}
