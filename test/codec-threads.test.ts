/**
 * Decoding on worker threads, deflate and zstd: the bytes that were
 * compressed, whether the streams and outputs live in shared memory (decoded
 * in place) or not (copied through the pool's batch buffers), with both codecs
 * asked for in one turn; a bad stream fails alone; a deflate stream longer
 * than its cluster gives its first bytes, as qemu takes it; a thread that
 * cannot load libzstd still decodes deflate; a thread that dies fails what it
 * held with an I/O error and leaves the rest working. Reads of qemu-made zlib
 * and zstd images through the threads match the raw source at any offset and
 * length.
 */

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { deflateRawSync } from 'node:zlib';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inflateRawInto, zstdCompress, zstdCompressBound } from '../src/node/codecs.js';
import { CodecThreads, codecThreads, type Codec } from '../src/node/codec-threads.js';
import { nodeWorkerThreads } from '../src/node/builtins.js';
import { loadZstdCodec, type WasmApi } from '../src/node/zstd-codec.js';
import { openImageFile } from '../src/node/open.js';
import { alignedBuffer } from '../src/ops/aligned.js';
import type { Image } from '../src/core/image.js';
import { qcow2TempDir, qcow2ToolAvailable, sh } from './helpers/qcow2-oracle.js';

const packagePath = createRequire(import.meta.url).resolve('@bokuweb/zstd-wasm');

const WORDS = ['qcow2', 'cluster', 'refcount', 'L2 table', 'snapshot', 'backing', '\n'].map((word) => new TextEncoder().encode(`${word} `));

/** Text-like bytes that compress, different for each seed. */
function clusterOf(length: number, seed: number): Uint8Array {
  const bytes = new Uint8Array(length);
  let state = seed >>> 0;
  for (let at = 0; at < length; ) {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0;
    const word = WORDS[state % WORDS.length]!;
    bytes.set(word.subarray(0, length - at), at);
    at += word.length;
  }
  return bytes;
}

/** `bytes` copied into shared memory at `skew` bytes past an 8-byte boundary, or left as they are. */
function placed(bytes: Uint8Array, shared: boolean, skew = 0): Uint8Array {
  if (!shared) return bytes;
  const copy = new Uint8Array(new SharedArrayBuffer(bytes.length + 32), 16 + skew, bytes.length);
  copy.set(bytes);
  return copy;
}

/** `cluster` compressed with `codec` as qemu compresses clusters (deflate: raw, 4 KiB window). */
async function compressed(codec: Codec, cluster: Uint8Array): Promise<Uint8Array> {
  return codec === 'zstd' ? zstdCompress(cluster) : new Uint8Array(deflateRawSync(cluster, { windowBits: 12 }));
}

