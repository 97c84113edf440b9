/** qemu-style size strings in, human sizes out. */

import { UsageError } from './errors.js';

const UNIT_SHIFT: Record<string, number> = { b: 0, k: 10, m: 20, g: 30, t: 40, p: 50, e: 60 };

/**
 * Parses a size the way qemu-img does: a number with an optional binary suffix
 * (B, K, M, G, T, P, E; `KiB` style also accepted), fractions allowed with a suffix
 * (`1.5G`). A bare number is bytes. The result must be a whole number of bytes.
 */
export function parseSize(text: string, what = 'size'): number {
  // Hexadecimal as qemu takes it (0x200): whole numbers only; its digits may end in b or e, which are then digits.
  const hex = /^\s*(0x[0-9a-f]+)\s*([kmgtp])?(?:i?b)?\s*$/i.exec(text);
  const match = hex ?? /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([bkmgtpe])?(?:i?b)?\s*$/i.exec(text);
  if (!match) throw new UsageError(`invalid ${what} '${text}': expected a number with an optional suffix B, K, M, G, T, P or E`);
  const [, digits = '', unit = 'b'] = match;
  const shift = UNIT_SHIFT[unit.toLowerCase()] ?? 0;
  const whole = Number(digits) * 2 ** shift;
  if (!Number.isSafeInteger(whole)) {
    throw new UsageError(
      Number.isInteger(whole) || whole > Number.MAX_SAFE_INTEGER
        ? `invalid ${what} '${text}': too large`
        : `invalid ${what} '${text}': not a whole number of bytes`,
    );
  }
  return whole;
}

/** A size change for resize: `+10G` grows, `-1G` shrinks, `20G` sets. */
export interface SizeChange {
  mode: 'set' | 'grow' | 'shrink';
  bytes: number;
}

/** Parses a resize argument (`+SIZE`, `-SIZE` or `SIZE`). */
export function parseSizeChange(text: string): SizeChange {
  const sign = text.trim()[0];
  if (sign === '+') return { mode: 'grow', bytes: parseSize(text.trim().slice(1)) };
  if (sign === '-') return { mode: 'shrink', bytes: parseSize(text.trim().slice(1)) };
  return { mode: 'set', bytes: parseSize(text) };
}

const SUFFIXES = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/**
 * Formats bytes like qemu's size_to_str: three significant digits and a binary unit,
 * switching up once the integer part reaches 1000 (`64 MiB`, `0.977 KiB`, `1.5 GiB`).
 */
export function formatSize(bytes: number): string {
  // frexp(val / (1000/1024)) gives floor(log2(val * 1.024)) + 1 as the exponent.
  const scaled = bytes / (1000 / 1024);
  const exponent = scaled >= 1 ? Math.floor(Math.log2(scaled)) + 1 : 0;
  const unit = Math.max(0, Math.min(SUFFIXES.length - 1, Math.floor((exponent - 1) / 10)));
  return `${formatG3(bytes / 2 ** (unit * 10))} ${SUFFIXES[unit]}B`;
}

/** C's `%0.3g`: three significant digits, trailing zeros dropped, ties to even. */
export function formatG3(value: number): string {
  if (value === 0) return '0';
  const precision = 3;
  let exponent = Math.floor(Math.log10(Math.abs(value)));
  let digits = roundHalfEven(value * 10 ** (precision - 1 - exponent));
  if (Math.abs(digits) >= 10 ** precision) {
    exponent += 1;
    digits = roundHalfEven(value * 10 ** (precision - 1 - exponent));
  }
  if (exponent < -4 || exponent >= precision) {
    const mantissa = stripZeros((digits / 10 ** (precision - 1)).toFixed(precision - 1));
    const sign = exponent < 0 ? '-' : '+';
    return `${mantissa}e${sign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  const decimals = Math.max(0, precision - 1 - exponent);
  return stripZeros((digits / 10 ** decimals).toFixed(decimals));
}

/** Digits after the point that hold a double's exact decimal value in the ranges formatted here. */
const EXACT_DIGITS = 100;

/**
 * C's `%.Nf`: the exact binary value rounded to `decimals` places, ties to
 * even (3.125 prints as 3.12), where toFixed rounds ties away from zero.
 * qemu-img check's percentages and qemu-img's progress are printed this way.
 */
export function formatFixed(value: number, decimals: number): string {
  const exact = Math.abs(value).toFixed(EXACT_DIGITS);
  const cut = exact.indexOf('.') + 1 + decimals;
  const kept = BigInt(exact.slice(0, cut).replace('.', ''));
  const rest = exact.slice(cut);
  const beyondHalf = rest[0]! > '5' || (rest[0] === '5' && /[1-9]/.test(rest.slice(1)));
  const tie = rest[0] === '5' && !beyondHalf;
  const rounded = (kept + (beyondHalf || (tie && kept % 2n === 1n) ? 1n : 0n)).toString().padStart(decimals + 1, '0');
  const text = decimals === 0 ? rounded : `${rounded.slice(0, -decimals)}.${rounded.slice(-decimals)}`;
  return value < 0 ? `-${text}` : text;
}

function roundHalfEven(x: number): number {
  const floor = Math.floor(x);
  const fraction = x - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}

function stripZeros(text: string): string {
  return text.includes('.') ? text.replace(/\.?0+$/, '') : text;
}
