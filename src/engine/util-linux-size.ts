/**
 * Numbers in sfdisk scripts, read the way util-linux reads sizes, so a script
 * places partitions where sfdisk places them: C's base prefixes (`0x10` is 16,
 * `010` is 8), an optional fraction, and a suffix K, M, G, T, P, E (also
 * lower-case; `KiB` the same, `KB` in powers of 1000). A fraction is added one
 * digit at a time with integer division, and a trailing zero in it shifts the
 * digits (util-linux reads `1.10M` as 2 MiB); both are kept, so the same script
 * gives the same table with either tool.
 */

import { UsageError } from '../core/errors.js';

const SUFFIXES = 'KMGTPEZY';

/** 1 for K, 2 for M, … (either case); 0 for anything else. */
function suffixPower(letter: string | undefined): number {
  if (letter === undefined || letter === '') return 0;
  return SUFFIXES.indexOf(letter) + 1 || SUFFIXES.toLowerCase().indexOf(letter) + 1;
}

export interface UtilLinuxSize {
  value: number;
  /** A suffix was given: the value is in bytes (otherwise it counts sectors). */
  suffixed: boolean;
}

/** C's strtoumax with base 0 on the start of `text`: the digits it takes and their value. */
export function leadingNumber(text: string): { value: bigint; length: number } | undefined {
  const match = /^\+?(?:0[xX]([0-9a-fA-F]+)|(0[0-7]*)|([1-9][0-9]*))/.exec(text);
  if (!match) return undefined;
  const [whole, hex, octal, decimal] = match;
  const value = hex !== undefined ? BigInt(`0x${hex}`) : octal !== undefined ? BigInt(`0o${octal.slice(1) || '0'}`) : BigInt(decimal!);
  return { value, length: whole.length };
}

/** What a fraction's digits add to a value of `unit` bytes, as util-linux adds them. */
function fractionBytes(digits: bigint, leadingZeros: number, unit: bigint): bigint {
  let divisor = 10n;
  while (divisor < digits) divisor *= 10n;
  for (let zero = 0; zero < leadingZeros; zero++) divisor *= 10n;
  let added = 0n;
  let place = 1n;
  for (let rest = digits; rest > 0n; rest /= 10n, place *= 10n) {
    const digit = rest % 10n;
    const share = divisor / place;
    if (digit !== 0n && share / digit !== 0n) added += unit / (share / digit);
  }
  return added;
}

/** Parses `text` (no sign) as util-linux's parse_size does; `what` names it in errors. */
export function parseUtilLinuxSize(text: string, what: string): UtilLinuxSize {
  const invalid = () => new UsageError(`${what} '${text}' is not a number (sectors, or bytes with a suffix K, M, G, T, P or E)`);
  const trimmed = text.trimStart();
  const number = leadingNumber(trimmed);
  if (!number) throw invalid();
  let rest = trimmed.slice(number.length);
  if (rest === '') return checked(number.value, false, text, what);
  let fraction = 0n;
  let leadingZeros = 0;
  let base = 1024n;
  for (;;) {
    if (rest[1] === 'i' && /^[Bb]$/.test(rest[2] ?? '') && rest.length === 3) base = 1024n;
    else if (/^[Bb]$/.test(rest[1] ?? '') && rest.length === 2) base = 1000n;
    else if (rest.length > 1) {
      if (fraction !== 0n || rest[0] !== '.') throw invalid();
      const zeros = /^\.(0*)/.exec(rest)![1]!.length;
      leadingZeros += zeros;
      rest = rest.slice(1 + zeros);
      const digits = /^[1-9][0-9]*/.exec(rest)?.[0];
      if (digits !== undefined) {
        fraction = BigInt(digits);
        rest = rest.slice(digits.length);
        // A fraction needs a suffix.
        if (rest === '') throw invalid();
      }
      continue;
    }
    break;
  }
  const power = suffixPower(rest[0]);
  if (power === 0) throw invalid();
  const unit = base ** BigInt(power);
  const value = number.value * unit + (fraction !== 0n ? fractionBytes(fraction, leadingZeros, unit) : 0n);
  return checked(value, true, text, what);
}

function checked(value: bigint, suffixed: boolean, text: string, what: string): UtilLinuxSize {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw new UsageError(`${what} '${text}' is too large`);
  return { value: Number(value), suffixed };
}
