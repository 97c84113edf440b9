/** The flags that control which files named inside images a command may open. */

import type { Argv } from 'yargs';
import type { OpenFileOptions } from '../node/open.js';
import type { Args } from './command.js';

/**
 * Adds `--no-backing` and `--backing-root DIR`. yargs reads `--no-backing` as
 * `backing: false`, so a hidden `backing` flag does the parsing while
 * `no-backing` is what the help shows.
 */
export function withNamedFilePolicy(yargs: Argv): Argv {
  return yargs
    .option('no-backing', {
      type: 'boolean',
      describe: 'Open no backing or external data file: inspect the named image alone',
    })
    .option('backing', { type: 'boolean', hidden: true })
    .option('backing-root', {
      type: 'string',
      requiresArg: true,
      describe: 'Refuse backing and data files that resolve (symlinks followed) outside DIR',
    });
}

/** The open options the policy flags set. */
export type NamedFilePolicy = Pick<OpenFileOptions, 'noBacking' | 'backingRoot'>;

/** The open options the policy flags ask for. */
export function namedFilePolicyOf(args: Args): NamedFilePolicy {
  const options: NamedFilePolicy = {};
  if (args.backing === false) options.noBacking = true;
  if (typeof args['backing-root'] === 'string') options.backingRoot = args['backing-root'];
  return options;
}
