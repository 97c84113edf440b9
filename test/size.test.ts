/** Size strings in and human sizes out, checked against qemu-img's own text. */

import { truncateSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { formatFixed, formatSize, parseSize, parseSizeChange } from '../src/core/size.js';
import { hasTool, run, tempDir } from './helpers/tools.js';

describe('parseSize', () => {
  it.each([
    ['512', 512],
    ['0', 0],
    ['64K', 65536],
    ['64k', 65536],
    ['1.5G', 1610612736],
    ['10M', 10485760],
    ['1T', 2 ** 40],
    ['2KiB', 2048],
    ['3MB', 3 * 2 ** 20],
    ['100b', 100],
    // Hexadecimal, as qemu-img create reads it: b and e are digits there; k and up still multiply.
    ['0x200', 512],
    ['0X200', 512],
    ['0x1b', 27],
    ['0x1k', 1024],
  ])('%s = %d bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes);
  });

  it.each(['', 'abc', '12Q', '-5', '1.5', '1.0001K', '1e3', '99999999E', 'K', '0x', '0x1.5', '0xg'])('refuses %j with EUSAGE', (text) => {
    expect(() => parseSize(text)).toThrow(expect.objectContaining({ code: 'EUSAGE' }));
  });

  it('reads resize changes', () => {
    expect(parseSizeChange('+10G')).toEqual({ mode: 'grow', bytes: 10 * 2 ** 30 });
    expect(parseSizeChange('-1M')).toEqual({ mode: 'shrink', bytes: 2 ** 20 });
    expect(parseSizeChange('20G')).toEqual({ mode: 'set', bytes: 20 * 2 ** 30 });
  });

  it('inverts formatting of whole units', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1023 }), fc.constantFrom('', 'K', 'M', 'G', 'T'), (n, unit) => {
        const shift = { '': 0, K: 10, M: 20, G: 30, T: 40 }[unit]!;
        expect(parseSize(`${n}${unit}`)).toBe(n * 2 ** shift);
      }),
    );
  });
});

describe('formatSize', () => {
  it.each([
    [0, '0 B'],
    [512, '512 B'],
    [1000, '0.977 KiB'],
    [5120, '5 KiB'],
    [67108864, '64 MiB'],
    [1610612736, '1.5 GiB'],
    [2 ** 40, '1 TiB'],
  ])('%d bytes is %s', (bytes, text) => {
    expect(formatSize(bytes)).toBe(text);
  });

  const tmp = tempDir();
  afterAll(() => tmp.cleanup());

  it.skipIf(!hasTool('qemu-img'))('matches qemu-img info\'s "virtual size" text', () => {
    // Raw virtual sizes are whole 512-byte sectors, so every size here is one.
    const sizes = [512, 1024, 1536, 5120, 197120, 1022976, 1023 * 1024, 1024000, 1048064, 1048576,
      123456512, 999 * 2 ** 20, 1000 * 2 ** 20, 1023.5 * 2 ** 20, 3 * 2 ** 30 + 12288, 2 ** 40 - 512, 5 * 2 ** 40];
    for (const size of sizes) {
      const path = tmp.path(`s-${size}.raw`);
      writeFileSync(path, '');
      truncateSync(path, size);
      const text = run('qemu-img', ['info', '-f', 'raw', path]);
      const line = text.split('\n').find((l) => l.startsWith('virtual size:'));
      expect(line, `size ${size}`).toBe(`virtual size: ${formatSize(size)} (${size} bytes)`);
    }
  });
});

describe('formatFixed', () => {
  // Expected strings are C's printf (glibc, as Python's % operator prints them): the
  // exact binary value rounded, ties to even.
  it.each([
    [3.125, 2, '3.12'],
    [3.135, 2, '3.13'],
    [0.125, 2, '0.12'],
    [0.375, 2, '0.38'],
    [100, 2, '100.00'],
    [100 / 3, 2, '33.33'],
    [99.995, 2, '100.00'],
    [0.005, 2, '0.01'],
    [0.015, 2, '0.01'],
    [1e-7, 2, '0.00'],
    [12.345, 2, '12.35'],
    [66.665, 2, '66.67'],
    [1.005, 2, '1.00'],
    [2.5, 0, '2'],
    [3.5, 0, '4'],
    [87.5, 0, '88'],
  ])('%d to %d places is %s', (value, decimals, text) => {
    expect(formatFixed(value, decimals)).toBe(text);
  });

  it('agrees with toFixed except on exact ties', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1_000_000 }), fc.integer({ min: 1, max: 1_000_000 }), (part, whole) => {
        const value = (part * 100) / whole;
        const exact = value.toFixed(100);
        const tail = exact.slice(exact.indexOf('.') + 3);
        if (/^50*$/.test(tail)) return;
        expect(formatFixed(value, 2)).toBe(value.toFixed(2));
      }),
    );
  });
});
