/** The struct codec: declarations checked at definition, and decode/encode as exact inverses. */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ascii, bytes, defineStruct, guid, u16be, u16le, u32be, u32le, u64be, u64le, u8, utf16le } from '../src/core/struct.js';
import { u64ToNumber } from '../src/core/bytes.js';

const Sample = defineStruct('sample', 96, {
  a: [0, u8],
  b: [1, u16be],
  c: [3, u16le],
  d: [5, u32be],
  e: [9, u32le],
  f: [13, u64be],
  g: [21, u64le],
  h: [29, bytes(5)],
  i: [34, ascii(8)],
  j: [42, guid],
  k: [58, utf16le(8)],
});

const sampleArbitrary = fc.record({
  a: fc.integer({ min: 0, max: 0xff }),
  b: fc.integer({ min: 0, max: 0xffff }),
  c: fc.integer({ min: 0, max: 0xffff }),
  d: fc.nat({ max: 0xffffffff }),
  e: fc.nat({ max: 0xffffffff }),
  f: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  g: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
  h: fc.uint8Array({ minLength: 5, maxLength: 5 }),
  i: fc.string({ unit: fc.constantFrom(...'ABCXYZ019 _-'.split('')), minLength: 8, maxLength: 8 }),
  j: fc.uuid().map((u) => u.toUpperCase()),
  k: fc.string({ unit: fc.constantFrom(...'abcDEF12 é'.split('')), minLength: 0, maxLength: 8 }),
});

describe('struct codec', () => {
  it('decode(encode(x)) = x for every field type', () => {
    fc.assert(
      fc.property(sampleArbitrary, (value) => {
        expect(Sample.decode(Sample.encode(value))).toEqual(value);
      }),
      { numRuns: 300 },
    );
  });

  it('encode(decode(bytes)) = bytes over the fields that cover them', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 96, maxLength: 96 }), (raw) => {
        // utf16le stops at the first NUL unit, so make its bytes non-NUL to be a faithful round trip.
        const input = raw.slice();
        for (let i = 58; i < 74; i += 2) if (input[i] === 0 && input[i + 1] === 0) input[i] = 1;
        const out = Sample.encode(Sample.decode(input));
        expect(out.subarray(0, 74)).toEqual(input.subarray(0, 74));
      }),
      { numRuns: 300 },
    );
  });

  it('encodes big-endian and little-endian where declared', () => {
    const out = Sample.encode({ ...Sample.decode(new Uint8Array(96)), b: 0x1234, c: 0x1234 });
    expect([...out.subarray(1, 5)]).toEqual([0x12, 0x34, 0x34, 0x12]);
  });

  it('formats GUIDs mixed-endian as GPT does', () => {
    const Guid = defineStruct('guid', 16, { value: [0, guid] });
    const raw = Uint8Array.from([0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b]);
    expect(Guid.decode(raw).value).toBe('C12A7328-F81F-11D2-BA4B-00A0C93EC93B');
    expect(Guid.encode({ value: 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B' })).toEqual(raw);
  });

  it('refuses overlapping or overflowing declarations at definition time', () => {
    expect(() => defineStruct('bad', 8, { a: [0, u32be], b: [2, u32be] })).toThrow(/overlaps/);
    expect(() => defineStruct('bad', 6, { a: [4, u32be] })).toThrow(/past/);
  });

  it('refuses to decode past the end of the input', () => {
    expect(() => Sample.decode(new Uint8Array(95))).toThrow(expect.objectContaining({ code: 'ERANGE' }));
    expect(() => Sample.decode(new Uint8Array(200), 105)).toThrow(expect.objectContaining({ code: 'ERANGE' }));
  });

  it('converts u64 to number only below 2^53', () => {
    expect(u64ToNumber(2n ** 53n - 1n, 'x')).toBe(Number.MAX_SAFE_INTEGER);
    expect(() => u64ToNumber(2n ** 53n, 'size', 24)).toThrow(expect.objectContaining({ code: 'ECORRUPT', offset: 24 }));
  });
});
