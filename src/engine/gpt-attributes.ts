/**
 * GPT attribute bits as sfdisk spells them: `RequiredPartition`,
 * `NoBlockIOProtocol`, `LegacyBIOSBootable` and `GUID:48,50` for the type-specific
 * bits 48–63. Bits 3–47 have no spelling; writers carry them over from the old entry.
 */

import { UsageError } from '../core/errors.js';
import { leadingNumber } from './util-linux-size.js';

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

/** libfdisk also reads this misspelling of RequiredPartition. */
const REQUIRED_TYPO = 'RequiredPartiton';

/** The bit an item at the start of `text` names, and its length; undefined if none. */
function leadingAttribute(text: string): { bit: bigint; length: number } | undefined {
  for (const [name, bit] of [...NAMED_BITS, [REQUIRED_TYPO, 0n] as const]) {
    if (text.startsWith(name)) return { bit, length: name.length };
  }
  // `GUID:n` or a bare n, n read as C reads it (0x30 and 060 are 48 too).
  const prefix = text.startsWith('GUID:') ? 5 : 0;
  const number = /^[0-9]/.test(text.slice(prefix)) ? leadingNumber(text.slice(prefix)) : undefined;
  if (!number || number.value < 48n || number.value > 63n) return undefined;
  return { bit: number.value, length: prefix + number.length };
}

/**
 * Parses sfdisk's attribute text as libfdisk does: items separated by blanks
 * and at most one comma (`RequiredPartition,LegacyBIOSBootable`, `GUID:48,49`,
 * `GUID:48 GUID:50`); names are matched as written.
 */
export function parseAttributesText(text: string): bigint {
  let attributes = 0n;
  let rest = text.replace(/^[ \t]+/, '');
  while (rest !== '') {
    const item = leadingAttribute(rest);
    if (!item) throw new UsageError(`unsupported GPT attribute '${rest}' in '${text}'`);
    rest = rest.slice(item.length);
    if (rest !== '' && !/^[ \t,]/.test(rest)) throw new UsageError(`cannot read GPT attributes '${text}'`);
    attributes |= 1n << item.bit;
    rest = rest.replace(/^[ \t]*,?[ \t]*/, '');
  }
  return attributes;
}
