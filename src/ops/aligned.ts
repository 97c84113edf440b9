/**
 * Page-aligned buffers for bulk I/O. The kernel copies to and from a user
 * buffer several times faster when it is page-aligned, and ordinary
 * ArrayBuffers are only 16-byte aligned (they come from malloc). A WebAssembly
 * memory is mapped by the runtime on page boundaries, so buffers cut from one
 * at 4 KiB multiples are aligned, in every runtime that has WebAssembly.
 */

/** WebAssembly memories grow in pages of 64 KiB. */
const WASM_PAGE = 64 * 1024;

/** The part of the WebAssembly API used here (core is built without DOM typings). */
interface WasmMemoryConstructor {
  new (descriptor: { initial: number; maximum?: number; shared?: boolean }): { buffer: ArrayBufferLike };
}

const WasmMemory = (globalThis as { WebAssembly?: { Memory?: WasmMemoryConstructor } }).WebAssembly?.Memory;

/** How a buffer may be used. */
export interface AlignedBufferOptions {
  /**
   * Backed by shared memory where the runtime allows (a SharedArrayBuffer), so
   * that codec threads can write into it directly. Only for buffers that go
   * to I/O and codecs: some APIs (TextDecoder) refuse shared memory.
   */
  shared?: boolean;
}

/** A zero-filled buffer of `size` bytes whose first byte sits on a page boundary where the runtime allows. */
export function alignedBuffer(size: number, options: AlignedBufferOptions = {}): Uint8Array {
  if (size > 0 && WasmMemory) {
    const pages = Math.ceil(size / WASM_PAGE);
    const attempts = options.shared ? [{ initial: pages, maximum: pages, shared: true }, { initial: pages }] : [{ initial: pages }];
    for (const descriptor of attempts) {
      try {
        return new Uint8Array(new WasmMemory(descriptor).buffer, 0, size);
      } catch {
        // Next: unshared memory, then an ordinary buffer (slower to copy, just as correct).
      }
    }
  }
  return new Uint8Array(size);
}
