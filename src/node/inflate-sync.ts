/**
 * Synchronous raw inflate for the codec threads, straight into the caller's
 * buffer. node:zlib's public sync call makes a new stream per call and
 * inflates into fresh buffers that it then copies out: per 64 KiB cluster, two
 * 64 KiB buffers of garbage and a stream set-up, which cost as much CPU time as
 * the inflate and tens of MiB of peak memory per thread. The stream's handle,
 * which that call drives inside, takes an output buffer and offset, so one
 * stream per thread, reset between clusters, inflates every cluster in place.
 * The handle is not public API: where it is missing, the public call is used.
 *
 * Runs from its source text inside the threads (see codec-threads.ts), so it
 * must stay self-contained: no imports, nothing from outside its own body.
 */

/** Inflates one raw deflate stream into `output`; returns the bytes written, or throws node:zlib's error. */
export interface SyncInflater {
  inflate(input: Uint8Array, output: Uint8Array): number;
}

/** The part of node:zlib's stream handle used here: one synchronous pass of inflate. */
interface InflateHandle {
  writeSync(flush: number, input: Uint8Array, inputOffset: number, inputLength: number, output: Uint8Array, outputOffset: number, outputLength: number): void;
}

/** A node:zlib stream as seen from inside: its handle and the counts the handle writes back (output room left, input left). */
interface InflateEngine {
  _handle?: InflateHandle | null;
  _writeState?: Uint32Array;
  destroyed: boolean;
  errored: Error | null;
  reset(): void;
  on(event: 'error', listener: (error: Error) => void): unknown;
}

/**
 * An inflater over `zlib` (node:zlib). Like qemu, it stops once `output` is
 * full: a stream that would go on is taken with its first `output.length`
 * bytes (the public path instead throws ERR_BUFFER_TOO_LARGE for the caller to
 * handle), and one that ends early returns fewer bytes.
 */
export function makeSyncInflater(zlib: typeof import('node:zlib')): SyncInflater {
  const flush = zlib.constants.Z_SYNC_FLUSH;
  const publicPath: SyncInflater = {
    inflate(input, output) {
      if (output.length === 0) return 0;
      // 64: node:zlib's smallest chunk (MIN_INFLATE_CHUNK in inflate.ts, which this self-contained code cannot import).
      const out = zlib.inflateRawSync(input, { finishFlush: flush, chunkSize: Math.max(64, output.length), maxOutputLength: output.length });
      output.set(out);
      return out.length;
    },
  };
  const open = (): InflateEngine | undefined => {
    const engine = zlib.createInflateRaw() as unknown as InflateEngine;
    if (typeof engine._handle?.writeSync !== 'function' || !(engine._writeState instanceof Uint32Array)) return undefined;
    // A bad stream destroys the stream with its error, which is read below; the event itself must not go unheard.
    engine.on('error', () => undefined);
    return engine;
  };
  let engine = open();
  if (!engine) return publicPath;
  return {
    inflate(input, output) {
      if (output.length === 0) return 0;
      // A stream that failed is closed for good: the next cluster gets a new one.
      if (!engine || engine.destroyed) engine = open();
      if (!engine) return publicPath.inflate(input, output);
      engine.reset();
      engine._handle!.writeSync(flush, input, 0, input.length, output, 0, output.length);
      if (engine.destroyed) throw engine.errored ?? new Error('invalid deflate stream');
      return output.length - engine._writeState![0]!;
    },
  };
}