describe('codec threads', () => {
  const threads = new CodecThreads({ packagePath }, 2);

  it('start: both threads come up, for deflate and for zstd', async () => {
    expect(await threads.start('deflate')).toBe(2);
    expect(await threads.start('zstd')).toBe(2);
  });

  it('decode the same bytes as were compressed, either codec, streams (at any alignment) and outputs shared or not', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(
          fc.record({
            codec: fc.constantFrom<Codec>('deflate', 'zstd'),
            length: fc.integer({ min: 1, max: 70_000 }),
            seed: fc.nat(),
            sharedInput: fc.boolean(),
            // Compressed clusters start at any byte of the image, so of a read buffer.
            inputSkew: fc.integer({ min: 0, max: 7 }),
            sharedOutput: fc.boolean(),
          }),
          { minLength: 1, maxLength: 24 },
        ),
        async (streams) => {
          const clusters = streams.map(({ length, seed }) => clusterOf(length, seed));
          const inputs = await Promise.all(clusters.map((cluster, index) => compressed(streams[index]!.codec, cluster)));
          const outputs = streams.map(({ length, sharedOutput }) => placed(new Uint8Array(length), sharedOutput));
          // Asked for in one turn: they travel as batches of one codec, split across both threads.
          const lengths = await Promise.all(
            inputs.map((input, index) => threads.decode(streams[index]!.codec, placed(input, streams[index]!.sharedInput, streams[index]!.inputSkew), outputs[index]!)),
          );
          expect(lengths).toEqual(clusters.map((cluster) => cluster.length));
          outputs.forEach((output, index) => expect(Buffer.from(output).equals(clusters[index]!)).toBe(true));
        },
      ),
      { numRuns: 25 },
    );
  });

  it('encode: zstd frames made on the threads (or here, with no threads) decode back, and an output too small fails alone', async () => {
    const here = new CodecThreads({ packagePath }, 0);
    for (const pool of [threads, here]) {
      const clusters = Array.from({ length: 40 }, (_, index) => clusterOf(65536, index + 1));
      const outputs = clusters.map((cluster) => new Uint8Array(zstdCompressBound(cluster.length)));
      const small = new Uint8Array(16);
      const results = await Promise.allSettled([
        ...clusters.map((cluster, index) => pool.encode('zstd', cluster, outputs[index]!)),
        pool.encode('zstd', clusters[0]!, small),
      ]);
      expect(results.at(-1)!.status).toBe('rejected');
      for (const [index, cluster] of clusters.entries()) {
        const result = results[index]!;
        expect(result.status).toBe('fulfilled');
        const frame = outputs[index]!.subarray(0, (result as PromiseFulfilledResult<number>).value);
        expect(frame.length).toBeLessThan(cluster.length);
        const back = new Uint8Array(cluster.length);
        expect(await pool.decode('zstd', frame, back)).toBe(cluster.length);
        // Buffer's compare: toEqual walks 64 KiB arrays element by element, seconds for this test.
        expect(Buffer.from(back).equals(Buffer.from(cluster))).toBe(true);
      }
    }
  });

  it("zstdCompressBound is libzstd's ZSTD_compressBound", async () => {
    const load = createRequire(import.meta.url);
    const zstd = load(packagePath.replace(/index\.node\.js$/, 'module.js')).Module;
    // Started once per thread: a second start would move the heap from under the codecs of the tests before.
    if (!zstd.calledRun) await load(packagePath).init();
    for (const size of [0, 1, 255, 4096, 65535, 65536, 131071, 131072, 2 << 20]) expect(zstdCompressBound(size), String(size)).toBe(zstd._ZSTD_compressBound(size));
  });

  it('idle threads do not keep the process alive, before and after a batch', async () => {
    // What holds the event loop open: a thread that never got a batch once kept its port referenced, so the process never exited.
    const ports = () => process.getActiveResourcesInfo().filter((name) => name === 'MessagePort' || name === 'Worker').length;
    const before = ports();
    const idle = new CodecThreads({ packagePath }, 2);
    expect(await idle.start('zstd')).toBe(2);
    expect(ports()).toBe(before);
    const cluster = clusterOf(4096, 7);
    for (const codec of ['zstd', 'deflate'] as const) {
      const output = new Uint8Array(cluster.length);
      expect(await idle.decode(codec, await compressed(codec, cluster), output)).toBe(cluster.length);
      expect(output).toEqual(cluster);
      expect(ports()).toBe(before);
    }
  });

  // `here`: no threads, every batch decodes on the main thread (as before the threads start).
  const pools = { threads, here: new CodecThreads({ packagePath }, 0) };

  it.each([
    ['zstd', 'threads'],
    ['deflate', 'threads'],
    ['zstd', 'here'],
    ['deflate', 'here'],
  ] as const)('a bad %s stream fails alone (%s); the rest of its batch decodes', async (codec, where) => {
    const threads = pools[where];
    const good = clusterOf(4096, 1);
    const stream = await compressed(codec, good);
    const bad = stream.slice();
    bad.fill(0xee, codec === 'zstd' ? 12 : 0);
    const outputs = [new Uint8Array(4096), new Uint8Array(4096), placed(new Uint8Array(4096), true)];
    const results = await Promise.allSettled([
      threads.decode(codec, stream, outputs[0]!),
      threads.decode(codec, bad, outputs[1]!),
      threads.decode(codec, stream, outputs[2]!),
    ]);
    expect(results.map((result) => result.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.message).toMatch(codec === 'zstd' ? /libzstd error/ : /invalid/);
    expect(outputs[0]).toEqual(good);
    expect(outputs[2]).toEqual(good);
  });

  it.each(['threads', 'here'] as const)('a deflate stream longer than its cluster gives its first bytes (%s), as qemu takes it', async (where) => {
    const threads = pools[where];
    const twoClusters = clusterOf(8192, 3);
    const stream = await compressed('deflate', twoClusters);
    const output = new Uint8Array(4096);
    expect(await threads.decode('deflate', stream, output)).toBe(4096);
    expect(output).toEqual(twoClusters.subarray(0, 4096));
    const viaCodec = new Uint8Array(4096);
    expect(await inflateRawInto(stream, viaCodec)).toBe(4096);
    expect(viaCodec).toEqual(twoClusters.subarray(0, 4096));
  });
});

