/** Bad input on the command line: one clear line on stderr and a non-zero exit, never a stack trace. */

import { chmodSync, cpSync, mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { CLI, platter, tempDir, type CliResult } from './helpers/tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Asserts the CLI failed with exactly one `platter: ...` line on stderr. */
function expectOneLineError(result: CliResult, pattern: RegExp): void {
  expect(result.status).not.toBe(0);
  const lines = result.stderr.trimEnd().split('\n');
  expect(lines).toHaveLength(1);
  expect(lines[0]).toMatch(/^platter: /);
  expect(lines[0]).toMatch(pattern);
  expect(result.stderr).not.toMatch(/\n\s+at /);
}

/**
 * Runs the CLI as an unprivileged user, so file permissions apply even when the tests
 * run as root. The checkout may sit in a directory that user cannot enter, so the built
 * CLI is copied to a world-readable place first (its runtime dependencies load lazily,
 * only when a zstd cluster is met, so none is needed here).
 */
function platterUnprivileged(args: string[]): CliResult {
  if (process.getuid?.() !== 0) return platter(args);
  const copy = join(tmp.dir, 'pkg');
  cpSync(dirname(CLI), join(copy, 'dist'), { recursive: true });
  writeFileSync(join(copy, 'package.json'), '{"type":"module"}');
  const cli = join(copy, 'dist', 'cli.cjs');
  const result = spawnSync('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, cli, ...args], {
    encoding: 'utf8',
  });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

describe('CLI errors', () => {
  it('a missing file', () => {
    expectOneLineError(platter(['info', tmp.path('nope.img')]), /nope\.img: Could not open: No such file or directory$/);
  });

  it('a directory', () => {
    mkdirSync(tmp.path('adir'));
    expectOneLineError(platter(['info', tmp.path('adir')]), /adir: is a directory$/);
  });

  it('an unreadable file', () => {
    const path = tmp.path('secret.img');
    writeFileSync(path, new Uint8Array(512));
    chmodSync(path, 0o000);
    chmodSync(tmp.dir, 0o755);
    expectOneLineError(platterUnprivileged(['info', path]), /secret\.img: Could not open: Permission denied$/);
  });

  it('an unknown format name', () => {
    const path = tmp.path('plain.img');
    writeFileSync(path, new Uint8Array(1024));
    expectOneLineError(platter(['info', '-f', 'vmdkx', path]), /unknown format 'vmdkx' \(known: .*raw/);
  });

  it('an image too broken to check names the file, as every command does', () => {
    const path = tmp.path('broken.qcow2');
    const header = new Uint8Array(512);
    const view = new DataView(header.buffer);
    view.setUint32(0, 0x514649fb); // 'QFI\xfb'
    view.setUint32(4, 3); // version
    view.setUint32(20, 16); // cluster_bits
    view.setBigUint64(24, 1n << 20n); // size
    view.setUint32(100, 104); // header_length; l1_size stays 0, too small for the size
    writeFileSync(path, header);
    for (const command of ['info', 'check', 'map']) {
      expectOneLineError(platter([command, path]), /^platter: \S*broken\.qcow2: L1 table is too small/);
    }
  });

  it('a bad size string', () => {
    expectOneLineError(platter(['create', tmp.path('new.img'), '12Q']), /invalid image size '12Q'/);
  });

  it('an unknown command and a missing operand', () => {
    expectOneLineError(platter(['frobnicate']), /Unknown argument|Unknown command|frobnicate/i);
    expectOneLineError(platter(['info']), /Not enough non-option arguments|image/i);
  });

  it('an unknown flag is named, even where it would take the image name as its value', () => {
    expectOneLineError(platter(['info', '-X', tmp.path('nope.img')]), /^platter: Unknown argument: X$/);
    expectOneLineError(platter(['convert', '--dirty-maps', '-O', 'raw', 'a.qcow2', 'b.raw']), /^platter: Unknown argument: dirty-maps$/);
    expectOneLineError(platter(['resize', '-C', '--bogus', 'a.qcow2', '1G']), /^platter: Unknown arguments: C, bogus$/);
    // A known flag and a missing operand still say what is missing.
    expectOneLineError(platter(['convert', '-O', 'raw', 'a.qcow2']), /^platter: Must specify image file name$/);
    expectOneLineError(platter(['check']), /Not enough non-option arguments/);
  });

  it('JSON output carries the error code too', () => {
    const result = platter(['info', '--output=json', tmp.path('nope.img')]);
    expect(result.status).not.toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ error: { code: 'ENOTFOUND' } });
  });

  it('shows a stack trace only with PLATTER_DEBUG=1', () => {
    const result = platter(['info', tmp.path('nope.img')], { env: { PLATTER_DEBUG: '1' } });
    expect(result.stderr).toMatch(/\n\s+at /);
  });
});

describe('CLI basics', () => {
  it('prints the version from package.json', async () => {
    const { version } = (await import('../package.json', { with: { type: 'json' } })).default;
    const result = platter(['--version']);
    expect(result.status).toBe(0);
    expect(result.stdout.trim()).toBe(`platter ${version}`);
  });

  it('every command has --help with an example', async () => {
    const { COMMANDS } = await import('../src/cli/commands.js');
    for (const entry of COMMANDS) {
      const result = platter([entry.name, '--help']);
      expect(result.status, entry.name).toBe(0);
      expect(result.stdout, entry.name).toMatch(/Examples:\n\s+platter /);
    }
  });
});

describe('stdout that cannot be written', () => {
  const fixture = fileURLToPath(new URL('../fixtures/mbr-small.raw', import.meta.url));
  const shell = (script: string) => spawnSync('bash', ['-c', script], { encoding: 'utf8' });

  it('ends quietly with 141, as SIGPIPE would, when the reader has gone', () => {
    // The reader closes the pipe at once, long before platter writes to it.
    const result = shell(`"${process.execPath}" "${CLI}" info --output=json "${fixture}" | (exec 0<&-); echo "\${PIPESTATUS[0]}"`);
    expect(result.stdout.trim()).toBe('141');
    expect(result.stderr).toBe('');
  });

  it('says in one line why it could not write', () => {
    const result = shell(`"${process.execPath}" "${CLI}" info "${fixture}" > /dev/full`);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('platter: stdout: ENOSPC: no space left on device, write\n');
  });
});

