/**
 * Partition types as sfdisk reads them in a script, tried in its order: a word
 * alias (`linux`, `swap`), a shortcut (`L`, `S`), a type's name compared on its
 * letters and digits alone, any case (`EFI System`, `w95-fat32`), then the type
 * itself (a hex byte on MBR, a GUID on GPT).
 */

import { UsageError } from '../core/errors.js';
import { MBR_TYPE_NAMES } from '../../formats/mbr/index.js';
import { GPT_TYPE_ALIASES, GPT_TYPE_NAMES } from '../../formats/gpt/index.js';

/** sfdisk's MBR shortcuts (`E` is its older spelling of `Ex`). */
const DOS_SHORTCUTS: ReadonlyMap<string, number> = new Map([
  ['L', 0x83],
  ['S', 0x82],
  ['E', 0x05],
  ['Ex', 0x05],
  ['X', 0x85],
  ['U', 0xef],
  ['R', 0xfd],
  ['V', 0x8e],
]);

/** sfdisk's word aliases, MBR. */
const DOS_WORDS: ReadonlyMap<string, number> = new Map([
  ['linux', 0x83],
  ['swap', 0x82],
  ['extended', 0x05],
  ['linuxex', 0x85],
  ['uefi', 0xef],
  ['raid', 0xfd],
  ['lvm', 0x8e],
]);

/** sfdisk's word aliases, GPT, by the shortcut of the same type. */
const GPT_WORDS: ReadonlyMap<string, string> = new Map([
  ['linux', 'L'],
  ['swap', 'S'],
  ['home', 'H'],
  ['uefi', 'U'],
  ['raid', 'R'],
  ['lvm', 'V'],
]);

/** A type name as libfdisk compares it: letters and digits only, any case. */
function nameKey(text: string): string {
  return text.replace(/[^0-9A-Za-z]/g, '').toLowerCase();
}

function byName<T>(names: ReadonlyMap<T, string>, text: string): T | undefined {
  const key = nameKey(text);
  if (key === '') return undefined;
  for (const [type, name] of names) if (nameKey(name) === key) return type;
  return undefined;
}

function dosType(text: string): string {
  let code = DOS_WORDS.get(text) ?? DOS_SHORTCUTS.get(text) ?? byName(MBR_TYPE_NAMES, text);
  if (code === undefined && /^(0x)?[0-9a-f]{1,2}$/i.test(text)) code = parseInt(text.replace(/^0x/i, ''), 16);
  // Type 0 marks an unused entry: sfdisk writes it (and the partition is gone); refuse instead.
  if (code === undefined || code === 0) throw new UsageError(`invalid MBR partition type '${text}' (want a hex byte, a shortcut such as L, S, Ex, U, R, V, or a type name)`);
  return code.toString(16);
}

function gptType(text: string): string {
  const word = GPT_WORDS.get(text);
  const guid = (word === undefined ? undefined : GPT_TYPE_ALIASES.get(word)) ?? GPT_TYPE_ALIASES.get(text) ?? byName(GPT_TYPE_NAMES, text) ?? text;
  if (!/^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/.test(guid)) {
    throw new UsageError(`invalid GPT partition type '${text}' (want a GUID, a shortcut such as L, S, U, R, V, H, or a type name)`);
  }
  return guid.toUpperCase();
}

/** The MBR type (hex, no prefix) or GPT type GUID for a script's type field; Linux data when absent. */
export function resolveType(label: 'dos' | 'gpt', text: string | undefined): string {
  return label === 'dos' ? dosType(text ?? 'L') : gptType(text ?? 'L');
}
