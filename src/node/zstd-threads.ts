/**
 * zstd decoding on worker threads. libzstd in WebAssembly decodes at about
 * half of native speed, and qcow2 makes every compressed cluster its own
 * frame, so clusters decode independently on every core while the main thread
 * reads and writes. The clusters asked for in one turn of the event loop (the
 * clusters of one guest read) travel to a thread as one message, a batch, and
 * come back together: a message per cluster would cost as much as decoding it.
 * Bytes travel in shared memory, never in the messages: a thread reads each
 * frame where the caller keeps it and decodes into the caller's buffer when
 * those are SharedArrayBuffers (the qcow2 reader's and convert's are), else
 * through batch buffers of the pool's own, copied here.
 *
 * Threads start on first use, in the background; until one is ready, batches
 * decode on the main thread, so a short read never waits for a thread to boot.
 * Idle threads do not keep the process alive.
 */

import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { BufferPool, isShared } from '../core/buffer-pool.js';
import { IoError } from '../core/errors.js';
import { loadZstdDecoder, type ZstdDecoder, type ZstdDecoderSource } from './zstd-decoder.js';

/** Decoder threads at most, whatever the core count: past this the main thread's writes are the limit. */
const MAX_DECODER_THREADS = 4;
/** Output bytes per batch: enough to amortise a message, small enough that every thread gets work from one read. */
const BATCH_OUTPUT_BYTES = 512 * 1024;
/** Spare batch buffers kept for reuse, per thread. */
const SPARE_BUFFERS_PER_THREAD = 4;

/** One frame to decode into `output`. */
interface DecodeJob {
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

/** What goes to a thread: where each frame is, and where its output goes. */
interface BatchRequest {
  id: number;
  inputs: SharedPlace[];
  outputs: SharedPlace[];
}

/** What comes back: per frame, the bytes it decoded to or libzstd's complaint. */
interface BatchReply {
  id: number;
  lengths: number[];
  errors: (string | null)[];
}

/** A thread's messages: ready, failed to start, or a finished batch. */
type ThreadMessage = { ready: true } | { failed: string } | BatchReply;

/** The body of a decoder thread; self-contained, it runs from its source text. */
function decoderThreadMain(
  load: (path: string) => unknown,
  threads: typeof import('node:worker_threads'),
  loadDecoder: typeof loadZstdDecoder,
): void {
  const port = threads.parentPort!;
  const view = (place: SharedPlace) => new Uint8Array(place.buffer, place.offset, place.length);
  loadDecoder(load, threads.workerData as ZstdDecoderSource).then(
    (decoder) => {
      port.on('message', (request: BatchRequest) => {
        const lengths: number[] = [];
        const errors: (string | null)[] = [];
        request.inputs.forEach((input, index) => {
          try {
            lengths.push(decoder.decode(view(input), view(request.outputs[index]!)));
            errors.push(null);
          } catch (error) {
            lengths.push(0);
            errors.push(error instanceof Error ? error.message : String(error));
          }
        });
        const reply: BatchReply = { id: request.id, lengths, errors };
        port.postMessage(reply);
      });
      port.postMessage({ ready: true });
    },
    (error: unknown) => port.postMessage({ failed: error instanceof Error ? error.message : String(error) }),
  );
}

/** A batch in flight: its jobs, and the pool buffers that stand in for unshared inputs and outputs. */
interface Batch {
  jobs: DecodeJob[];
  input?: SharedArrayBuffer;
  output?: SharedArrayBuffer;
}

/** A decoder thread and the batches it holds. */
interface DecoderThread {
  worker: Worker;
  ready: boolean;
  /** Frames sent and not yet back. */
  load: number;
  batches: Map<number, Batch>;
  /** Resolves when the thread is ready or lost. */
  settled: Promise<void>;
  settle(): void;
}

/** Decodes zstd frames on a few threads (or here, until they are up). */
export class ZstdThreads {
  private queue: DecodeJob[] = [];
  private threads: DecoderThread[] | undefined;
  private local: Promise<ZstdDecoder> | undefined;
  private readonly spares: BufferPool;
  private nextId = 0;

  constructor(
    private readonly source: ZstdDecoderSource,
    private readonly threadCount: number,
  ) {
    this.spares = new BufferPool({ keep: 2 * SPARE_BUFFERS_PER_THREAD * threadCount, minimum: BATCH_OUTPUT_BYTES, shared: true });
  }

  /** Starts the threads (if not yet) and resolves, with how many are ready, once each is ready or lost. */
  async start(): Promise<number> {
    this.startThreads();
    await Promise.all(this.threads!.map((thread) => thread.settled));
    return this.threads!.filter((thread) => thread.ready).length;
  }

