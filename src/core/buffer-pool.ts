/**
 * Spare buffers for work that needs a buffer for a moment, many times over
 * (a read's compressed streams, a batch sent to a thread). A buffer that is
 * dropped instead of reused stays in memory until V8 next collects, and at a
 * few hundred KiB per read that garbage adds tens of MiB to peak memory.
 */

/** Shared memory where the runtime has it (browsers only when cross-origin isolated). */
const SharedBuffer = (globalThis as { SharedArrayBuffer?: SharedArrayBufferConstructor }).SharedArrayBuffer;

/** True for a SharedArrayBuffer. */
export function isShared(buffer: ArrayBufferLike): buffer is SharedArrayBuffer {
  return SharedBuffer !== undefined && buffer instanceof SharedBuffer;
}

/** How a pool makes its buffers. */
export interface BufferPoolOptions {
  /** Spare buffers kept at most (the rest are dropped). */
  keep: number;
  /** Bytes of a new buffer at least, so that one serves later requests of about the same size. */
  minimum: number;
  /** Make SharedArrayBuffers where the runtime has them, so other threads can use the bytes in place. */
  shared?: boolean;
}

export class BufferPool {
  private readonly spares: ArrayBufferLike[] = [];

  constructor(private readonly options: BufferPoolOptions) {}

  /** A buffer of at least `length` bytes: a spare when one is big enough, else a new one (an empty one for 0). */
  take(length: number): ArrayBufferLike {
    if (length === 0) return new ArrayBuffer(0);
    const index = this.spares.findIndex((buffer) => buffer.byteLength >= length);
    if (index >= 0) return this.spares.splice(index, 1)[0]!;
    const size = Math.max(length, this.options.minimum);
    return this.options.shared && SharedBuffer ? new SharedBuffer(size) : new ArrayBuffer(size);
  }

  /** Hands a buffer back; the giver must no longer use it. */
  give(buffer: ArrayBufferLike): void {
    if (buffer.byteLength > 0 && this.spares.length < this.options.keep) this.spares.push(buffer);
  }
}
