/**
 * Decoding compressed clusters on worker threads, deflate and zstd alike, and
 * encoding zstd clusters for convert -c (deflate compresses on the libuv
 * pool). qcow2 makes every compressed cluster its own stream, so clusters
 * decode and encode independently on every core while the main thread reads
 * and writes. On the main thread each deflate cluster costs a round trip to
 * the libuv pool, a fresh output buffer and a copy out of it, which together
 * cost about half as much CPU time as the inflate itself; zstd's libzstd in
 * WebAssembly runs at about half of native speed and would hold the main thread.
 *
 * The clusters asked for in one turn of the event loop (the clusters of one
 * guest read) travel to a thread as one message, a batch, and come back
 * together: a message per cluster would cost as much as decoding it. Bytes
 * travel in shared memory, never in the messages: a thread reads each stream
 * where the caller keeps it and decodes into the caller's buffer when those
 * are SharedArrayBuffers (the qcow2 reader's and convert's are), else through
 * batch buffers of the pool's own, copied here.
 *
 * Threads start on first use of zstd (unless the job is small: SMALL_JOB_BYTES),
 * or once the main thread has inflated DEFLATE_HERE_BEFORE_THREADS bytes, in
 * the background, ready for deflate at once; each loads libzstd only when the
 * first zstd cluster is met. Until a thread is ready for a codec, batches of it
 * run on the main thread (deflate in place, synchronously, as on the threads),
 * so a short read never waits for a thread to boot. Idle threads do not keep
 * the process alive.
 */

import { readFile } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import { BufferPool, isShared } from '../core/buffer-pool.js';
import { IoError, UnsupportedFeatureError } from '../core/errors.js';
import { nodeWorkerThreads, nodeZlib } from './builtins.js';
import { call } from './file-device.js';
import { makeSyncInflater, type SyncInflater } from './inflate-sync.js';
import { loadZstdCodec, type WasmApi, type WasmModule, type ZstdCodec, type ZstdCodecSource } from './zstd-codec.js';

/** Codec threads at most, whatever the core count: past this the main thread's writes are the limit. */
const MAX_CODEC_THREADS = 4;
/**
 * Output bytes per batch: enough to amortise a message, small enough that
 * every thread gets work from one 2 MiB read (1 MiB measured a little faster
 * than 512 KiB on two cores, 256 KiB slower).
 */
const BATCH_OUTPUT_BYTES = 1024 * 1024;
/** Spare batch buffers kept for reuse, per thread. */
const SPARE_BUFFERS_PER_THREAD = 4;
/**
 * Deflate output decoded on the main thread before the threads start: two
 * Node threads cost about 40 ms of CPU time to boot, more than a small image
 * takes to inflate here (32 MiB of clusters: 24 ms), so an image up to this
 * size never starts them. Measured on a 2-core VM (medians of 9-11 alternating
 * runs): 32 MiB of zlib clusters to raw 118 ms with the threads started at
 * the first cluster, 78 ms with this; 512 MiB 362-374 ms either way.
 */
const DEFLATE_HERE_BEFORE_THREADS = 48 * 1024 * 1024;
/**
 * A job that can decode no more than this (its sources' virtual size says so)
 * never starts the threads for zstd either. zstd starts them at its first
 * cluster, where deflate waits until DEFLATE_HERE_BEFORE_THREADS: libzstd runs
 * in WebAssembly, at first in V8's baseline code, so a large image needs the
 * threads booting while the main thread begins (waiting 48 MiB made 128 and
 * 512 MiB images about 20 ms slower); a small one is done before they are up.
 * Medians of 7 alternating runs on a 2-core VM, 32 MiB of zstd clusters to
 * raw: 160 ms with the threads, 114 ms without (qemu-img 46 ms).
 */
const SMALL_JOB_BYTES = 48 * 1024 * 1024;

/** The compressions a thread knows: raw deflate (qcow2's zlib type) and zstd frames. */
export type Codec = 'deflate' | 'zstd';

/** What a thread does to one stream: inflate it, decode a zstd frame, or encode one. */
type Work = Codec | 'zstd-encode';