describe('codec threads that fail', () => {
  const dir = mkdtempSync(join(tmpdir(), 'platter-codec-threads-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('libzstd that cannot load: no thread is ready for zstd, a zstd decode fails with the loader\'s error, deflate still decodes on the threads', async () => {
    const threads = new CodecThreads({ packagePath: join(dir, 'missing', 'index.node.js') }, 2);
    expect(await threads.start('zstd')).toBe(0);
    await expect(threads.decode('zstd', new Uint8Array(8), new Uint8Array(8))).rejects.toThrow(/Cannot find module/);
    expect(await threads.start('deflate')).toBe(2);
    const cluster = clusterOf(4096, 5);
    const output = new Uint8Array(cluster.length);
    expect(await threads.decode('deflate', await compressed('deflate', cluster), output)).toBe(cluster.length);
    expect(output).toEqual(cluster);
  });

  it('libzstd not installed: a zstd decode says so in one line, as an unsupported feature', async () => {
    const here = new CodecThreads({ packagePath: '' }, 0);
    const decoding = here.decode('zstd', new Uint8Array(8), new Uint8Array(8));
    await expect(decoding).rejects.toMatchObject({
      code: 'EUNSUPPORTED',
      message: 'the zstd codec (@bokuweb/zstd-wasm) could not be loaded: the package is not installed',
    });
  });

  it('a thread that dies mid-batch fails what it held with EIO; later decodes go on without it', async () => {
    // A stand-in package whose decoder ends its thread (and only decodes on the main thread).
    const fake = join(dir, 'index.node.js');
    writeFileSync(
      fake,
      `const { isMainThread } = require('node:worker_threads');
       exports.init = async () => {};
       exports.createDCtx = () => 1;
       exports.decompressUsingDict = (context, input) => {
         if (!isMainThread) process.exit(7);
         return input.slice();
       };`,
    );
    const threads = new CodecThreads({ packagePath: fake }, 1);
    expect(await threads.start('zstd')).toBe(1);
    await expect(threads.decode('zstd', Uint8Array.of(1, 2, 3), new Uint8Array(3))).rejects.toMatchObject({ code: 'EIO' });
    const output = new Uint8Array(3);
    expect(await threads.decode('zstd', Uint8Array.of(4, 5, 6), output)).toBe(3);
    expect([...output]).toEqual([4, 5, 6]);
  });
});

/**
 * Runs `loadZstdCodec` on a fresh thread (one emscripten runtime per thread),
 * once per entry of `modules` (the compiled WebAssembly, or undefined), with a
 * `require` that records what it loads, then a round trip of one cluster
 * through every codec made; resolves with what the thread saw.
 */
function loadOnFreshThread(...modules: unknown[]): Promise<{ loaded: string[]; roundTrip?: boolean; error?: string }> {
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    const loaded = [];
    const load = (path) => (loaded.push(path), require(path));
    const loadCodec = ${loadZstdCodec.toString()};
    (async () => {
      const codecs = [];
      for (const module of workerData.modules) codecs.push(await loadCodec(load, { packagePath: workerData.packagePath, module }));
      return codecs;
    })().then(
      (codecs) => {
        const cluster = new Uint8Array(65536).map((_, at) => (at * 7) % 251 < 20 ? at & 0xff : 0);
        const roundTrip = codecs.every((codec) => {
          const frame = new Uint8Array(70000);
          const back = new Uint8Array(65536);
          const length = codec.decode(frame.subarray(0, codec.encode(cluster, frame, 3)), back);
          return length === 65536 && back.every((byte, at) => byte === cluster[at]);
        });
        parentPort.postMessage({ loaded, roundTrip });
      },
      (error) => parentPort.postMessage({ loaded, error: error.message }),
    );`;
  const worker = new (nodeWorkerThreads().Worker)(code, { eval: true, workerData: { packagePath, modules } });
  return new Promise((resolve, reject) => {
    worker.once('message', (message) => {
      resolve(message);
      void worker.terminate();
    });
    worker.once('error', reject);
  });
}

describe('libzstd compiled once', () => {
  const wasmPath = join(dirname(packagePath), 'zstd.wasm');
  const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

  it("a thread given the compiled module loads only the package's runtime, not its loader, and the codec works", async () => {
    const module = await wasm.compile(readFileSync(wasmPath));
    const seen = await loadOnFreshThread(module);
    expect(seen).toEqual({ loaded: [packagePath.replace(/index\.node\.js$/, 'module.js')], roundTrip: true });
  });

  it('a module that is not libzstd fails the load at once, with a message, instead of waiting forever', async () => {
    // The smallest valid module: it instantiates, but exports nothing the runtime needs.
    const empty = await wasm.compile(Uint8Array.of(0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00));
    const seen = await loadOnFreshThread(empty);
    expect(seen.error).toMatch(/^libzstd did not start: /);
  });

  it('a second load without a module on a thread whose runtime started keeps that runtime: both codecs work', async () => {
    const module = await wasm.compile(readFileSync(wasmPath));
    const seen = await loadOnFreshThread(module, undefined);
    expect(seen).toMatchObject({ roundTrip: true });
    expect(seen.loaded).not.toContain(packagePath);
  });

  it('without a module the package loads itself, as it ships', async () => {
    const seen = await loadOnFreshThread(undefined);
    expect(seen.roundTrip).toBe(true);
    // The runtime is looked at first (a thread that started it already keeps it), then the package loads itself.
    expect(seen.loaded).toEqual([packagePath.replace(/index\.node\.js$/, 'module.js'), packagePath, packagePath.replace(/index\.node\.js$/, 'module.js')]);
  });
});

const haveQemu = qcow2ToolAvailable('qemu-img');

describe.skipIf(!haveQemu).each(['zlib', 'zstd'] as const)('reading a %s-compressed qcow2 through the threads', (compression) => {
  const temp = qcow2TempDir();
  const size = 3 << 20;
  const source = new Uint8Array(size);
  let image: Image;

  beforeAll(async () => {
    for (let offset = 0, seed = 1; offset < size; offset += 65536, seed++) source.set(clusterOf(65536, seed), offset);
    source.fill(0, 1 << 20, (1 << 20) + 65536);
    writeFileSync(join(temp.dir, 'source.raw'), source);
    sh(temp.dir, 'qemu-img', ['convert', '-c', '-O', 'qcow2', '-o', `compression_type=${compression}`, 'source.raw', 'compressed.qcow2']);
    image = await openImageFile(join(temp.dir, 'compressed.qcow2'));
    expect(await codecThreads().start(compression === 'zlib' ? 'deflate' : 'zstd')).toBeGreaterThan(0);
  });
  afterAll(async () => {
    await image?.close();
    temp.cleanup();
  });

  it('any read, into shared or plain buffers, one after another, matches the source', async () => {
    const shared = alignedBuffer(2 << 20, { shared: true });
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ offset: fc.integer({ min: 0, max: size - 1 }), length: fc.integer({ min: 1, max: 2 << 20 }), inShared: fc.boolean() }), {
          minLength: 1,
          maxLength: 6,
        }),
        async (reads) => {
          for (const { offset, length: wanted, inShared } of reads) {
            const length = Math.min(wanted, size - offset);
            const target = inShared ? shared.subarray(0, length) : new Uint8Array(length);
            target.fill(0xaa);
            await image.readInto!(offset, target);
            expect(Buffer.from(target).equals(Buffer.from(source.subarray(offset, offset + length)))).toBe(true);
          }
        },
      ),
      { numRuns: 40 },
    );
  });
});
