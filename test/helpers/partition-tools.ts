/**
 * Helpers for partition-table tests: run external tools (sfdisk, sgdisk, mkfs,
 * mtools, debugfs), skip visibly when one is missing locally, fail in CI.
 */

import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);
const PATH = `${process.env.PATH ?? ''}:/usr/sbin:/sbin`;

/** Result of running a tool. */
export interface ToolResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs `command` with `args`, feeding `input` on stdin; never throws on a non-zero exit. */
export function runTool(command: string, args: string[], input?: string): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, PATH, LC_ALL: 'C' } });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code: code ?? -1, stdout, stderr }));
    // A tool that exits without reading its input must not fail the test with EPIPE.
    child.stdin.on('error', () => {});
    child.stdin.end(input ?? '');
  });
}

/** Runs a tool and throws with its stderr when it fails. */
export async function mustRun(command: string, args: string[], input?: string): Promise<string> {
  const result = await runTool(command, args, input);
  if (result.code !== 0) throw new Error(`${command} ${args.join(' ')} failed (${result.code}): ${result.stderr}`);
  return result.stdout;
}

const found = new Map<string, boolean>();

/** True when `tool` is on PATH (with the sbin directories added). */
export async function hasTool(tool: string): Promise<boolean> {
  if (!found.has(tool)) {
    try {
      await execFileAsync('sh', ['-c', `command -v ${tool}`], { env: { ...process.env, PATH } });
      found.set(tool, true);
    } catch {
      found.set(tool, false);
    }
  }
  return found.get(tool)!;
}

/**
 * The tools a test needs, checked once: false (with a visible warning) when one
 * is missing locally; in CI (CI=true) a missing tool is an error.
 */
export async function requireTools(...tools: string[]): Promise<boolean> {
  const missing: string[] = [];
  for (const tool of tools) if (!(await hasTool(tool))) missing.push(tool);
  if (missing.length === 0) return true;
  const message = `missing tools: ${missing.join(', ')}`;
  if (process.env.CI === 'true') throw new Error(`${message} (required in CI)`);
  console.warn(`SKIPPED: ${message}`);
  return false;
}

/**
 * A fresh temporary directory and its cleanup. With `inMemory`, it is made in
 * /dev/shm where there is one: sfdisk syncs after every write, which on a real
 * disk costs more than the work itself.
 */
export async function tempDir(prefix: string, inMemory = false): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const base = inMemory && existsSync('/dev/shm') ? '/dev/shm' : tmpdir();
  const dir = await mkdtemp(join(base, `platter-${prefix}-`));
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}

/** Runs `task` over `items` with at most `limit` running at once; results in input order. */
export async function mapLimited<T, R>(items: readonly T[], limit: number, task: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
