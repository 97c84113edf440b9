/**
 * Images named by qemu block options instead of a file name: `--image-opts`
 * makes every image operand an option string
 * (`driver=qcow2,file.filename=disk.qcow2`), and a `json:{...}` operand is the
 * same options as JSON, with or without it, as qemu-img takes them. platter
 * opens files only: the drivers are qcow2 and raw over the file protocol (raw
 * with its offset and size: a part of the file), or the file protocol itself
 * (read as raw, named 'file' as qemu names it). Options that only tune qemu's
 * caches, locks or I/O are taken and have no effect; any other is refused.
 */

import type { Argv } from 'yargs';
import { PlatterError, UnsupportedFeatureError, UsageError } from '../core/errors.js';
import { parseOptionString } from '../core/options.js';
import { parseSize } from '../core/size.js';
import type { RawWindow } from '../node/open.js';
import type { Args } from './command.js';
import { withObjects } from './objects.js';
import { qdictOrder } from './qdict-order.js';

/** A positional that names images, and the flag that takes their format. */
export interface ImageOperand {
  positional: string;
  /** Default 'format' (-f); compare's second image takes -F. */
  formatFlag?: string;
  /** Words at the end of a list positional that are not images (convert's output). */
  exceptLast?: number;
}

/** What an option string opens. */
export interface ImageSpec {
  path: string;
  /** Undefined: probed, as qemu probes when no driver is given. */
  format?: string;
  /** The raw driver's offset and size options: the image is that part of the file. */
  window?: RawWindow;
}

/**
 * The raw images that are part of a file, by the name their operand was
 * replaced with (qemu's json: name for them), for openForCli: a name that
 * is not a file path stands for the file, the window and the driver.
 */
const rawWindows = new Map<string, { path: string; window: RawWindow }>();

