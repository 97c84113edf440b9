/**
 * Runs hostile cases in child processes, so time and peak memory are measured
 * per process and a hang or a giant allocation cannot take the test runner down.
 */

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { RunnerResult } from './hostile-corpus.js';
import { CLI } from './tools.js';

/** Every case answers within this many milliseconds. */
export const MAX_CASE_MS = 2000;
/** Peak resident memory allowed for a child process. */
export const MAX_RSS_BYTES = 200 * 1024 * 1024;
/** A child that runs longer than this is killed: the case hung. */
const CHILD_TIMEOUT_MS = 60_000;

const RUNNER = fileURLToPath(new URL('./hostile-runner.mjs', import.meta.url));
const TIME = '/usr/bin/time';
const RSS_MARK = 'platter-test-peak-rss-kib=';

interface ChildOutput {
  status: number;
  stdout: string;
  stderr: string;
  ms: number;
}

function runChild(command: string, args: string[]): Promise<ChildOutput> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const child = spawn(command, args, { env: { ...process.env, PLATTER_DEBUG: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => (stdout += chunk));
    child.stderr.on('data', (chunk) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), CHILD_TIMEOUT_MS);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      if (signal) reject(new Error(`${command} ${args.join(' ')} was killed by ${signal} (hang?)`));
      else resolve({ status: status ?? -1, stdout, stderr, ms: performance.now() - started });
    });
  });
}

/** Runs one manifest of cases through the library in a child; returns its results and peak RSS. */
export async function runLibraryBatch(manifest: string): Promise<{ results: RunnerResult[]; maxRssBytes: number }> {
  const out = await runChild(process.execPath, [RUNNER, manifest]);
  if (out.status !== 0) throw new Error(`runner failed (${out.status}): ${out.stderr}`);
  return JSON.parse(out.stdout);
}

/** The CLI's answer with its wall time and peak RSS. */
export interface CliMeasured extends ChildOutput {
  maxRssBytes: number;
}

/**
 * Runs the built CLI, measuring peak RSS with `/usr/bin/time -f %M` (the last
 * stderr line, removed from `stderr`). Without /usr/bin/time, RSS reads as 0
 * locally; in CI its absence fails.
 */
export async function runCliMeasured(args: string[]): Promise<CliMeasured> {
  if (!existsSync(TIME)) {
    if (process.env.CI === 'true') throw new Error(`${TIME} is required in CI but missing`);
    return { ...(await runChild(process.execPath, [CLI, ...args])), maxRssBytes: 0 };
  }
  const out = await runChild(TIME, ['-f', `${RSS_MARK}%M`, process.execPath, CLI, ...args]);
  const lines = out.stderr.trimEnd().split('\n');
  const kib = Number(lines.find((line) => line.startsWith(RSS_MARK))?.slice(RSS_MARK.length));
  // time(1) adds its own line about the exit status; only the CLI's lines are kept.
  const own = lines.filter((line) => !line.startsWith(RSS_MARK) && !line.startsWith('Command exited with non-zero status'));
  return { ...out, stderr: own.length ? own.join('\n') + '\n' : '', maxRssBytes: kib * 1024 };
}