/** The library `work` needs on the thread. */
function codecOf(work: Work): Codec {
  return work === 'deflate' ? 'deflate' : 'zstd';
}

/** zstd's default level, the one qemu's qcow2 compression uses. */
export const ZSTD_LEVEL = 3;

/** One stream to decode (or encode) into `output`. */
interface CodecJob {
  work: Work;
  input: Uint8Array;
  output: Uint8Array;
  resolve(length: number): void;
  reject(error: Error): void;
}

/** Bytes in shared memory. */
interface SharedPlace {
  buffer: SharedArrayBuffer;
  offset: number;
  length: number;
}

/** What goes to a thread: a batch (its work, where each stream is and where its output goes), or a request to load libzstd. */
type ThreadRequest = { id: number; work: Work; inputs: SharedPlace[]; outputs: SharedPlace[] } | { warm: 'zstd'; module?: WasmModule };

/** Why a stream did not decode: the decoder's message, and node:zlib's error code when it gave one. */
interface StreamError {
  message: string;
  code?: string;
}

/** What comes back for a batch: per stream, the bytes it decoded to or why it did not. */
interface BatchReply {
  id: number;
  lengths: number[];
  errors: (StreamError | null)[];
}

/** A thread's messages: ready for a codec, failed to load one, or a finished batch. */
type ThreadMessage = { ready: Codec } | { failed: Codec; message: string } | BatchReply;

/** The body of a codec thread; self-contained, it runs from its source text. */
function codecThreadMain(
  load: (path: string) => unknown,
  threads: typeof import('node:worker_threads'),
  loadZstd: typeof loadZstdCodec,
  makeInflater: () => SyncInflater,
  zstdLevel: number,
): void {
  const port = threads.parentPort!;
  const view = (place: SharedPlace) => new Uint8Array(place.buffer, place.offset, place.length);
  const messageOf = (error: unknown) => (error instanceof Error ? error.message : String(error));
  let zstd: ZstdCodec | undefined;
  // Made at the first deflate stream: node:zlib and the stream modules it loads cost a thread that only meets zstd about 10 ms.
  let inflater: SyncInflater | undefined;
  port.on('message', (request: ThreadRequest) => {
    if ('warm' in request) {
      loadZstd(load, { ...(threads.workerData as ZstdCodecSource), module: request.module }).then(
        (codec) => {
          zstd = codec;
          port.postMessage({ ready: 'zstd' });
        },
        (error: unknown) => port.postMessage({ failed: 'zstd', message: messageOf(error) }),
      );
      return;
    }
    const lengths: number[] = [];
    const errors: (StreamError | null)[] = [];
    request.inputs.forEach((input, index) => {
      try {
        const output = view(request.outputs[index]!);
        if (request.work === 'deflate') lengths.push((inflater ??= makeInflater()).inflate(view(input), output));
        else if (!zstd) throw new Error('libzstd is not loaded on this thread');
        else if (request.work === 'zstd') lengths.push(zstd.decode(view(input), output));
        else lengths.push(zstd.encode(view(input), output, zstdLevel));
        errors.push(null);
      } catch (error) {
        lengths.push(0);
        const code = (error as { code?: unknown }).code;
        errors.push({ message: messageOf(error), ...(typeof code === 'string' ? { code } : {}) });
      }
    });
    const reply: BatchReply = { id: request.id, lengths, errors };
    port.postMessage(reply);
  });
  port.postMessage({ ready: 'deflate' });
}

/** A batch in flight: its jobs, and the pool buffers that stand in for unshared inputs and outputs. */
interface Batch {
  jobs: CodecJob[];
  input?: SharedArrayBuffer;
  output?: SharedArrayBuffer;
}

/** Where a thread is with one codec: ready, on its way, or out (never asked, failed, or the thread lost). */
interface CodecState {
  ready: boolean;
  /** Resolves when the codec is ready or will not be. */
  settled: Promise<void>;
  settle(): void;
}

/** A codec thread and the batches it holds. */
interface CodecThread {
  worker: Worker;
  codecs: Partial<Record<Codec, CodecState>>;
  /** Streams sent and not yet back. */
  load: number;
  batches: Map<number, Batch>;
}

