/**
 * One-shot zstd frames over the WebAssembly libzstd package: decoding
 * clusters, and encoding them for convert -c. It keeps one context of each
 * kind and one input and one output buffer inside the WebAssembly heap, grown
 * to the largest frame seen, so a cluster costs one copy in and one copy out,
 * and nothing is allocated per call.
 *
 * `loadZstdCodec` is also the source of the codec threads (see
 * codec-threads.ts), so it must stay self-contained: no imports, no helpers
 * from outside its own body, and modules loaded only through `load`.
 */

/** Whole zstd frames in and out; each returns the bytes written, or throws an Error naming libzstd's error code. */
export interface ZstdCodec {
  /** Decodes one whole frame into `output`. */
  decode(input: Uint8Array, output: Uint8Array): number;
  /** Encodes `input` as one frame at `level` into `output` (too small an output is an error). */
  encode(input: Uint8Array, output: Uint8Array, level: number): number;
}

/** A compiled WebAssembly module, opaque here (the build has no DOM typings, where WebAssembly's are). */
export interface WasmModule {
  readonly __brand?: 'WebAssembly.Module';
}

/** An instance's exports, as emscripten's runtime takes them. */
type WasmExports = Record<string, unknown>;

/** The parts of the WebAssembly API used here. */
export interface WasmApi {
  compile(bytes: Uint8Array): Promise<WasmModule>;
  Instance: new (module: WasmModule, imports: object) => { exports: WasmExports };
}

/** What a codec thread is told: where the package is, and its WebAssembly compiled once for every thread. */
export interface ZstdCodecSource {
  /** '' when the package is not installed. */
  packagePath: string;
  /**
   * The package's zstd.wasm, compiled: each thread then instantiates it
   * without compiling it again (and without the package's own loader, which
   * reads the file through node:fs/promises, slow to load on every thread).
   */
  module?: WasmModule;
}

/** libzstd's one-shot calls with a dictionary, over heap addresses; `extra` is what follows the dictionary. */
type OneShotCall<Extra extends unknown[]> = (
  context: number,
  output: number,
  outputCapacity: number,
  input: number,
  inputLength: number,
  dictionary: number,
  dictionaryLength: number,
  ...extra: Extra
) => number;

/** The parts of the package's emscripten runtime the lean path uses. */
interface ZstdRuntime {
  HEAPU8: Uint8Array;
  /** Starts the runtime; emscripten calls `instantiateWasm`, when set, instead of compiling the file it was given. */
  init(file?: Uint8Array): void;
  /** Set once the runtime has started. */
  calledRun?: boolean;
  instantiateWasm?(imports: object, receive: (instance: { exports: WasmExports }) => void): WasmExports;
  _malloc(size: number): number;
  _free(pointer: number): void;
  _ZSTD_createDCtx(): number;
  _ZSTD_createCCtx(): number;
  _ZSTD_isError(code: number): number;
  _ZSTD_decompress_usingDict: OneShotCall<[]>;
  _ZSTD_compress_usingDict: OneShotCall<[level: number]>;
}

/** The package's public API, used when its runtime is not where this version keeps it. */
interface ZstdPackage {
  init(): Promise<void>;
  createDCtx(): number;
  createCCtx(): number;
  decompressUsingDict(context: number, input: Uint8Array, dictionary: Uint8Array, options: { defaultHeapSize: number }): Uint8Array;
  compressUsingDict(context: number, input: Uint8Array, dictionary: Uint8Array, level: number): Uint8Array;
}

/**
 * Loads the package at `source.packagePath` with `load` (a `require`) and
 * returns a codec. The package's own calls allocate and copy fresh buffers per
 * call (about 15% of the time of decoding 64 KiB clusters); its emscripten
 * runtime, a sibling module of the entry point, allows the lean path. When
 * that module is missing or has changed shape, the public API is used. Given
 * `source.module`, the runtime starts on it without the package's own loader.
 */
