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
import { imageSpec, type RawWindow } from '../core/block-options.js';
import { UnsupportedFeatureError, UsageError } from '../core/errors.js';
import type { Args } from './command.js';
import { withObjects } from './objects.js';

/** A positional that names images, and the flag that takes their format. */
export interface ImageOperand {
  positional: string;
  /** Default 'format' (-f); compare's second image takes -F. */
  formatFlag?: string;
  /** Words at the end of a list positional that are not images (convert's output). */
  exceptLast?: number;
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

/** Operand names whose json: name set `"backing": null`: opened without their backing file. */
const aloneNames = new Set<string>();

/** True when the operand `name` stands for came with `"backing": null`. */
export function openedAlone(name: string): boolean {
  return aloneNames.has(name);
}

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
  if (spec.noBacking) aloneNames.add(spec.path);
  return { name: spec.window?.name ?? spec.path, ...(spec.format === undefined ? {} : { format: spec.format }) };
}

