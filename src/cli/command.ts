/** The shape of one CLI command module. */

import type { Argv } from 'yargs';

/** Parsed arguments as yargs hands them over. */
export type Args = Record<string, unknown> & { _: (string | number)[] };

/** One `platter` command: flags, examples, and a handler that returns the exit status. */
export interface CliCommand {
  /** yargs command string, e.g. `info <image>`. */
  command: string;
  describe: string;
  builder(yargs: Argv): Argv;
  /** Runs the command; the returned number is the exit status (default 0). */
  handler(args: Args): Promise<number | void>;
  /** Rewrites the raw arguments before parsing (e.g. a negative size that would read as a flag). */
  prepareArgv?(argv: string[]): string[];
  /** Exit status for errors (qemu-img's compare uses 2), or a function of the error; default 1. */
  errorExitCode?: number | ((error: unknown) => number);
}
