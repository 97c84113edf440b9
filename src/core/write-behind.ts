/**
 * Write-behind over another device: writes are held in memory and reach the
 * device later, merged. For the metadata of an image being filled by convert
 * (qemu-img's cache=unsafe): hundreds of small table updates become a few
 * writes at the end, instead of each costing a round trip and contending
 * with the data writes for the file.
 */

import { readFully, type BlockDevice } from './device.js';
import { IoError } from './errors.js';
import { MAX_WRITE_BEHIND_BYTES } from './limits.js';

/**
 * What holding one write costs beside its bytes (the record, the array and its
 * buffer): counted against the bound, so that many small table writes (an
 * image of 512-byte clusters makes thousands per second) stay within it too.
 */
const HELD_WRITE_OVERHEAD = 256;

/** One held write, with its place in the order writes were made. */
export interface HeldWrite {
  offset: number;
  data: Uint8Array;
  order: number;
}

/**
 * A device whose `write` holds the bytes (the caller hands them over and must
 * not change them afterwards) until the next read, truncate, flush or close,
 * or until MAX_WRITE_BEHIND_BYTES are held. Then the held writes land,
 * overlapping and touching ones merged into one write, later bytes winning.
 */
export class WriteBehindDevice implements BlockDevice {
  private held: HeldWrite[] = [];
  private heldBytes = 0;
  /** End of the furthest write made: the device's size once the writes land (kept while they land). */
  private heldEnd = 0;
  private landing: Promise<void> = Promise.resolve();

  constructor(private readonly inner: BlockDevice) {}

  get name(): string {
    return this.inner.name;
  }

  get writable(): boolean {
    return this.inner.writable;
  }

  get size(): number {
    return Math.max(this.inner.size, this.heldEnd);
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    await this.drain();
    return this.inner.read(offset, length);
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    await this.drain();
    await readFully(this.inner, offset, target);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (!this.inner.write) throw new IoError(`${this.name} cannot be written`);
    this.held.push({ offset, data, order: this.held.length });
    this.heldBytes += data.length + HELD_WRITE_OVERHEAD;
    this.heldEnd = Math.max(this.heldEnd, offset + data.length);
    if (this.heldBytes > MAX_WRITE_BEHIND_BYTES) await this.drain();
  }

  async truncate(size: number): Promise<void> {
    if (!this.inner.truncate) throw new IoError(`${this.name} cannot be resized`);
    await this.drain();
    await this.inner.truncate(size);
    this.heldEnd = Math.min(this.heldEnd, size);
  }

  async flush(): Promise<void> {
    await this.drain();
    await this.inner.flush?.();
  }

  async allocatedBytes(): Promise<number | undefined> {
    await this.drain();
    return this.inner.allocatedBytes?.();
  }

  /** Writes everything held, merged; resolves once it has landed. */
  drain(): Promise<void> {
    const writes = this.held;
    this.held = [];
    this.heldBytes = 0;
    // Drains run one after another, so a later drain never overtakes an earlier one.
    this.landing = this.landing.then(() => this.land(writes));
    return this.landing;
  }

  /** Lands what is held, then closes the device under it. */
  async close(): Promise<void> {
    try {
      await this.drain();
    } finally {
      await this.inner.close();
    }
  }

  private async land(writes: HeldWrite[]): Promise<void> {
    for (const { offset, data } of mergeWrites(writes)) await this.inner.write!(offset, data);
  }
}

/**
 * Merges writes that overlap or touch into one write each, applying them in
 * the order they were made so the latest bytes win. Returns them by offset.
 */
export function mergeWrites(writes: HeldWrite[]): Array<{ offset: number; data: Uint8Array }> {
  const sorted = [...writes].sort((a, b) => a.offset - b.offset || a.order - b.order);
  const groups: Array<{ start: number; end: number; writes: HeldWrite[] }> = [];
  for (const write of sorted) {
    const end = write.offset + write.data.length;
    const last = groups[groups.length - 1];
    if (last && write.offset <= last.end) {
      last.writes.push(write);
      last.end = Math.max(last.end, end);
    } else {
      groups.push({ start: write.offset, end, writes: [write] });
    }
  }
  return groups.map(({ start, end, writes: group }) => {
    if (group.length === 1) return { offset: start, data: group[0]!.data };
    const data = new Uint8Array(end - start);
    for (const write of group.sort((a, b) => a.order - b.order)) data.set(write.data, write.offset - start);
    return { offset: start, data };
  });
}
