/** Shared output flags and printing. */

import { writeSync } from 'node:fs';
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
  writeStdout(toJson(value) + '\n');
}

/** Marks a bigint in JSON.stringify's output, to be replaced by its digits. */
const BIGINT_MARK = '\u0000bigint:';

/**
 * An empty list or object alone on its line (after its key, before a comma):
 * JSON.stringify writes `[]`, qemu's writer opens it, breaks the line and
 * closes it at the same indent. A string cannot match: its quotes would.
 */
const EMPTY_CONTAINER = /^( *)((?:"(?:[^"\\]|\\.)*": )?)(\[\]|\{\})(,?)$/gm;

/** JSON text as qemu-img prints it: 4-space indent, empty containers opened and closed on two lines, bigints (u64 fields past 2^53) as whole numbers. */
export function toJson(value: unknown): string {
  let marked = false;
  const indented = JSON.stringify(value, (_key, item: unknown) => (typeof item === 'bigint' ? ((marked = true), BIGINT_MARK + item.toString()) : item), 4);
  const text = indented.replace(EMPTY_CONTAINER, (_line, indent: string, key: string, pair: string, comma: string) => `${indent}${key}${pair[0]}\n${indent}${pair[1]}${comma}`);
  return marked ? text.replace(/"\\u0000bigint:(-?\d+)"/g, '$1') : text;
}

/** Prints text as is. */
export function printText(text: string): void {
  writeStdout(text);
}

/**
 * The exit status when the reader of stdout goes away (`platter map | head`):
 * what a shell reports for a program killed by SIGPIPE, as qemu-img would be.
 */
const STDOUT_CLOSED_STATUS = 128 + 13;

let stdout: NodeJS.WriteStream | undefined;

/**
 * process.stdout, for output that waits for its reader. Once it is in use,
 * every later write goes through it too, so output stays in order.
 */
export function stdoutStream(): NodeJS.WriteStream {
  if (!stdout) {
    stdout = process.stdout;
    stdout.on('error', stdoutFailed);
  }
  return stdout;
}

/**
 * Writes `text` to stdout now, straight to the descriptor while process.stdout
 * is unused: creating it loads node's stream modules (and net, for a pipe),
 * 3-5 ms of every short command. A full non-blocking pipe hands the rest to
 * process.stdout, which waits for the reader.
 */
export function writeStdout(text: string): void {
  if (stdout) {
    stdout.write(text);
    return;
  }
  const bytes = Buffer.from(text);
  let done = 0;
  try {
    while (done < bytes.length) done += writeSync(1, bytes, done);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EAGAIN') stdoutFailed(error as NodeJS.ErrnoException);
    stdoutStream().write(bytes.subarray(done));
  }
}

/** Ends the process when stdout cannot be written: quietly when its reader has gone. */
function stdoutFailed(error: NodeJS.ErrnoException): never {
  if (error.code === 'EPIPE') process.exit(STDOUT_CLOSED_STATUS);
  process.stderr.write(`platter: stdout: ${error.message}\n`);
  process.exit(1);
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
    const stream = stdoutStream();
    if (!stream.write(chunk)) await new Promise<void>((resolve) => stream.once('drain', () => resolve()));
  }
}
