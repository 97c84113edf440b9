/** In-memory images for serve tests, with block status that reports holes. */

import { MemoryDevice } from '../../src/core/device.js';
import type { Extent, Image } from '../../src/core/image.js';
import { RawImage } from '../../formats/raw/index.js';

/**
 * A raw image over memory whose block status calls each `granularity`-sized
 * block 'unallocated' when it holds only zeros, else 'data' (like a sparse file).
 */
export class SparseMemoryImage extends RawImage implements Image {
  constructor(readonly memory: MemoryDevice, private readonly granularity = 4096) {
    super(memory);
  }

  override async blockStatus(offset: number, length: number): Promise<Extent[]> {
    const bytes = this.memory.contents();
    const extents: Extent[] = [];
    for (let at = offset; at < offset + length; ) {
      const blockEnd = Math.min(offset + length, (Math.floor(at / this.granularity) + 1) * this.granularity);
      const kind = bytes.subarray(at, blockEnd).some((byte) => byte !== 0) ? 'data' : 'unallocated';
      const last = extents[extents.length - 1];
      if (last && last.kind === kind) last.length += blockEnd - at;
      else extents.push({ start: at, length: blockEnd - at, kind, depth: kind === 'data' ? 0 : 1 });
      at = blockEnd;
    }
    return extents;
  }
}

/** A sparse memory image of `size` bytes with `pattern` written at each given offset. */
export function sparseImage(size: number, writes: [offset: number, pattern: Uint8Array][], options: { writable?: boolean } = {}): SparseMemoryImage {
  const memory = new MemoryDevice(size, { writable: true, name: 'memory.img' });
  const bytes = memory.contents();
  for (const [offset, pattern] of writes) bytes.set(pattern, offset);
  const image = new SparseMemoryImage(new MemoryDevice(bytes, { writable: options.writable ?? false, name: 'memory.img' }));
  return image;
}

/** `length` bytes of a repeating non-zero pattern starting at `seed`. */
export function patternBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  for (let index = 0; index < length; index++) out[index] = ((index + seed) % 251) + 1;
  return out;
}