/** The file and window an operand name stands for, when it names a part of a file. */
export function rawWindowNamed(name: string): { path: string; window: RawWindow } | undefined {
  return rawWindows.get(name);
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

/** Adds `--image-opts`, which makes the `operands` option strings (and reads `json:` operands always). */
export function withImageOpts(yargs: Argv, operands: readonly ImageOperand[]): Argv {
  // Every command that takes --image-opts takes --object too, as in qemu-img.
  return withObjects(yargs)
    .option('image-opts', {
      type: 'boolean',
      describe: 'Image names are qemu block options, e.g. driver=qcow2,file.filename=disk.qcow2 (a json:{...} name is read either way)',
    })
    .middleware((args) => resolveImageOperands(args as Args, operands));
}

/** Replaces option-string operands in `args` by the paths they name, and sets their format flags. */
export function resolveImageOperands(args: Args, operands: readonly ImageOperand[]): void {
  const imageOpts = args['image-opts'] === true;
  const given = new Set(operands.map((operand) => operand.formatFlag ?? 'format').filter((flag) => args[flag] !== undefined));
  for (const operand of operands) {
    const flag = operand.formatFlag ?? 'format';
    const value = args[operand.positional];
    const words = Array.isArray(value) ? (value as string[]).map(String) : typeof value === 'string' ? [value] : [];
    const images = words.length - (Array.isArray(value) ? operand.exceptLast ?? 0 : 0);
    if (imageOpts && images > 0 && given.has(flag)) throw new UsageError('--image-opts and --format are mutually exclusive');
    let chosen: string | undefined;
    for (let index = 0; index < images; index++) {
      const { name, format } = resolveImageOperand(words[index]!, imageOpts);
      words[index] = name;
      if (format === undefined) continue;
      if (chosen !== undefined && chosen !== format) throw new UnsupportedFeatureError('images of different drivers in one command are not supported');
      chosen = format;
    }
    // A format given on the command line wins over a json: name's driver.
    if (chosen !== undefined && !given.has(flag)) args[flag] = chosen;
    args[operand.positional] = Array.isArray(value) ? words : words[0];
  }
}

/**
 * One image operand (a positional's word, or dd's `if=`): an option string
 * with `imageOpts`, a json: name either way, else a file name. Returns the
 * name to open it by (a part of a file is registered for openForCli under
 * its json: name) and the format its driver gives.
 */
export function resolveImageOperand(word: string, imageOpts: boolean): { name: string; format?: string } {
  if (!imageOpts && !word.startsWith('json:')) return { name: word };
  const spec = imageSpec(word);
  if (spec.window) rawWindows.set(spec.window.name, { path: spec.path, window: spec.window });
  return { name: spec.window?.name ?? spec.path, ...(spec.format === undefined ? {} : { format: spec.format }) };
}

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

/** A json: name's object, flattened to dotted keys as qemu flattens it. */
function jsonOptions(text: string): Map<string, string> {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`Could not parse the JSON options: ${(error as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new UsageError('the JSON options must be an object');
  const options = new Map<string, string>();
  const flatten = (object: Record<string, unknown>, prefix: string) => {
    for (const [key, item] of Object.entries(object)) {
      if (typeof item === 'object' && item !== null && !Array.isArray(item)) flatten(item as Record<string, unknown>, `${prefix}${key}.`);
      else options.set(`${prefix}${key}`, String(item));
    }
  };
  flatten(value as Record<string, unknown>, '');
  return options;
}

function specOf(options: Map<string, string>): ImageSpec {
  const driver = options.get('driver');
  if (driver === 'file') {
    checkKeys(options, FILE_TUNING, 'filename', (key) => `Block protocol 'file' doesn't support the option '${key}'`);
    return { path: fileName(options.get('filename')), format: 'file' };
  }
  if (driver !== undefined && !FORMATS.has(driver)) {
    throw new UnsupportedFeatureError(`the '${driver}' driver is not supported: platter opens qcow2 and raw images in files`);
  }
  const fileDriver = options.get('file.driver');
  if (fileDriver !== undefined && fileDriver !== 'file') {
    throw new UnsupportedFeatureError(`the '${fileDriver}' protocol is not supported: platter opens files`);
  }
  const reference = options.get('file');
  // A plain `file=NAME` names a block node of a running qemu, not a file.
  if (reference !== undefined) throw new UsageError(`Cannot find device='${reference}' nor node-name='${reference}'`);
  const formatName = driver ?? 'qcow2';
  const own = new Map([...options].filter(([key]) => !key.startsWith('file.')));
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
  const path = fileName(file.get('filename'));
  return { path, format: driver, ...(windowed ? { window: rawWindow(own, file) } : {}) };
}

/** The raw driver's options that make the image a part of its file. */
const RAW_WINDOW_KEYS = new Set(['offset', 'size']);
/** qemu's sector: a raw image's size option must be whole ones. */
const SECTOR_SIZE = 512;

/**
 * The window the raw driver's offset and size name, with qemu's checks (a
 * size of whole sectors; the file's bounds are checked when it is opened),
 * and the json: name qemu gives such an image: the options as given, the
 * file's among them with its driver, in the order qemu prints a dictionary.
 */
function rawWindow(own: Map<string, string>, file: Map<string, string>): RawWindow {
  const parse = (key: string) => {
    const text = own.get(key);
    if (text === undefined) return undefined;
    if (text.trim().startsWith('-')) throw new UsageError(`Parameter '${key}' expects a non-negative number below 2^64`);
    return parseSize(text, key);
  };
  const offset = parse('offset') ?? 0;
  const size = parse('size');
  if (size !== undefined && size % SECTOR_SIZE !== 0) throw new UsageError(`Specified size is not multiple of ${SECTOR_SIZE}`);
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
function checkKeys(options: Map<string, string>, tuning: Set<string>, main: string, message: (key: string) => string, alsoAllowed?: (key: string) => boolean): void {
  for (const key of options.keys()) {
    if (key === main || key === 'driver' || tuning.has(key) || alsoAllowed?.(key)) continue;
    throw new UsageError(message(key));
  }
}

function fileName(path: string | undefined): string {
  if (path === undefined || path === '') throw new UsageError('A block device must be specified for "file"');
  return path;
}