export async function loadZstdCodec(load: (path: string) => unknown, source: ZstdCodecSource): Promise<ZstdCodec> {
  if (source.packagePath === '') throw new Error('the package is not installed');

  /**
   * The package's emscripten runtime at `runtimePath`, started (once per thread)
   * on `compiled` through emscripten's hook for WebAssembly that comes from
   * elsewhere; undefined when the runtime cannot be loaded. A runtime that
   * loads but fails to start throws: it cannot be started again.
   */
  function startRuntime(runtimePath: string, compiled: WasmModule): ZstdRuntime | undefined {
    let runtime: ZstdRuntime;
    try {
      runtime = (load(runtimePath) as { Module: ZstdRuntime }).Module;
      if (typeof runtime?.init !== 'function') return undefined;
    } catch {
      return undefined;
    }
    // Started once: starting it again would pull the heap from under the codecs made before.
    if (runtime.calledRun) return runtime;
    let failure: unknown;
    runtime.instantiateWasm = (imports, receive) => {
      try {
        const instance = new (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly.Instance(compiled, imports);
        receive(instance);
        return instance.exports;
      } catch (error) {
        // Thrown out of the hook, emscripten would print it and wait forever.
        failure = error;
        return {};
      }
    };
    runtime.init();
    // The hook is synchronous: a runtime that has not started now never will.
    if (!runtime.calledRun) throw new Error(`libzstd did not start: ${failure instanceof Error ? failure.message : String(failure)}`);
    return runtime;
  }

  /** The package's runtime at `runtimePath` when it has been started on this thread already. */
  function startedRuntime(runtimePath: string): ZstdRuntime | undefined {
    try {
      const started = (load(runtimePath) as { Module?: ZstdRuntime }).Module;
      return started?.calledRun ? started : undefined;
    } catch {
      return undefined;
    }
  }

  const runtimePath = source.packagePath.replace(/index\.node\.js$/, 'module.js');
  let runtime: ZstdRuntime | undefined;
  if (source.module && runtimePath !== source.packagePath) runtime = startRuntime(runtimePath, source.module);
  // A runtime this thread started already is used as it is: the package's init would start it again
  // on a new heap, under the codecs made before (whose calls stay bound to the old one).
  runtime ??= startedRuntime(runtimePath);
  let zstd: ZstdPackage | undefined;
  if (!runtime) {
    zstd = load(source.packagePath) as ZstdPackage;
    await zstd.init();
    try {
      runtime = (load(runtimePath) as { Module?: ZstdRuntime }).Module;
    } catch {
      runtime = undefined;
    }
  }
  const lean =
    runtime !== undefined &&
    ['_malloc', '_free', '_ZSTD_createDCtx', '_ZSTD_createCCtx', '_ZSTD_isError', '_ZSTD_decompress_usingDict', '_ZSTD_compress_usingDict'].every(
      (name) => typeof (runtime as unknown as Record<string, unknown>)[name] === 'function',
    );
  if (!lean || !runtime) {
    const api = (zstd ??= load(source.packagePath) as ZstdPackage);
    const noDictionary = new Uint8Array(0);
    let decoding: number | undefined;
    let encoding: number | undefined;
    const deliver = (bytes: Uint8Array, output: Uint8Array, what: string) => {
      if (bytes.length > output.length) throw new Error(`the ${what} is more than ${output.length} bytes`);
      output.set(bytes);
      return bytes.length;
    };
    return {
      decode(input, output) {
        decoding ??= api.createDCtx();
        return deliver(api.decompressUsingDict(decoding, input, noDictionary, { defaultHeapSize: output.length }), output, 'decoded frame');
      },
      encode(input, output, level) {
        encoding ??= api.createCCtx();
        return deliver(api.compressUsingDict(encoding, input, noDictionary, level), output, 'encoded frame');
      },
    };
  }
  const heap = runtime;
  let decoding: number | undefined;
  let encoding: number | undefined;
  let inputAt = 0;
  let inputCapacity = 0;
  let outputAt = 0;
  let outputCapacity = 0;
  /**
   * Room in the heap for `input` and an output of `outputLength`, with the
   * input copied in; returns the input's heap address. The copy lands at the
   * same offset modulo 8 as the input has in its buffer: from shared memory
   * (where the reader keeps compressed streams, at any byte offset) V8 copies
   * word by word only between equally aligned addresses, else byte by byte,
   * five to seven times slower (a fifth of a codec thread's time on zstd
   * clusters, which start anywhere).
   */
  const stage = (input: Uint8Array, outputLength: number) => {
    const skew = input.byteOffset & 7;
    if (input.length + skew > inputCapacity) {
      if (inputAt) heap._free(inputAt);
      inputCapacity = input.length + 7;
      inputAt = heap._malloc(inputCapacity);
    }
    if (outputLength > outputCapacity) {
      if (outputAt) heap._free(outputAt);
      outputCapacity = outputLength;
      outputAt = heap._malloc(outputCapacity);
    }
    if (!inputAt || !outputAt) {
      inputCapacity = outputCapacity = 0;
      throw new Error('the WebAssembly heap is full');
    }
    // malloc's addresses are 8-aligned; HEAPU8 is read after malloc: a heap that grew has a new view.
    const at = inputAt + skew;
    heap.HEAPU8.set(input, at);
    return at;
  };
  /** Copies a result of libzstd out of the heap, or throws its error. */
  const deliver = (result: number, output: Uint8Array) => {
    if (heap._ZSTD_isError(result)) throw new Error(`libzstd error ${-result}`);
    const length = result >>> 0;
    output.set(heap.HEAPU8.subarray(outputAt, outputAt + length));
    return length;
  };
  return {
    decode(input, output) {
      decoding ??= heap._ZSTD_createDCtx();
      const at = stage(input, output.length);
      return deliver(heap._ZSTD_decompress_usingDict(decoding, outputAt, output.length, at, input.length, 0, 0), output);
    },
    encode(input, output, level) {
      encoding ??= heap._ZSTD_createCCtx();
      const at = stage(input, output.length);
      return deliver(heap._ZSTD_compress_usingDict(encoding, outputAt, output.length, at, input.length, 0, 0, level), output);
    },
  };
}

