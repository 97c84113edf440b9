/** qemu's `-o key=value,key=value` option strings. */

import { UsageError } from './errors.js';

/**
 * Parses `-o` option text: comma-separated `key=value` pairs, where `,,` stands
 * for a literal comma (qemu's escaping). A bare `key` means `key=on`.
 * Several `-o` flags are merged in order; a later key wins.
 */
export function parseOptionString(texts: string | readonly string[] | undefined): Map<string, string> {
  const options = new Map<string, string>();
  for (const text of typeof texts === 'string' ? [texts] : texts ?? []) {
    for (const item of splitOptions(text)) {
      if (item === '') continue;
      const at = item.indexOf('=');
      const key = (at < 0 ? item : item.slice(0, at)).trim();
      if (key === '') throw new UsageError(`invalid option '${item}' in '${text}'`);
      options.set(key, at < 0 ? 'on' : item.slice(at + 1));
    }
  }
  return options;
}

/**
 * Parses the `-o` flags of a command line, each first checked as qemu-img
 * checks it (is_valid_option_list): not empty, not starting with a comma, not
 * ending in an unescaped one.
 */
export function parseOptionArgs(texts: string | readonly string[] | undefined): Map<string, string> {
  for (const text of typeof texts === 'string' ? [texts] : texts ?? []) {
    const trailingCommas = text.length - text.replace(/,+$/, '').length;
    if (text === '' || text.startsWith(',') || trailingCommas % 2 === 1) throw new UsageError(`Invalid option list: ${text}`);
  }
  return parseOptionString(texts);
}

function splitOptions(text: string): string[] {
  const items: string[] = [];
  let current = '';
  for (let i = 0; i < text.length; i++) {
    const char = text[i];
    if (char === ',' && text[i + 1] === ',') {
      current += ',';
      i++;
    } else if (char === ',') {
      items.push(current);
      current = '';
    } else {
      current += char;
    }
  }
  items.push(current);
  return items;
}

/** Reads an on/off option the way qemu does (on/off, true/false, yes/no). */
export function optionBoolean(value: string | undefined, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (/^(on|true|yes)$/i.test(value)) return true;
  if (/^(off|false|no)$/i.test(value)) return false;
  throw new UsageError(`Parameter '${name}' expects 'on' or 'off'`);
}

/** Throws on any option key not in `known`, naming the ones that are. */
export function rejectUnknownOptions(options: Map<string, string>, known: readonly string[], format: string): void {
  for (const key of options.keys()) {
    if (!known.includes(key)) {
      throw new UsageError(`invalid option '${key}' for format ${format} (known: ${known.join(', ')})`);
    }
  }
}
