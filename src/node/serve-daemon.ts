/**
 * `serve --fork` and `--pid-file`, as qemu-nbd takes them: the command
 * returns once the server listens, and the server goes on in the background.
 *
 * Node cannot fork itself, so the first process starts the same command again
 * as a detached child (without --fork), passes on what the child prints until
 * it listens (the start line, or the error that stopped it), and exits with
 * the child's status if it ended first, else 0. The child then writes nothing
 * more: no one reads its output.
 */

import { spawn } from 'node:child_process';
import { unlinkSync, writeFileSync } from 'node:fs';

/** Set in the child's environment: it is the background server. */
const FORKED_ENV = 'PLATTER_SERVE_FORKED';

/** True in the background child started by --fork. */
export function isForkedServer(): boolean {
  return process.env[FORKED_ENV] === '1';
}

/**
 * Starts this command again in the background without --fork and resolves
 * with the exit status for this process: 0 once the child listens (it has
 * printed its start, which ends with a newline, or with `}` and a newline in
 * JSON), or the child's own status when it stopped before that.
 */
export function forkServer(argv: readonly string[], json: boolean): Promise<number> {
  const args = argv.filter((word) => word !== '--fork');
  const child = spawn(process.execPath, [process.argv[1]!, ...args], {
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, [FORKED_ENV]: '1' },
  });
  return new Promise((resolve) => {
    let printed = '';
    let settled = false;
    const finish = (status: number) => {
      if (settled) return;
      settled = true;
      child.stdout.destroy();
      child.stderr.destroy();
      child.unref();
      resolve(status);
    };
    child.stderr.on('data', (chunk: Buffer) => process.stderr.write(chunk));
    child.stdout.on('data', (chunk: Buffer) => {
      process.stdout.write(chunk);
      printed += chunk.toString('utf8');
      if (json ? /\n}\n$/.test(printed) : printed.endsWith('\n')) finish(0);
    });
    child.on('exit', (code, signal) => finish(code ?? (signal ? 1 : 0)));
    child.on('error', () => finish(1));
  });
}

/** Writes this process's id to `path`, and returns a function that removes the file (at exit). */
export function writePidFile(path: string): () => void {
  writeFileSync(path, `${process.pid}\n`);
  return () => {
    try {
      unlinkSync(path);
    } catch {
      // Already gone: nothing to undo.
    }
  };
}
