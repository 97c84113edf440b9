/**
 * sfdisk's script format (what `sfdisk -d` prints and `sfdisk` reads):
 * header lines `label: dos`, `label-id: …`, `unit: sectors`, then one line per
 * partition, either named (`img1 : start=63, size=100, type=83, bootable`) or
 * unnamed (`63 100 83 *`, `,1000,S`). This module parses and prints the text;
 * placement of defaults is in `partition-layout.ts`.
 */

import { UsageError } from '../core/errors.js';
import { parseUtilLinuxSize } from './util-linux-size.js';

/** One partition line; absent fields take sfdisk's defaults. */
export interface ScriptEntry {
  /** From the device name before ':' (img5 → 5). */
  number?: number;
  /** In sectors. */
  start?: number;
  /** Start given in bytes (a K/M/G suffix); converted once the sector size is known. */
  startBytes?: number;
  /** In sectors, exactly as given. */
  size?: number;
  /**
   * Size given in bytes (a K/M/G suffix); converted once the sector size is
   * known, and the partition's end then aligned as sfdisk aligns it.
   */
  sizeBytes?: number;
  type?: string;
  bootable?: boolean;
  name?: string;
  uuid?: string;
  attrs?: string;
}

/** A parsed script. */
export interface Script {
  label?: 'dos' | 'gpt';
  labelId?: string;
  firstLba?: number;
  lastLba?: number;
  tableLength?: number;
  sectorSize?: number;
  /** The alignment the script asks for, in bytes. */
  grain?: number;
  entries: ScriptEntry[];
}

const HEADER_KEYS = new Set(['label', 'label-id', 'device', 'unit', 'first-lba', 'last-lba', 'table-length', 'sector-size', 'grain']);

function integer(text: string, what: string, line: number): number {
  if (!/^[0-9]+$/.test(text)) throw new UsageError(`script line ${line}: ${what} '${text}' is not a number`);
  const value = Number(text);
  if (!Number.isSafeInteger(value)) throw new UsageError(`script line ${line}: ${what} '${text}' is too large`);
  return value;
}

function applyHeader(script: Script, key: string, value: string, line: number): void {
  switch (key) {
    case 'label':
      if (value !== 'dos' && value !== 'gpt') throw new UsageError(`script line ${line}: unsupported label '${value}' (dos or gpt)`);
      script.label = value;
      break;
    case 'label-id':
      script.labelId = value;
      break;
    case 'unit':
      if (value !== 'sectors') throw new UsageError(`script line ${line}: unsupported unit '${value}' (only sectors)`);
      break;
    case 'first-lba':
      script.firstLba = integer(value, key, line);
      break;
    case 'last-lba':
      script.lastLba = integer(value, key, line);
      break;
    case 'table-length':
      script.tableLength = integer(value, key, line);
      break;
    case 'sector-size':
      script.sectorSize = integer(value, key, line);
      break;
    case 'grain':
      script.grain = parseUtilLinuxSize(value, `script line ${line}: grain`).value;
      // libfdisk aligns with bit masks: only a power of two gives the alignment asked for.
      if (script.grain < 512 || !Number.isInteger(Math.log2(script.grain))) throw new UsageError(`script line ${line}: grain '${value}' is not a power of two of at least 512 bytes`);
      break;
    default: // device: informative only
  }
}

/** Splits `a=1, b="x, y" c` into fields, honouring double quotes. */
function splitFields(text: string): string[] {
  const fields: string[] = [];
  let current = '';
  let quoted = false;
  let escaped = false;
  for (const char of text) {
    // Inside quotes a backslash escapes the next character (`\"`, `\\`), as the printer writes them.
    if (quoted && !escaped && char === '\\') escaped = true;
    else if (char === '"' && !escaped) quoted = !quoted;
    else escaped = false;
    if (!quoted && (char === ',' || char === ';' || char === ' ' || char === '\t')) {
      fields.push(current);
      current = '';
      // sfdisk separates fields with ';' as with ','.
      if (char === ',' || char === ';') fields.push(',');
      continue;
    }
    current += char;
  }
  fields.push(current);
  return fields;
}

/** A value without its quotes; other backslashes stay as written, as in sfdisk (`\"` is read as a quote). */
function unquote(text: string): string {
  if (text.length < 2 || !text.startsWith('"') || !text.endsWith('"')) return text;
  return text.slice(1, -1).replace(/\\"/g, '"');
}

const UTF8 = new TextEncoder();

/**
 * A partition name as sfdisk reads it, quoted or not: each `\xNN` is one byte
 * (sfdisk -d writes every byte outside printable ASCII, and a backslash or a
 * quote, that way), and the bytes are UTF-8.
 */
function unhexName(text: string, line: number): string {
  if (!text.includes('\\x')) return text;
  const bytes: number[] = [];
  for (let at = 0; at < text.length; ) {
    const hex = /^\\x([0-9a-fA-F]{2})/.exec(text.slice(at, at + 4));
    if (hex) {
      bytes.push(parseInt(hex[1]!, 16));
      at += 4;
      continue;
    }
    const char = String.fromCodePoint(text.codePointAt(at)!);
    bytes.push(...UTF8.encode(char));
    at += char.length;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(bytes));
  } catch {
    throw new UsageError(`script line ${line}: the name's \\x bytes are not UTF-8`);
  }
}

