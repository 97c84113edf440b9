/** A device for fuzzing: every request outside its bounds is recorded, then refused as usual. */

import type { BlockDevice, MemoryDevice } from '../../src/core/device.js';

/** Wraps a MemoryDevice; `violations` lists out-of-bounds requests. */
export class BoundsCheckingDevice implements BlockDevice {
  readonly violations: string[] = [];
  constructor(private readonly inner: MemoryDevice) {}
  get size(): number {
    return this.inner.size;
  }
  get name(): string {
    return this.inner.name;
  }
  readonly writable = false;
  read(offset: number, length: number): Promise<Uint8Array> {
    const valid = Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0;
    if (!valid || length > this.size - offset) this.violations.push(`read(${offset}, ${length}) of ${this.size}`);
    return this.inner.read(offset, length);
  }
  close(): Promise<void> {
    return this.inner.close();
  }
}