  /** Decodes one whole frame into `output`; resolves with the bytes written. A bad frame rejects with libzstd's message. */
  decode(input: Uint8Array, output: Uint8Array): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.queue.length === 0) queueMicrotask(() => this.flush());
      this.queue.push({ input, output, resolve, reject });
    });
  }

  /** Sends what was asked for in this turn, cut into batches, each to the least busy ready thread. */
  private flush(): void {
    const jobs = this.queue;
    this.queue = [];
    this.startThreads();
    let batch: DecodeJob[] = [];
    let bytes = 0;
    for (const job of jobs) {
      if (batch.length > 0 && bytes + job.output.length > BATCH_OUTPUT_BYTES) {
        this.dispatch(batch);
        batch = [];
        bytes = 0;
      }
      batch.push(job);
      bytes += job.output.length;
    }
    if (batch.length > 0) this.dispatch(batch);
  }

  private dispatch(jobs: DecodeJob[]): void {
    let best: DecoderThread | undefined;
    for (const thread of this.threads ?? []) {
      if (thread.ready && (!best || thread.load < best.load)) best = thread;
    }
    if (best) this.send(best, jobs);
    else void this.decodeHere(jobs);
  }

  private send(thread: DecoderThread, jobs: DecodeJob[]): void {
    const batch: Batch = { jobs };
    const inputs = this.places(jobs.map((job) => job.input), (buffer) => (batch.input = buffer), true);
    const outputs = this.places(jobs.map((job) => job.output), (buffer) => (batch.output = buffer), false);
    const request: BatchRequest = { id: this.nextId++, inputs, outputs };
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

  private receive(thread: DecoderThread, reply: BatchReply): void {
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
        if (error === null) job.output.set(new Uint8Array(batch.output!, at, length));
        at += job.output.length;
      }
      if (error === null) job.resolve(length);
      else job.reject(new Error(error));
    });
    this.release(batch);
  }

  private release(batch: Batch): void {
    if (batch.input) this.spares.give(batch.input);
    if (batch.output) this.spares.give(batch.output);
  }

  /** Decodes a batch on the main thread: before any thread is ready, or when none can start. */
  private async decodeHere(jobs: DecodeJob[]): Promise<void> {
    let decoder: ZstdDecoder;
    try {
      this.local ??= loadZstdDecoder(createRequire(import.meta.url), this.source);
      decoder = await this.local;
    } catch (error) {
      for (const job of jobs) job.reject(error as Error);
      return;
    }
    for (const job of jobs) {
      try {
        job.resolve(decoder.decode(job.input, job.output));
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
    const code = `(${decoderThreadMain.toString()})(require, require('node:worker_threads'), ${loadZstdDecoder.toString()});`;
    for (let index = 0; index < this.threadCount; index++) {
      let worker: Worker;
      try {
        worker = new Worker(code, { eval: true, workerData: this.source });
      } catch {
        return;
      }
      let settle!: () => void;
      const settled = new Promise<void>((resolve) => (settle = resolve));
      const thread: DecoderThread = { worker, ready: false, load: 0, batches: new Map(), settled, settle };
      this.threads.push(thread);
      worker.on('message', (message: ThreadMessage) => {
        if ('ready' in message) {
          thread.ready = true;
          thread.settle();
        } else if ('failed' in message) this.lose(thread, `cannot start a zstd decoder thread: ${message.failed}`);
        else this.receive(thread, message);
      });
      worker.on('error', (error) => this.lose(thread, `a zstd decoder thread failed: ${error.message}`));
      worker.on('exit', () => this.lose(thread, 'a zstd decoder thread exited'));
      // After the listeners: the first 'message' listener refs the worker's port again.
      worker.unref();
    }
  }

  /** Takes a thread out of service; what it held fails with an I/O error (the image is not at fault). */
  private lose(thread: DecoderThread, reason: string): void {
    thread.ready = false;
    thread.settle();
    this.threads = this.threads?.filter((other) => other !== thread);
    for (const batch of thread.batches.values()) for (const job of batch.jobs) job.reject(new IoError(reason));
    thread.batches.clear();
    thread.load = 0;
    void thread.worker.terminate();
  }
}

/** Threads for this machine: one per core up to the cap; none on one core, where the main thread decodes alone. */
export function decoderThreadCount(): number {
  const cores = availableParallelism();
  return cores <= 1 ? 0 : Math.min(MAX_DECODER_THREADS, cores);
}

let shared: ZstdThreads | undefined;

/** The process's zstd decoder pool, made on first use. */
export function zstdThreads(): ZstdThreads {
  shared ??= new ZstdThreads({ packagePath: createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm') }, decoderThreadCount());
  return shared;
}