/**
 * A start or size field: a number of sectors, or of bytes with a K/M/G suffix,
 * read as sfdisk reads it (util-linux's size parser); a sign before it is
 * sfdisk's move/resize hint, which a new table has no use for.
 */
function parseNumberField(value: string, what: 'start' | 'size', line: number): { sectors?: number; bytes?: number } {
  const text = value.replace(/^[+-]/, '');
  if (value === '' || value === '-' || value === '+') return {};
  const { value: number, suffixed } = parseUtilLinuxSize(text, `script line ${line}: ${what}`);
  return suffixed ? { bytes: number } : { sectors: number };
}

function parseStartField(entry: ScriptEntry, value: string, line: number): void {
  const { sectors, bytes } = parseNumberField(value, 'start', line);
  if (sectors !== undefined) entry.start = sectors;
  if (bytes !== undefined) entry.startBytes = bytes;
}

function parseSizeField(entry: ScriptEntry, value: string, line: number): void {
  const { sectors, bytes } = parseNumberField(value, 'size', line);
  if (sectors !== undefined) entry.size = sectors;
  if (bytes !== undefined) entry.sizeBytes = bytes;
}

function applyNamedField(entry: ScriptEntry, field: string, line: number): void {
  const eq = field.indexOf('=');
  const key = (eq < 0 ? field : field.slice(0, eq)).trim().toLowerCase();
  const value = eq < 0 ? '' : unquote(field.slice(eq + 1).trim());
  switch (key) {
    case 'start':
      parseStartField(entry, value, line);
      break;
    case 'size':
      parseSizeField(entry, value, line);
      break;
    case 'type':
    case 'id':
      entry.type = value;
      break;
    case 'bootable':
      entry.bootable = true;
      break;
    case 'name':
      entry.name = unhexName(value, line);
      break;
    case 'uuid':
      entry.uuid = value.toUpperCase();
      break;
    case 'attrs':
      entry.attrs = value;
      break;
    default:
      throw new UsageError(`script line ${line}: unknown field '${key}'`);
  }
}

/** `key=value` pairs separated by commas or blanks; values may be "quoted" and may have blanks after '='. */
const NAMED_FIELD = /[\s,]*([A-Za-z-]+)(?:\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*))?/y;

function parseNamedEntry(text: string, line: number): ScriptEntry {
  const entry: ScriptEntry = {};
  NAMED_FIELD.lastIndex = 0;
  while (NAMED_FIELD.lastIndex < text.length) {
    const at = NAMED_FIELD.lastIndex;
    const match = NAMED_FIELD.exec(text);
    if (!match) {
      if (/^[\s,]*$/.test(text.slice(at))) break;
      throw new UsageError(`script line ${line}: cannot read '${text.slice(at)}'`);
    }
    applyNamedField(entry, match[2] === undefined ? match[1]! : `${match[1]}=${match[2]}`, line);
  }
  return entry;
}

/** `start size type bootable`, separated by commas or blanks; empty fields keep defaults. */
function parseUnnamedEntry(text: string, line: number): ScriptEntry {
  const entry: ScriptEntry = {};
  const positional: string[] = [''];
  for (const field of splitFields(text)) {
    if (field === ',') positional.push('');
    else if (field !== '') {
      if (positional[positional.length - 1] !== '') positional.push('');
      positional[positional.length - 1] = field;
    }
  }
  const [start = '', size = '', type = '', boot = ''] = positional.map((field) => field.trim());
  parseStartField(entry, start, line);
  parseSizeField(entry, size, line);
  if (type !== '' && type !== '-') entry.type = unquote(type);
  // sfdisk takes '*' or '+' for bootable and '-' for not; anything else is an error.
  if (boot === '*' || boot === '+') entry.bootable = true;
  else if (boot !== '' && boot !== '-') throw new UsageError(`script line ${line}: bootable flag '${boot}' is not '*', '+' or '-'`);
  return entry;
}

function numberOfNode(node: string): number | undefined {
  const match = /([0-9]+)$/.exec(node.trim());
  return match ? Number(match[1]) : undefined;
}

/** Parses script text. */
export function parseScript(text: string): Script {
  const script: Script = { entries: [] };
  text.split(/\r?\n/).forEach((raw, index) => {
    const line = index + 1;
    const content = raw.trim();
    if (content === '' || content.startsWith('#')) return;
    const header = /^([a-z-]+)\s*:\s*(.*)$/.exec(content);
    if (header && HEADER_KEYS.has(header[1]!)) {
      applyHeader(script, header[1]!, header[2]!.trim(), line);
      return;
    }
    // dotAll: a quoted GPT name may hold U+2028/U+2029, which `.` would not match.
    const named = /^(\S+)\s*:\s*(.*)$/s.exec(content);
    if (named && !named[1]!.includes('=')) {
      const entry = parseNamedEntry(named[2]!, line);
      const number = numberOfNode(named[1]!);
      if (number !== undefined) entry.number = number;
      script.entries.push(entry);
    } else if (content.includes('=')) {
      script.entries.push(parseNamedEntry(content, line));
    } else {
      script.entries.push(parseUnnamedEntry(content, line));
    }
  });
  return script;
}
