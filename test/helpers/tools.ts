/**
 * Access to the oracle tools (qemu-img, sfdisk, ...) and the built CLI.
 * Locally a missing tool skips its tests with a visible warning; in CI it fails them.
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const found = new Map<string, boolean>();

/** True when `tool` is on PATH. In CI a missing tool throws, so the suite fails instead of skipping. */
export function hasTool(tool: string): boolean {
  let present = found.get(tool);
  if (present === undefined) {
    present = spawnSync('sh', ['-c', `command -v ${tool}`]).status === 0;
    found.set(tool, present);
    if (!present) {
      if (process.env.CI === 'true') throw new Error(`${tool} is required in CI but missing`);
      console.warn(`WARNING: ${tool} not found; skipping the tests that need it`);
    }
  }
  return present;
}

/** Runs a tool and returns its stdout; throws with its stderr on failure. */
export function run(tool: string, args: string[], options: { cwd?: string; input?: string } = {}): string {
  return execFileSync(tool, args, { encoding: 'utf8', cwd: options.cwd, input: options.input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Path of the built CLI. */
export const CLI = fileURLToPath(new URL('../../dist/cli.cjs', import.meta.url));

/** Result of running the CLI. */
export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the built `platter` with arguments; never throws on a non-zero exit. */
export function platter(args: string[], options: { cwd?: string; input?: string; env?: NodeJS.ProcessEnv } = {}): CliResult {
  const result = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    cwd: options.cwd,
    input: options.input,
    env: { ...process.env, PLATTER_DEBUG: '', ...options.env },
    timeout: 60_000,
  });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** A fresh temporary directory, removed by the returned cleanup function. */
export function tempDir(prefix = 'platter-'): { dir: string; path: (name: string) => string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, path: (name) => join(dir, name), cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
