/**
 * A one-shot zstd frame decoder over the WebAssembly libzstd package. It keeps
 * one decompression context and one input and one output buffer inside the
 * WebAssembly heap, grown to the largest frame seen, so a cluster costs one
 * copy in and one copy out, and nothing is allocated per call.
 *
 * `loadZstdDecoder` is also the source of the decoder threads (see
 * decode-threads.ts), so it must stay self-contained: no imports, no helpers
 * from outside its own body, and modules loaded only through `load`.
 */

/** Decodes one whole frame into `output`; returns the bytes written, or throws an Error naming libzstd's error code. */
export interface ZstdDecoder {
  decode(input: Uint8Array, output: Uint8Array): number;
}

/** What a decoder thread is told: where the package is. */
export interface ZstdDecoderSource {
  packagePath: string;
}

/** The parts of the package's emscripten runtime the lean path uses. */
interface ZstdRuntime {
  HEAPU8: Uint8Array;
  _malloc(size: number): number;
  _free(pointer: number): void;
  _ZSTD_createDCtx(): number;
  _ZSTD_isError(code: number): number;
  _ZSTD_decompress_usingDict(
    context: number,
    output: number,
    outputCapacity: number,
    input: number,
    inputLength: number,
    dictionary: number,
    dictionaryLength: number,
  ): number;
}

/** The package's public API, used when its runtime is not where this version keeps it. */
interface ZstdPackage {
  init(): Promise<void>;
  createDCtx(): number;
  decompressUsingDict(context: number, input: Uint8Array, dictionary: Uint8Array, options: { defaultHeapSize: number }): Uint8Array;
}

/**
 * Loads the package at `source.packagePath` with `load` (a `require`) and
 * returns a decoder. The package's own `decompress` allocates and copies a
 * fresh buffer per call (about 15% of the time on 64 KiB clusters); its
 * emscripten runtime, a sibling module of the entry point, allows the lean
 * path. When that module is missing or has changed shape, the public API is used.
 */
export async function loadZstdDecoder(load: (path: string) => unknown, source: ZstdDecoderSource): Promise<ZstdDecoder> {
  const zstd = load(source.packagePath) as ZstdPackage;
  await zstd.init();
  let runtime: ZstdRuntime | undefined;
  try {
    runtime = (load(source.packagePath.replace(/index\.node\.js$/, 'module.js')) as { Module?: ZstdRuntime }).Module;
  } catch {
    runtime = undefined;
  }
  const lean =
    runtime !== undefined &&
    ['_malloc', '_free', '_ZSTD_createDCtx', '_ZSTD_isError', '_ZSTD_decompress_usingDict'].every(
      (name) => typeof (runtime as unknown as Record<string, unknown>)[name] === 'function',
    );
  if (!lean || !runtime) {
    const context = zstd.createDCtx();
    const noDictionary = new Uint8Array(0);
    return {
      decode(input, output) {
        const decoded = zstd.decompressUsingDict(context, input, noDictionary, { defaultHeapSize: output.length });
        if (decoded.length > output.length) throw new Error(`the frame decodes to more than ${output.length} bytes`);
        output.set(decoded);
        return decoded.length;
      },
    };
  }
  const heap = runtime;
  const context = heap._ZSTD_createDCtx();
  let inputAt = 0;
  let inputCapacity = 0;
  let outputAt = 0;
  let outputCapacity = 0;
  return {
    decode(input, output) {
      if (input.length > inputCapacity) {
        if (inputAt) heap._free(inputAt);
        inputCapacity = input.length;
        inputAt = heap._malloc(inputCapacity);
      }
      if (output.length > outputCapacity) {
        if (outputAt) heap._free(outputAt);
        outputCapacity = output.length;
        outputAt = heap._malloc(outputCapacity);
      }
      if (!inputAt || !outputAt) {
        inputCapacity = outputCapacity = 0;
        throw new Error('the WebAssembly heap is full');
      }
      // HEAPU8 is read after malloc: a heap that grew has a new view.
      heap.HEAPU8.set(input, inputAt);
      const result = heap._ZSTD_decompress_usingDict(context, outputAt, output.length, inputAt, input.length, 0, 0);
      if (heap._ZSTD_isError(result)) throw new Error(`libzstd error ${-result}`);
      const length = result >>> 0;
      output.set(heap.HEAPU8.subarray(outputAt, outputAt + length));
      return length;
    },
  };
}
