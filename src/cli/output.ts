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

/**
 * Collects text for stdout and writes it in large pieces, waiting for the pipe
 * to drain, so long listings stream with flat memory.
 */
export class StdoutBatcher {
  private pending = '';
  constructor(private readonly threshold = 64 * 1024) {}

  /** Queues text; resolves once it is safe to produce more. */
  async add(text: string): Promise<void> {
    this.pending += text;
    if (this.pending.length >= this.threshold) await this.flush();
  }

  /** Writes what is queued. */
  async flush(): Promise<void> {
    if (this.pending === '') return;
    const chunk = this.pending;
    this.pending = '';
    if (!process.stdout.write(chunk)) await new Promise<void>((resolve) => process.stdout.once('drain', () => resolve()));
  }
}
