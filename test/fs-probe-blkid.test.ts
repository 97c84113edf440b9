/**
 * Filesystem probing against blkid: each filesystem is made by its own mkfs
 * tool, and platter's type, label and UUID must equal `blkid -p`'s.
 */

import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeFilesystem } from '../formats/fs-probe/index.js';
import { FileDevice } from '../src/node/file-device.js';
import { mustRun, requireTools, runTool, tempDir } from './helpers/partition-tools.js';

interface Case {
  name: string;
  tools: string[];
  size: string;
  make(path: string, dir: string): Promise<unknown>;
}

const UUID = '3f1c2b4a-9d8e-4f7a-8b6c-5d4e3f2a1b0c';

const CASES: Case[] = [
  { name: 'ext2', tools: ['mke2fs'], size: '4M', make: (p) => mustRun('mke2fs', ['-q', '-F', '-t', 'ext2', '-L', 'two', '-U', UUID, p]) },
  { name: 'ext3', tools: ['mke2fs'], size: '8M', make: (p) => mustRun('mke2fs', ['-q', '-F', '-t', 'ext3', '-L', 'three', p]) },
  { name: 'ext4', tools: ['mke2fs'], size: '8M', make: (p) => mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'four', p]) },
  { name: 'xfs', tools: ['mkfs.xfs'], size: '300M', make: (p) => mustRun('mkfs.xfs', ['-q', '-f', '-L', 'xfslabel', '-m', `uuid=${UUID}`, p]) },
  { name: 'btrfs', tools: ['mkfs.btrfs'], size: '128M', make: (p) => mustRun('mkfs.btrfs', ['-q', '-f', '-L', 'btrlabel', '-U', UUID, p]) },
  { name: 'vfat (FAT12)', tools: ['mkfs.fat'], size: '2M', make: (p) => mustRun('mkfs.fat', ['-F', '12', '-n', 'TWELVE', '-i', 'a1b2c3d4', p]) },
  { name: 'vfat (FAT16)', tools: ['mkfs.fat'], size: '32M', make: (p) => mustRun('mkfs.fat', ['-F', '16', '-n', 'SIXTEEN', p]) },
  { name: 'vfat (FAT32)', tools: ['mkfs.fat'], size: '40M', make: (p) => mustRun('mkfs.fat', ['-F', '32', '-n', 'THIRTYTWO', p]) },
  { name: 'vfat (no label)', tools: ['mkfs.fat'], size: '2M', make: (p) => mustRun('mkfs.fat', ['-F', '12', p]) },
  { name: 'exfat', tools: ['mkfs.exfat'], size: '16M', make: (p) => mustRun('mkfs.exfat', ['-L', 'exlabel', p]) },
  { name: 'ntfs', tools: ['mkntfs'], size: '16M', make: (p) => mustRun('mkntfs', ['-q', '-F', '-f', '-L', 'ntlabel', p]) },
  { name: 'swap', tools: ['mkswap'], size: '1M', make: (p) => mustRun('mkswap', ['-L', 'swaplabel', '-U', UUID, p]) },
  {
    name: 'squashfs',
    tools: ['mksquashfs'],
    size: '0',
    make: async (p, dir) => {
      await mkdir(join(dir, 'sq'), { recursive: true });
      await writeFile(join(dir, 'sq', 'a.txt'), 'squash');
      return mustRun('mksquashfs', [join(dir, 'sq'), p, '-quiet', '-noappend']);
    },
  },
  {
    name: 'iso9660',
    tools: ['xorriso'],
    size: '0',
    make: async (p, dir) => {
      await mkdir(join(dir, 'iso'), { recursive: true });
      await writeFile(join(dir, 'iso', 'a.txt'), 'iso');
      return mustRun('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'ISOLABEL', '-o', p, join(dir, 'iso')]);
    },
  },
  {
    name: 'crypto_LUKS (v2)',
    tools: ['cryptsetup'],
    size: '20M',
    make: (p) => mustRun('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--label', 'lukslabel', '--uuid', UUID, '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', '-', p], 'secret'),
  },
  {
    name: 'crypto_LUKS (v1)',
    tools: ['cryptsetup'],
    size: '20M',
    make: (p) => mustRun('cryptsetup', ['luksFormat', '-q', '--type', 'luks1', '--pbkdf-force-iterations', '1000', '--key-file', '-', p], 'secret'),
  },
];

describe('filesystem probes against blkid -p', () => {
  let dir = '';
  let cleanup = async () => {};
  beforeAll(async () => ({ dir, cleanup } = await tempDir('probe')));
  afterAll(() => cleanup());

  it.each(CASES)('$name', async (testCase) => {
    if (!(await requireTools('blkid', 'truncate', ...testCase.tools))) return;
    const path = join(dir, testCase.name.replace(/\W+/g, '_') + '.img');
    if (testCase.size !== '0') await mustRun('truncate', ['-s', testCase.size, path]);
    await testCase.make(path, dir);
    const blkid = await runTool('blkid', ['-p', '-o', 'export', path]);
    const fields = Object.fromEntries(blkid.stdout.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
    expect(fields.TYPE).toBe(testCase.name.split(' ')[0]);
    const device = await FileDevice.open(path);
    try {
      const found = await probeFilesystem(device);
      expect({ type: found?.type, label: found?.label, uuid: found?.uuid }).toEqual({ type: fields.TYPE, label: fields.LABEL, uuid: fields.UUID });
    } finally {
      await device.close();
    }
  });
});
