/**
 * `-U` / `--force-share`, taken where qemu-img takes it. qemu-img locks the
 * images it opens and, without -U, refuses one that another process (a
 * running VM) holds. platter takes no locks and reads such an image as it
 * finds it either way, so the flag changes nothing but qemu-img's one rule:
 * an image opened for writing cannot be shared.
 */

import type { Argv } from 'yargs';
import { UsageError } from '../core/errors.js';
import type { Args } from './command.js';

export function withForceShare(yargs: Argv): Argv {
  return yargs.option('U', {
    alias: 'force-share',
    type: 'boolean',
    describe: "Accepted as qemu-img takes it: platter takes no locks, so an image in use is read as it is, with or without -U",
  });
}

/** Refuses -U for an image about to be opened for writing, as qemu-img does. */
export function refuseSharedWrite(args: Args, path: string, writable: boolean): void {
  if (args.U === true && writable) throw new UsageError('force-share=on can only be used with read-only images').inFile(path);
}