function codecState(): CodecState {
  let settle!: () => void;
  const settled = new Promise<void>((resolve) => (settle = resolve));
  return { ready: false, settled, settle };
}

/** Error from a thread's reply, with node:zlib's code kept so the caller can tell a too-long stream from a bad one. */
function streamError(error: StreamError): Error {
  return Object.assign(new Error(error.message), error.code === undefined ? {} : { code: error.code });
}

/** Decodes (and zstd-encodes) streams on a few threads, or here until they are up. */
export class CodecThreads {
  private queue: CodecJob[] = [];
  private threads: CodecThread[] | undefined;
  private localZstd: Promise<ZstdCodec> | undefined;
  private zstdModule: Promise<WasmModule | undefined> | undefined;
  private readonly spares: BufferPool;
  private nextId = 0;
  /** Deflate output bytes decoded on this thread so far. */
  private deflatedHere = 0;
  private localInflater: SyncInflater | undefined;

  constructor(
    private readonly source: ZstdCodecSource,
    private readonly threadCount: number,
  ) {
    this.spares = new BufferPool({ keep: 2 * SPARE_BUFFERS_PER_THREAD * threadCount, minimum: BATCH_OUTPUT_BYTES, shared: true });
  }

  /** Starts the threads (if not yet) and resolves, with how many are ready for `codec`, once each is ready or out. */
  async start(codec: Codec): Promise<number> {
    this.startThreads();
    const threads = this.threads!;
    for (const thread of threads) this.warm(thread, codec);
    await Promise.all(threads.map((thread) => thread.codecs[codec]!.settled));
    return threads.filter((thread) => thread.codecs[codec]!.ready).length;
  }

  /**
   * Decodes one whole stream into `output`; resolves with the bytes written. A
   * bad stream rejects with the decoder's message (and node:zlib's code); a
   * lost thread rejects what it held with an I/O error.
   */
  decode(codec: Codec, input: Uint8Array, output: Uint8Array): Promise<number> {
    return this.enqueue(codec, input, output);
  }

  /**
   * Encodes `input` as one zstd frame (at qemu's level) into `output`;
   * resolves with the bytes written, and rejects when they do not fit.
   */
  encode(codec: 'zstd', input: Uint8Array, output: Uint8Array): Promise<number> {
    return this.enqueue(`${codec}-encode`, input, output);
  }

