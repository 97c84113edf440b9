/**
 * qemu-img's cache modes: `-t` for the image a command writes, `-T` for the
 * images it reads. platter always goes through the page cache; what a mode
 * still decides is whether the written image is flushed to disk before the
 * command ends (every mode but unsafe). The modes of the images read change
 * nothing and are only checked.
 */

import type { Argv } from 'yargs';
import { UsageError } from '../core/errors.js';
import type { Args } from './command.js';

const CACHE_MODES = new Set(['unsafe', 'writeback', 'writethrough', 'none', 'directsync']);

/** `mode`, checked; `which` names the option in the error as qemu-img does ('cache' for -t, 'source cache' for -T). */
function checkedMode(mode: string, which: 'cache' | 'source cache'): string {
  if (!CACHE_MODES.has(mode)) throw new UsageError(`Invalid ${which} option: ${mode}`);
  return mode;
}

/** Adds `-t CACHE` for the image written; `fallback` is the command's default (qemu-img convert's is unsafe, the others' writeback). */
export function withCacheMode(yargs: Argv, fallback: 'unsafe' | 'writeback'): Argv {
  return yargs.option('t', {
    type: 'string',
    requiresArg: true,
    default: fallback,
    describe: `Cache mode of the image written: unsafe (no flush) or writeback, writethrough, none, directsync (on disk before exit); default ${fallback}`,
  });
}

/** Adds `-T CACHE` for the images read. */
export function withSourceCacheMode(yargs: Argv): Argv {
  return yargs.option('T', {
    type: 'string',
    requiresArg: true,
    describe: "Cache mode of the images read, as qemu-img takes it (checked; platter reads through the page cache whatever it is)",
  });
}

/** True when the image written must be flushed before the command ends; checks -T too (qemu-img checks -T first). */
export function writeFlushes(args: Args): boolean {
  checkSourceCacheMode(args);
  return checkedMode(String(args.t), 'cache') !== 'unsafe';
}

/** Checks -T, for commands that write nothing. */
export function checkSourceCacheMode(args: Args): void {
  if (args.T !== undefined) checkedMode(String(args.T), 'source cache');
}
