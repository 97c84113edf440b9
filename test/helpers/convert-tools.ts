/** Oracles and CLI runs for the convert/map/compare/dd tests. */

import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, fsyncSync, mkdtempSync, openSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built CLI. */
export const CLI = fileURLToPath(new URL('../../dist/cli.cjs', import.meta.url));

/**
 * True when `tool` runs here. Locally a missing tool skips its tests with a
 * visible warning; in CI (CI=true) a missing oracle fails the suite instead.
 */
export function haveTool(tool: string): boolean {
  const found = spawnSync(tool, ['--version'], { stdio: 'ignore' }).status === 0;
  if (found) return true;
  if (process.env.CI === 'true') throw new Error(`${tool} is required in CI but is not installed`);
  console.warn(`WARNING: ${tool} not found: skipping the tests that compare against it`);
  return false;
}

/** The result of one process run. */
export interface RunResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Longest a program may run before it is killed: a hang fails its test instead of stalling the suite. */
const RUN_TIMEOUT_MS = 120_000;

/** Runs a program, never throwing on a non-zero exit. */
export function run(program: string, args: string[], cwd?: string): RunResult {
  const result = spawnSync(program, args, { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: RUN_TIMEOUT_MS });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** Runs the platter CLI. */
export function platter(args: string[], cwd?: string): RunResult {
  return run(process.execPath, [CLI, ...args], cwd);
}

/** Runs qemu-img, throwing when it fails (for building fixtures). */
export function qemuImg(args: string[], cwd?: string): string {
  return execFileSync('qemu-img', args, { cwd, encoding: 'utf8' });
}

/** A fresh temporary directory and its cleanup. */
export function tempDir(prefix = 'platter-convert-'): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Blocks a file holds once written out (delayed allocation would otherwise hide the file system's own metadata). */
export function blocksOf(path: string): number {
  const fd = openSync(path, 'r+');
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  return statSync(path).blocks;
}

/** A file's bytes. */
export const bytesOf = (path: string) => readFileSync(path);