  private enqueue(work: Work, input: Uint8Array, output: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) queueMicrotask(() => this.flush());
      this.queue.push({ work, input, output, resolve, reject });
    });
  }

  /** Sends what was asked for in this turn, cut into batches of one kind of work, each to the least busy thread ready for it. */
  private flush(): void {
    const jobs = this.queue;
    this.queue = [];
    const small = decodeBound <= SMALL_JOB_BYTES;
    if (this.deflatedHere >= DEFLATE_HERE_BEFORE_THREADS || jobs.some((job) => job.work === 'zstd-encode' || (job.work === 'zstd' && !small))) this.startThreads();
    const pending: Partial<Record<Work, { jobs: CodecJob[]; bytes: number }>> = {};
    for (const job of jobs) {
      let batch = pending[job.work];
      if (batch && batch.bytes + job.output.length > BATCH_OUTPUT_BYTES) {
        this.dispatch(job.work, batch.jobs);
        batch = undefined;
      }
      batch ??= pending[job.work] = { jobs: [], bytes: 0 };
      batch.jobs.push(job);
      batch.bytes += job.output.length;
    }
    for (const [work, batch] of Object.entries(pending) as [Work, { jobs: CodecJob[] }][]) this.dispatch(work, batch.jobs);
  }

  private dispatch(work: Work, jobs: CodecJob[]): void {
    const codec = codecOf(work);
    let best: CodecThread | undefined;
    for (const thread of this.threads ?? []) {
      this.warm(thread, codec);
      if (thread.codecs[codec]!.ready && (!best || thread.load < best.load)) best = thread;
    }
    if (best) this.send(best, work, jobs);
    else void this.workHere(work, jobs);
  }

  /** Asks `thread` to get ready for `codec`, once. */
  private warm(thread: CodecThread, codec: Codec): void {
    if (thread.codecs[codec]) return;
    thread.codecs[codec] = codecState();
    if (codec === 'zstd') void this.compiledZstd().then((module) => thread.worker.postMessage({ warm: 'zstd', module } satisfies ThreadRequest));
  }

  /**
   * libzstd's WebAssembly, compiled once for this thread and every codec
   * thread. Compiled on each of three threads sharing two cores, and loaded
   * through the package's loader (which pulls in node:fs/promises), it made
   * a zstd convert 7-13 ms slower (medians of 11 alternating runs, 32 and 512
   * MiB). Undefined when the file cannot be read or compiled here: each thread
   * then loads the package as it ships.
   */
  private compiledZstd(): Promise<WasmModule | undefined> {
    this.zstdModule ??= compileZstd(this.source.packagePath);
    return this.zstdModule;
  }

  private send(thread: CodecThread, work: Work, jobs: CodecJob[]): void {
    const batch: Batch = { jobs };
    const inputs = this.places(jobs.map((job) => job.input), (buffer) => (batch.input = buffer), true);
    const outputs = this.places(jobs.map((job) => job.output), (buffer) => (batch.output = buffer), false);
    const request: ThreadRequest = { id: this.nextId++, work, inputs, outputs };
    thread.batches.set(request.id, batch);
    if (thread.load === 0) thread.worker.ref();
    thread.load += jobs.length;
    thread.worker.postMessage(request);
  }

  /**
   * Where a thread finds (or puts) each of `views`: in place when it is shared
   * memory, else in a pool buffer (handed to `use`), filled from the views when `fill`.
   */
  private places(views: Uint8Array[], use: (buffer: SharedArrayBuffer) => void, fill: boolean): SharedPlace[] {
    const unshared = views.reduce((sum, view) => (isShared(view.buffer) ? sum : sum + view.length), 0);
    const stand = unshared > 0 ? (this.spares.take(unshared) as SharedArrayBuffer) : undefined;
    if (stand) use(stand);
    let at = 0;
    return views.map((view) => {
      if (isShared(view.buffer)) return { buffer: view.buffer, offset: view.byteOffset, length: view.length };
      if (fill) new Uint8Array(stand!, at, view.length).set(view);
      at += view.length;
      return { buffer: stand!, offset: at - view.length, length: view.length };
    });
  }

  private receive(thread: CodecThread, reply: BatchReply): void {
    const batch = thread.batches.get(reply.id);
    if (!batch) return;
    thread.batches.delete(reply.id);
    thread.load -= batch.jobs.length;
    if (thread.load === 0) thread.worker.unref();
    let at = 0;
    batch.jobs.forEach((job, index) => {
      const error = reply.errors[index];
      const length = reply.lengths[index]!;
      if (!isShared(job.output.buffer)) {
        if (!error) job.output.set(new Uint8Array(batch.output!, at, length));
        at += job.output.length;
      }
      if (error) job.reject(streamError(error));
      else job.resolve(length);
    });
    this.release(batch);
  }

  private release(batch: Batch): void {
    if (batch.input) this.spares.give(batch.input);
    if (batch.output) this.spares.give(batch.output);
  }

  /** Does a batch on the main thread: before any thread is ready for its codec, or when none can be. */
  private async workHere(work: Work, jobs: CodecJob[]): Promise<void> {
    if (work === 'deflate') {
      // In place and synchronously, as the threads inflate: a batch holds the event loop for about a millisecond.
      this.localInflater ??= makeSyncInflater(nodeZlib());
      for (const job of jobs) {
        try {
          job.resolve(this.localInflater.inflate(job.input, job.output));
        } catch (error) {
          job.reject(error as Error);
        }
        this.deflatedHere += job.output.length;
      }
      return;
    }
    let zstd: ZstdCodec;
    try {
      this.localZstd ??= this.compiledZstd().then((module) => loadZstdCodec(createRequire(import.meta.url), { ...this.source, module }));
      zstd = await this.localZstd;
    } catch (error) {
      // Not the stream's fault: say what is missing, in one line (require's message goes on with its stack).
      const reason = String((error as Error)?.message ?? error).split('\n')[0];
      const failure = new UnsupportedFeatureError(`the zstd codec (@bokuweb/zstd-wasm) could not be loaded: ${reason}`);
      for (const job of jobs) job.reject(failure);
      return;
    }
    for (const job of jobs) {
      try {
        job.resolve(work === 'zstd' ? zstd.decode(job.input, job.output) : zstd.encode(job.input, job.output, ZSTD_LEVEL));
      } catch (error) {
        job.reject(error as Error);
      }
    }
  }

  /** Starts the threads once, in the background (none without shared memory). */
  private startThreads(): void {
    if (this.threads) return;
    this.threads = [];
    if (typeof SharedArrayBuffer === 'undefined') return;
    const code = `(${codecThreadMain.toString()})(require, require('node:worker_threads'), ${loadZstdCodec.toString()}, () => (${makeSyncInflater.toString()})(require('node:zlib')), ${ZSTD_LEVEL});`;
    for (let index = 0; index < this.threadCount; index++) {
      let worker: Worker;
      try {
        worker = new (nodeWorkerThreads().Worker)(code, { eval: true, workerData: this.source });
      } catch {
        return;
      }
      const thread: CodecThread = { worker, codecs: { deflate: codecState() }, load: 0, batches: new Map() };
      this.threads.push(thread);
      worker.on('message', (message: ThreadMessage) => {
        if ('ready' in message) {
          const state = thread.codecs[message.ready]!;
          state.ready = true;
          state.settle();
        } else if ('failed' in message) thread.codecs[message.failed]!.settle();
        else this.receive(thread, message);
      });
      worker.on('error', (error) => this.lose(thread, `a codec thread failed: ${error.message}`));
      worker.on('exit', () => this.lose(thread, 'a codec thread exited'));
      // After the listeners: the first 'message' listener refs the worker's port again.
      worker.unref();
    }
  }

  /** Takes a thread out of service; what it held fails with an I/O error (the image is not at fault). */
  private lose(thread: CodecThread, reason: string): void {
    for (const state of Object.values(thread.codecs)) {
      state.ready = false;
      state.settle();
    }
    this.threads = this.threads?.filter((other) => other !== thread);
    for (const batch of thread.batches.values()) for (const job of batch.jobs) job.reject(new IoError(reason));
    thread.batches.clear();
    thread.load = 0;
    void thread.worker.terminate();
  }
}

