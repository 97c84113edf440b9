/**
 * qemu block options that name an image in a file: an option string
 * (`driver=qcow2,file.filename=disk.qcow2`) or a `json:{...}` name, the same
 * options as JSON. platter opens files only: the drivers are qcow2 and raw over
 * the file protocol (raw with its offset and size: a part of the file), or the
 * file protocol itself (read as raw, named 'file' as qemu names it). Options
 * that only tune qemu's caches, locks or I/O are taken and have no effect; any
 * other is refused. Pure: the CLI reads its operands with it, and the Node host
 * the json: names written in images.
 */

import { alignUp } from './bytes.js';
import { SliceDevice, ZeroPaddedDevice, type BlockDevice } from './device.js';
import { PlatterError, UnsupportedFeatureError, UsageError } from './errors.js';
import { parseOptionString } from './options.js';
import { qdictOrder } from './qdict-order.js';
import { parseSize } from './size.js';

/** Where a raw image lies in its file; the size defaults to the rest of the file. */
export interface RawWindow {
  offset: number;
  size?: number;
  /** What the image is called (qemu's json: name for it). */
  name: string;
}

/** What an option string opens. */
export interface ImageSpec {
  path: string;
  /** Undefined: probed, as qemu probes when no driver is given. */
  format?: string;
  /** The raw driver's offset and size options: the image is that part of the file. */
  window?: RawWindow;
  /** `"backing": null` in a json: name: the image is opened without its backing file. */
  noBacking?: boolean;
}

/** Options of the image's format that tune qemu only (caches, locks, discards, checks); taken, without effect. */
const FORMAT_TUNING = new Set([
  'read-only',
  'auto-read-only',
  'force-share',
  'node-name',
  'discard',
  'detect-zeroes',
  'cache.direct',
  'cache.no-flush',
  'cache-size',
  'l2-cache-size',
  'l2-cache-entry-size',
  'refcount-cache-size',
  'cache-clean-interval',
  'pass-discard-request',
  'pass-discard-snapshot',
  'pass-discard-other',
  'overlap-check',
]);
/** Options of the file protocol that tune qemu only. */
const FILE_TUNING = new Set(['aio', 'aio-max-batch', 'locking', 'drop-cache', 'x-check-cache-dropped', 'node-name', 'read-only', 'auto-read-only', 'force-share', 'discard', 'detect-zeroes', 'cache.direct', 'cache.no-flush']);
const FORMATS = new Set(['qcow2', 'raw']);

/** The file and format an option string (or json: name) opens; errors name the string, as qemu-img does. */
export function imageSpec(word: string): ImageSpec {
  try {
    return specOf(word.startsWith('json:') ? jsonOptions(word.slice(5)) : keyValueOptions(word));
  } catch (error) {
    throw error instanceof PlatterError ? error.inFile(word) : error;
  }
}

function keyValueOptions(text: string): Map<string, string> {
  if (!text.includes('=')) throw new UsageError(`Cannot find device='${text}' nor node-name='${text}'`);
  return parseOptionString(text);
}

/**
 * An option's value: text from an option string; a json: name's numbers and
 * booleans keep their type (qemu prints them so), and its null stays null.
 */
type OptionValue = string | number | boolean | null;

/** A json: name's object, flattened to dotted keys as qemu flattens it. */
function jsonOptions(text: string): Map<string, OptionValue> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`Could not parse the JSON options: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError('the JSON options must be an object');
  const options = new Map<string, OptionValue>();
  const flatten = (object: Record<string, unknown>, prefix: string) => {
    for (const [key, item] of Object.entries(object)) {
      if (typeof item === 'object' && item !== null && !Array.isArray(item)) flatten(item as Record<string, unknown>, `${prefix}${key}.`);
      else options.set(`${prefix}${key}`, typeof item === 'number' || typeof item === 'boolean' || item === null ? item : String(item));
    }
  };
  flatten(value as Record<string, unknown>, '');
  return options;
}

function specOf(options: ReadonlyMap<string, OptionValue>): ImageSpec {
  const text = (key: string) => (options.has(key) ? String(options.get(key)) : undefined);
  const driver = text('driver');
  if (driver === 'file') {
    checkKeys(options, FILE_TUNING, 'filename', (key) => `Block protocol 'file' doesn't support the option '${key}'`);
    return { path: fileName(text('filename')), format: 'file' };
  }
  if (driver !== undefined && !FORMATS.has(driver)) {
    throw new UnsupportedFeatureError(`the '${driver}' driver is not supported: platter opens qcow2 and raw images in files`);
  }
  const fileDriver = text('file.driver');
  if (fileDriver !== undefined && fileDriver !== 'file') {
    throw new UnsupportedFeatureError(`the '${fileDriver}' protocol is not supported: platter opens files`);
  }
  const reference = text('file');
  // A plain `file=NAME` names a block node of a running qemu, not a file.
  if (reference !== undefined) throw new UsageError(`Cannot find device='${reference}' nor node-name='${reference}'`);
  const formatName = driver ?? 'qcow2';
  // qemu's way to open an image alone, for any format: a null backing (JSON only; an option string has no null).
  const noBacking = options.has('backing') && options.get('backing') === null;
  const own = new Map([...options].filter(([key]) => !key.startsWith('file.') && !(noBacking && key === 'backing')));
  const file = new Map([...options].filter(([key]) => key.startsWith('file.')).map(([key, value]) => [key.slice(5), value]));
  const windowed = driver === 'raw' && (own.has('offset') || own.has('size'));
  checkKeys(
    own,
    FORMAT_TUNING,
    'driver',
    (key) => `Block format '${formatName}' does not support the option '${key}'`,
    (key) => key.startsWith('overlap-check.') || (driver === 'raw' && RAW_WINDOW_KEYS.has(key)),
  );
  checkKeys(file, FILE_TUNING, 'filename', (key) => `Block protocol 'file' doesn't support the option '${key}'`, (key) => key === 'driver');
  const path = fileName(text('file.filename'));
  return { path, format: driver, ...(windowed ? { window: rawWindow(own, file) } : {}), ...(noBacking ? { noBacking } : {}) };
}

