/** Shared output flags and printing. */

import type { Argv } from 'yargs';

/** Adds `--output=human|json`. */
export function withOutput(yargs: Argv): Argv {
  return yargs.option('output', {
    choices: ['human', 'json'] as const,
    default: 'human',
    describe: 'Output format',
  });
}

/** Adds `-f FMT` for the input format. */
export function withFormat(yargs: Argv, flag = 'f', describe = 'Image format (default: probe)'): Argv {
  return yargs.option(flag, { alias: flag === 'f' ? 'format' : undefined, type: 'string', describe, requiresArg: true });
}

/** Prints a value as qemu-img prints JSON (4-space indent). */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 4) + '\n');
}

/** Prints text as is. */
export function printText(text: string): void {
  process.stdout.write(text);
}
