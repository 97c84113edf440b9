/**
 * GPT attribute bits as sfdisk spells them: `RequiredPartition`,
 * `NoBlockIOProtocol`, `LegacyBIOSBootable` and `GUID:48,50` for the type-specific
 * bits 48–63. Bits 3–47 have no spelling; writers carry them over from the old entry.
 */

import { UsageError } from '../core/errors.js';

const NAMED_BITS: readonly [string, bigint][] = [
  ['RequiredPartition', 0n],
  ['NoBlockIOProtocol', 1n],
  ['LegacyBIOSBootable', 2n],
];

/** Bits a script can express: 0–2 and 48–63. */
export const SCRIPTABLE_ATTRIBUTE_MASK = 0b111n | (0xffffn << 48n);

/** The attribute text sfdisk shows; empty when no expressible bit is set. */
export function attributesText(attributes: bigint): string {
  const words = NAMED_BITS.filter(([, bit]) => (attributes >> bit) & 1n).map(([name]) => name);
  const guidBits: number[] = [];
  for (let bit = 48; bit < 64; bit++) if ((attributes >> BigInt(bit)) & 1n) guidBits.push(bit);
  if (guidBits.length > 0) words.push(`GUID:${guidBits.join(',')}`);
  return words.join(' ');
}

/** Parses sfdisk's attribute text (names separated by blanks or commas; GUID:n[,n…] or bare numbers 48–63). */
export function parseAttributesText(text: string): bigint {
  let attributes = 0n;
  for (const word of text.split(/[\s]+/).filter((part) => part !== '')) {
    const named = NAMED_BITS.find(([name]) => name.toLowerCase() === word.replace(/,$/, '').toLowerCase());
    if (named) {
      attributes |= 1n << named[1];
      continue;
    }
    const bits = word.replace(/^GUID:/i, '').split(',').filter((part) => part !== '');
    for (const bitText of bits) {
      const bit = Number(bitText);
      if (!/^[0-9]+$/.test(bitText) || bit < 48 || bit > 63) throw new UsageError(`unknown GPT attribute '${word}'`);
      attributes |= 1n << BigInt(bit);
    }
  }
  return attributes;
}