/** Threads for this machine: one per core up to the cap; none on one core, where the main thread decodes alone. */
export function codecThreadCount(): number {
  const cores = availableParallelism();
  return cores <= 1 ? 0 : Math.min(MAX_CODEC_THREADS, cores);
}

/** The most this process will decode, when its command said (boundDecoding). */
let decodeBound = Infinity;

/**
 * Says that this process will decode at most `bytes` (the virtual size of
 * what it reads): a small job then decodes on the main thread, without
 * booting the threads.
 */
export function boundDecoding(bytes: number): void {
  decodeBound = Math.min(decodeBound, bytes);
}

let shared: CodecThreads | undefined;

/** The process's codec threads, made on first use. */
export function codecThreads(): CodecThreads {
  shared ??= new CodecThreads({ packagePath: zstdPackagePath() }, codecThreadCount());
  return shared;
}

/** The package's zstd.wasm beside its entry point, compiled; undefined when it is not there or does not compile. */
async function compileZstd(packagePath: string): Promise<WasmModule | undefined> {
  if (packagePath === '') return undefined;
  try {
    const bytes = await call<Buffer>((done) => readFile(join(dirname(packagePath), 'zstd.wasm'), done));
    return await (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly.compile(bytes);
  } catch {
    return undefined;
  }
}

/** Where @bokuweb/zstd-wasm is; '' when it is not installed (zstd then cannot load, zlib still works). */
function zstdPackagePath(): string {
  try {
    return createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm');
  } catch {
    return '';
  }
}
