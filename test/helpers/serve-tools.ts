/** Helpers for serve tests: oracle tools, temp dirs, and a served CLI process. */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The built CLI. */
export const CLI = fileURLToPath(new URL('../../dist/cli.cjs', import.meta.url));

const toolCache = new Map<string, boolean>();

/**
 * True when `tool` runs here. Missing locally: false with a visible warning (the
 * caller skips). Missing in CI (CI=true): throws, so the test fails instead.
 */
export function haveServeTool(tool: string): boolean {
  let found = toolCache.get(tool);
  if (found === undefined) {
    found = spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0;
    toolCache.set(tool, found);
  }
  if (!found && process.env.CI === 'true') throw new Error(`${tool} is required in CI but is not installed`);
  if (!found) console.warn(`WARNING: ${tool} not installed; skipping the tests that need it`);
  return found;
}

/** Runs a tool synchronously; throws with its stderr on failure. */
export function runTool(tool: string, args: string[], options: { timeout?: number } = {}): string {
  const result = spawnSync(tool, args, { encoding: 'utf8', timeout: options.timeout ?? 30_000 });
  if (result.status !== 0) {
    throw new Error(`${tool} ${args.join(' ')} failed (${result.status ?? result.signal}): ${result.stderr}`);
  }
  return result.stdout;
}

/** A fresh temp directory, removed by the returned cleanup. */
export function makeServeTempDir(): { dir: string; cleanup(): void } {
  const dir = mkdtempSync(join(tmpdir(), 'platter-serve-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** A running `platter serve`. */
export interface ServedImage {
  process: ChildProcess;
  /** The unix socket path ('' on TCP). */
  socket: string;
  uri: string;
  /** Everything written on stderr so far. */
  stderr(): string;
  /** Resolves with the exit code once the process ends. */
  exited: Promise<number | null>;
  /** SIGTERM, then SIGKILL after a grace period; resolves when it ended. */
  stop(): Promise<number | null>;
}

const running = new Set<ServedImage>();

/**
 * Starts `platter serve ARGS -k SOCKET IMAGE` (no -k when `socket` is null) and
 * waits until it prints where it listens.
 */
export async function startServe(image: string, socket: string | null, args: string[] = []): Promise<ServedImage> {
  const where = socket === null ? [] : ['-k', socket];
  const child = spawn(process.execPath, [CLI, 'serve', '--output=json', ...where, ...args, image], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stderr!.on('data', (chunk) => (stderr += chunk));
  const exited = new Promise<number | null>((done) => child.on('exit', (code) => done(code)));
  const started = await new Promise<{ uri: string; socket: string }>((resolveStart, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${stderr}`)), 15_000);
    child.stdout!.on('data', (chunk) => {
      stdout += chunk;
      if (!stdout.includes('\n}')) return;
      clearTimeout(timer);
      const info = JSON.parse(stdout) as { uri: string; socket?: string };
      resolveStart({ uri: info.uri, socket: info.socket ?? '' });
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`serve exited with ${code} before starting: ${stderr}`));
    });
  });
  const served: ServedImage = {
    process: child,
    socket: started.socket,
    uri: started.uri,
    stderr: () => stderr,
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
        await exited;
        clearTimeout(timer);
      }
      running.delete(served);
      return child.exitCode;
    },
  };
  running.add(served);
  return served;
}

/** Stops every server a test left running (call from afterEach). */
export async function stopAllServes(): Promise<void> {
  await Promise.all([...running].map((served) => served.stop()));
}

/** Resolves with the exit code, or rejects if the process is still running after `ms`. */
export function exitWithin(served: ServedImage, ms: number): Promise<number | null> {
  return new Promise((resolveExit, reject) => {
    const timer = setTimeout(() => reject(new Error(`serve still running after ${ms} ms`)), ms);
    void served.exited.then((code) => {
      clearTimeout(timer);
      resolveExit(code);
    });
  });
}
