/**
 * The plain-JavaScript inflater (portableCodecs) against node:zlib: every
 * stream zlib writes, at every level and strategy, decodes to its data, with
 * any bytes after it (a qcow2 cluster's sector padding) and into an output of
 * any length; broken streams fail with an InflateError, never hang.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { constants, deflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { CorruptImageError, UnsupportedFeatureError } from '../src/core/errors.js';
import { openImage } from '../src/engine/open.js';
import { convertToRaw } from '../src/ops/convert.js';
import { hasTool, run, tempDir } from './helpers/tools.js';
import { InflateError, inflateRawInto } from '../src/core/inflate.js';
import { portableCodecs } from '../src/core/portable-codecs.js';

/** Data zlib compresses in every way: runs, text-like repeats, noise. */
const data = fc.oneof(
  fc.uint8Array({ maxLength: 5000 }),
  fc.array(fc.tuple(fc.integer({ min: 0, max: 255 }), fc.integer({ min: 1, max: 3000 })), { maxLength: 40 }).map((runs) => {
    const out: number[] = [];
    for (const [value, count] of runs) for (let i = 0; i < count; i++) out.push(value);
    return Uint8Array.from(out);
  }),
  fc.tuple(fc.uint8Array({ minLength: 1, maxLength: 64 }), fc.integer({ min: 1, max: 2000 })).map(([word, times]) => {
    const out = new Uint8Array(word.length * times);
    for (let i = 0; i < times; i++) out.set(word, i * word.length);
    return out;
  }),
);
const settings = fc.record({
  level: fc.integer({ min: 0, max: 9 }),
  strategy: fc.constantFrom(constants.Z_DEFAULT_STRATEGY, constants.Z_FILTERED, constants.Z_HUFFMAN_ONLY, constants.Z_RLE, constants.Z_FIXED),
});

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

describe('inflateRawInto', () => {
  it('decodes what zlib encodes, at every level and strategy, whatever follows the stream', () => {
    fc.assert(
      fc.property(data, settings, fc.uint8Array({ maxLength: 600 }), (bytes, options, junk) => {
        const stream = deflateRawSync(bytes, options);
        const output = new Uint8Array(bytes.length);
        expect(inflateRawInto(concat(stream, junk), output)).toBe(bytes.length);
        expect(output).toEqual(bytes);
      }),
      { numRuns: 400 },
    );
  });

  it('stops when the output is full, and gives what a stream holds when it ends first', () => {
    fc.assert(
      fc.property(data, settings, fc.integer({ min: 0, max: 6000 }), (bytes, options, room) => {
        const output = new Uint8Array(room);
        const written = inflateRawInto(deflateRawSync(bytes, options), output);
        expect(written).toBe(Math.min(room, bytes.length));
        expect(output.subarray(0, written)).toEqual(bytes.subarray(0, written));
      }),
      { numRuns: 300 },
    );
  });

  it('a stream cut short fails with an InflateError, unless every byte was out before the cut', () => {
    fc.assert(
      fc.property(data.filter((bytes) => bytes.length > 0), settings, fc.double({ min: 0, max: 0.999, noNaN: true }), (bytes, options, cut) => {
        const stream = deflateRawSync(bytes, options);
        const short = stream.subarray(0, Math.floor(stream.length * cut));
        const output = new Uint8Array(bytes.length);
        let written: number | undefined;
        try {
          written = inflateRawInto(short, output);
        } catch (error) {
          expect(error).toBeInstanceOf(InflateError);
        }
        // A full output is a whole cluster: what qemu takes too (zlib's Z_BUF_ERROR with no room left).
        if (written !== undefined) expect([written, output]).toEqual([bytes.length, bytes]);
      }),
      { numRuns: 300 },
    );
  });

  it('any bytes at all: a result within the output, or an InflateError, at once', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2000 }), fc.integer({ min: 0, max: 70_000 }), (bytes, room) => {
        try {
          expect(inflateRawInto(bytes, new Uint8Array(room))).toBeLessThanOrEqual(room);
        } catch (error) {
          expect(error).toBeInstanceOf(InflateError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('names what is wrong: a reserved block type, a stored length check, a distance too far back', () => {
    expect(() => inflateRawInto(Uint8Array.of(0b111), new Uint8Array(10))).toThrow(/reserved type 3/);
    expect(() => inflateRawInto(Uint8Array.of(1, 5, 0, 0, 0), new Uint8Array(10))).toThrow(/length check/);
    // Fixed codes: a match (length symbol 257, distance code 0) before any literal.
    expect(() => inflateRawInto(Uint8Array.of(0b00000011, 0b00000010, 0), new Uint8Array(10))).toThrow(/before the output's start/);
  });
});

describe('portableCodecs', () => {
  it('inflates through both calls, and refuses zstd unless given a decoder', async () => {
    const bytes = new TextEncoder().encode('platter '.repeat(1000));
    const codecs = portableCodecs();
    expect(await codecs.inflateRaw(deflateRawSync(bytes), bytes.length)).toEqual(bytes);
    const output = new Uint8Array(bytes.length);
    expect(await codecs.inflateRawInto!(deflateRawSync(bytes), output)).toBe(bytes.length);
    await expect(codecs.zstdDecompress(new Uint8Array(8), 512)).rejects.toThrow(UnsupportedFeatureError);
    const decoded = new Uint8Array([1, 2, 3]);
    expect(await portableCodecs({ zstdDecompress: async () => decoded }).zstdDecompress(new Uint8Array(8), 3)).toBe(decoded);
  });
});

describe.skipIf(!hasTool('qemu-img'))('portableCodecs on qemu-made images', () => {
  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it('a zlib-compressed qcow2 converts to the disk it holds; a damaged cluster is a CorruptImageError', async () => {
    const text = new TextEncoder().encode('0123 cluster refcount snapshot\n'.repeat(70_000)).subarray(0, 2 << 20);
    writeFileSync(tmp.path('text.raw'), text);
    run('qemu-img', ['convert', '-c', '-f', 'raw', '-O', 'qcow2', tmp.path('text.raw'), tmp.path('text.qcow2')]);
    const bytes = new Uint8Array(readFileSync(tmp.path('text.qcow2')));
    const host = { codecs: portableCodecs(), warn: () => {} };
    const convert = async (image: Uint8Array) => {
      const opened = await openImage(new MemoryDevice(image, { writable: false }), { host });
      const raw = new MemoryDevice(0);
      try {
        await convertToRaw(opened, raw);
      } finally {
        await opened.close();
      }
      return raw.read(0, raw.size);
    };
    expect(Buffer.from(await convert(bytes)).equals(Buffer.from(text))).toBe(true);
    // The first byte of the first cluster's stream made a block of the reserved type 3 (raw deflate has
    // no checksum: damage later in a stream may well decode, to other bytes, as it does in zlib).
    const view = new DataView(bytes.buffer);
    const l2 = Number(view.getBigUint64(Number(view.getBigUint64(40)), false) & 0x00fffffffffffe00n);
    const stream = Number(view.getBigUint64(l2) & ((1n << 54n) - 1n));
    const damaged = bytes.slice();
    damaged[stream] = 0xff;
    await expect(convert(damaged)).rejects.toThrow(CorruptImageError);
  });
});