/** The raw driver's options that make the image a part of its file. */
const RAW_WINDOW_KEYS = new Set(['offset', 'size']);
/** qemu's sector: a raw image's size option must be whole ones, and its block layer counts a file's length in them. */
const SECTOR_SIZE = 512;

/**
 * The window the raw driver's offset and size name (the file's bounds and a
 * size of whole sectors are checked when it is opened, in qemu's order),
 * and the json: name qemu gives such an image: the options as given, the
 * file's among them with its driver, in the order qemu prints a dictionary.
 */
function rawWindow(own: ReadonlyMap<string, OptionValue>, file: ReadonlyMap<string, OptionValue>): RawWindow {
  const parse = (key: string) => {
    if (!own.has(key)) return undefined;
    const text = String(own.get(key));
    if (text.trim().startsWith('-')) throw new UsageError(`Parameter '${key}' expects a non-negative number below 2^64`);
    return parseSize(text, key);
  };
  const offset = parse('offset') ?? 0;
  const size = parse('size');
  const fileObject = qdictOrder(Object.fromEntries([['driver', 'file'], ...file]));
  const name = `json:${qemuJson(qdictOrder({ ...Object.fromEntries(own), file: fileObject }))}`;
  return { offset, ...(size === undefined ? {} : { size }), name };
}

/** JSON as qemu prints a json: name: on one line, with a space after each colon and comma. */
function qemuJson(value: unknown): string {
  if (typeof value !== 'object' || value === null) return JSON.stringify(value);
  return `{${Object.entries(value)
    .map(([key, item]) => `${JSON.stringify(key)}: ${qemuJson(item)}`)
    .join(', ')}}`;
}

/** Refuses a key that is neither `main` nor tuning (nor `alsoAllowed`). */
function checkKeys(options: ReadonlyMap<string, unknown>, tuning: Set<string>, main: string, message: (key: string) => string, alsoAllowed?: (key: string) => boolean): void {
  for (const key of options.keys()) {
    if (key === main || key === 'driver' || tuning.has(key) || alsoAllowed?.(key)) continue;
    throw new UsageError(message(key));
  }
}

function fileName(path: string | undefined): string {
  if (path === undefined || path === '') throw new UsageError('A block device must be specified for "file"');
  return path;
}

/**
 * The part of `file` that `window` names, checked as qemu's raw driver checks
 * it: against the file's size in whole sectors (its block layer's length), the
 * bounds first, then a size of whole sectors. The tail of the file's last
 * sector reads as zeros.
 */
export function deviceWindow(file: BlockDevice, window: RawWindow): BlockDevice {
  const { offset } = window;
  const fileLength = alignUp(file.size, SECTOR_SIZE);
  if (offset > fileLength) throw new UsageError(`Offset (${offset}) cannot be greater than size of the containing file (${fileLength})`).inFile(file.name);
  const size = window.size ?? fileLength - offset;
  if (size > fileLength - offset) {
    throw new UsageError(`The sum of offset (${offset}) and size (${size}) has to be smaller or equal to the actual size of the containing file (${fileLength})`).inFile(
      file.name,
    );
  }
  if (window.size !== undefined && window.size % SECTOR_SIZE !== 0) throw new UsageError(`Specified size is not multiple of ${SECTOR_SIZE}`).inFile(file.name);
  const padded = fileLength === file.size ? file : new ZeroPaddedDevice(file, fileLength);
  return new SliceDevice(padded, offset, size, { name: window.name, owns: true });
}
