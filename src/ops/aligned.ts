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
  new (descriptor: { initial: number }): { buffer: ArrayBuffer };
}

const WasmMemory = (globalThis as { WebAssembly?: { Memory?: WasmMemoryConstructor } }).WebAssembly?.Memory;

/** A zero-filled buffer of `size` bytes whose first byte sits on a page boundary where the runtime allows. */
export function alignedBuffer(size: number): Uint8Array {
  if (size > 0 && WasmMemory) {
    try {
      const memory = new WasmMemory({ initial: Math.ceil(size / WASM_PAGE) });
      return new Uint8Array(memory.buffer, 0, size);
    } catch {
      // Fall through: an ordinary buffer is slower to copy but just as correct.
    }
  }
  return new Uint8Array(size);
}
