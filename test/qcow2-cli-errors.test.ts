/**
 * Images platter must refuse, or open with a warning, through the built CLI:
 * one clear line on stderr, qemu-img's exit status.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { findExtension, pokeFile } from './helpers/qcow2-cases.js';
import { qcow2TempDir, qcow2ToolAvailable, sh } from './helpers/qcow2-oracle.js';

const CLI = resolve('dist/cli.cjs');
const haveQemu = qcow2ToolAvailable('qemu-img');

/**
 * The LUKS image is a committed fixture (see fixtures/make.sh): qemu-img times its key
 * derivation on the thread's CPU clock and, while the suite keeps both cores busy,
 * gives up ("Unable to get accurate CPU usage") more often than not.
 */
function writeLuksImage(dir: string): void {
  writeFileSync(join(dir, 'luks.qcow2'), gunzipSync(readFileSync(new URL('../fixtures/luks.qcow2.gz', import.meta.url))));
}

function platter(cwd: string, args: string[]): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

describe.skipIf(!haveQemu)('qcow2 images the CLI refuses or warns about', () => {
  const temp = qcow2TempDir();
  const dir = temp.dir;
  afterAll(() => temp.cleanup());

  beforeAll(() => {
    writeLuksImage(dir);
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'aes.qcow2', '1M']);
    pokeFile(join(dir, 'aes.qcow2'), 32, [0, 0, 0, 1]); // crypt_method = 1 (AES)
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'unknown-bit.qcow2', '1M']);
    pokeFile(join(dir, 'unknown-bit.qcow2'), 78, [0x04]); // incompatible bit 10
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'named-bit.qcow2', '1M']);
    pokeFile(join(dir, 'named-bit.qcow2'), 78, [0x04]); // incompatible bit 10 ...
    const table = findExtension(join(dir, 'named-bit.qcow2'), 0x6803f857);
    pokeFile(join(dir, 'named-bit.qcow2'), table + 8, [0, 10]); // ... named by the table's first entry
    mkdirSync(join(dir, 'chain'));
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'chain/base.raw', '1M']);
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', 'chain/top.qcow2']);
    rmSync(join(dir, 'chain/base.raw'));
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'loop.qcow2', '1M']);
    sh(dir, 'qemu-img', ['rebase', '-u', '-b', 'loop.qcow2', '-F', 'qcow2', 'loop.qcow2']);
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'corrupt.qcow2', '1M']);
    pokeFile(join(dir, 'corrupt.qcow2'), 79, [0x02]); // the corrupt bit
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'no-snapshots-unaligned.qcow2', '1M']);
    pokeFile(join(dir, 'no-snapshots-unaligned.qcow2'), 70, [0x12, 0x34]); // snapshots_offset 0x1234, nb_snapshots still 0
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'empty-l1-unaligned.qcow2', '0']);
    pokeFile(join(dir, 'empty-l1-unaligned.qcow2'), 47, [0x34]); // l1_table_offset 0x34, l1_size 0
    mkdirSync(join(dir, 'corrupt-chain'));
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'corrupt-chain/base.qcow2', '1M']);
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'corrupt-chain/top.qcow2']);
    pokeFile(join(dir, 'corrupt-chain/base.qcow2'), 79, [0x02]); // the backing file's corrupt bit
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2-zero.qcow2', '1M']);
    sh(dir, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 0 64k', 'v2-zero.qcow2']);
    // The first L2 table of a fresh 1 MiB image with 64 KiB clusters sits at 0x40000: set the zero flag of its first entry.
    pokeFile(join(dir, 'v2-zero.qcow2'), 0x40000 + 7, [0x01]);
  });

  it('refuses to read a LUKS-encrypted image, in one line (info describes it)', () => {
    const result = platter(dir, ['convert', '-O', 'raw', 'luks.qcow2', 'luks.raw']);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('platter: luks.qcow2: encrypted images are not supported\n');
    expect(result.stdout).toBe('');
  });

  it('refuses to map an AES-encrypted image, with a JSON error when asked', () => {
    const result = platter(dir, ['map', '--output=json', 'aes.qcow2']);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('platter: aes.qcow2: encrypted images are not supported\n');
    expect(JSON.parse(result.stdout).error.code).toBe('EUNSUPPORTED');
  });

  it('names an unknown incompatible feature bit', () => {
    const result = platter(dir, ['info', 'unknown-bit.qcow2']);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('platter: unknown-bit.qcow2: unsupported qcow2 feature(s): unknown incompatible feature bit 10\n');
  });

  it('names an unknown incompatible feature from the feature-name table', () => {
    const result = platter(dir, ['info', 'named-bit.qcow2']);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('platter: named-bit.qcow2: unsupported qcow2 feature(s): dirty bit\n');
  });

  it('reports a missing backing file with the path it tried', () => {
    const result = platter(dir, ['info', '--backing-chain', 'chain/top.qcow2']);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe("platter: chain/top.qcow2: could not open backing file 'chain/base.raw': No such file or directory\n");
  });

  it('still shows info without --backing-chain when the backing file is missing', () => {
    const result = platter(dir, ['info', '--output=json', 'chain/top.qcow2']);
    expect(result.status).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual(JSON.parse(sh(dir, 'qemu-img', ['info', '--output=json', 'chain/top.qcow2'])));
  });

  it('refuses a backing chain that loops', () => {
    const result = platter(dir, ['info', '--backing-chain', 'loop.qcow2']);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^platter: loop.qcow2: backing chain has a cycle: .*loop.qcow2 -> .*loop.qcow2\n$/);
  });

  it('names the file when amend is given something that is not a qcow2 image, or an unreadable one', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'plain.raw', '1M']);
    for (const [args, expected] of [
      [['amend', '-f', 'qcow2', '-o', 'compat=0.10', 'plain.raw'], 'platter: plain.raw: not a qcow2 image (bad magic)\n'],
      [['amend', '--image-opts', '-o', 'compat=0.10', 'driver=qcow2,file.filename=plain.raw'], 'platter: plain.raw: not a qcow2 image (bad magic)\n'],
      [['amend', '-o', 'lazy_refcounts=on', 'unknown-bit.qcow2'], expect.stringMatching(/^platter: unknown-bit.qcow2: .*\n$/)],
    ] as const) {
      const result = platter(dir, [...args]);
      expect(result.status, args.join(' ')).toBe(1);
      expect(result.stderr, args.join(' ')).toEqual(expected);
    }
  });

  it('opens an image marked corrupt read-only, with a warning', () => {
    const result = platter(dir, ['info', '--output=json', 'corrupt.qcow2']);
    expect(result.status).toBe(0);
    expect(result.stderr).toMatch(/^platter: warning: corrupt.qcow2: image is marked corrupt; opened read-only\n$/);
    const info = JSON.parse(result.stdout);
    expect(info['format-specific'].data.corrupt).toBe(true);
    expect(info).toEqual(JSON.parse(sh(dir, 'qemu-img', ['info', '--output=json', 'corrupt.qcow2'])));
  });

  it('refuses an empty table whose offset is not cluster-aligned, as qemu-img does', () => {
    for (const [file, expected] of [
      ['no-snapshots-unaligned.qcow2', 'snapshot table offset 4660 is not cluster-aligned (at byte 64)'],
      ['empty-l1-unaligned.qcow2', 'L1 table offset 52 is not cluster-aligned (at byte 40)'],
    ]) {
      for (const command of ['info', 'map', 'check']) {
        const result = platter(dir, [command, file!]);
        expect(result.status, `${command} ${file}`).toBe(1);
        expect(result.stderr).toBe(`platter: ${file}: ${expected}\n`);
        const qemu = spawnSync('qemu-img', [command, file!], { cwd: dir, encoding: 'utf8' });
        expect(qemu.status, `qemu-img ${command} ${file}`).toBe(1);
        expect(qemu.stderr).toMatch(/offset invalid/);
      }
    }
  });

  it('names the backing file, not the top, when the backing file is marked corrupt', () => {
    const result = platter(dir, ['map', '--output=json', 'corrupt-chain/top.qcow2']);
    expect(result.status).toBe(0);
    expect(result.stderr).toBe('platter: warning: corrupt-chain/base.qcow2: image is marked corrupt; opened read-only\n');
    expect(JSON.parse(result.stdout)).toEqual(JSON.parse(sh(dir, 'qemu-img', ['map', '--output=json', 'corrupt-chain/top.qcow2'])));
  });

  it.runIf(qcow2ToolAvailable('qemu-io'))('refuses to read a zero cluster entry in a version 2 image, naming the file and the entry, as qemu-img does', () => {
    expect(sh(dir, 'qemu-img', ['check', 'v2-zero.qcow2'])).toMatch(/No errors/);
    for (const args of [['convert', '-O', 'raw', 'v2-zero.qcow2', 'v2-zero.raw'], ['map', 'v2-zero.qcow2']]) {
      const result = platter(dir, args);
      expect(result.status).toBe(1);
      expect(result.stderr).toBe('platter: v2-zero.qcow2: zero cluster entry in a version 2 image (L2 table at 262144, index 0) (at byte 262144)\n');
      const qemu = spawnSync('qemu-img', args, { cwd: dir, encoding: 'utf8' });
      expect(qemu.status).toBe(1);
      expect(qemu.stderr).toMatch(/Zero cluster entry found in pre-v3 image/);
    }
  });
});
