/**
 * Filesystem probing against blkid: each filesystem is made by its own mkfs
 * tool, and platter's type, label and UUID must equal `blkid -p`'s.
 */

import { execFileSync } from 'node:child_process';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeFilesystem } from '../formats/fs-probe/index.js';
import { FileDevice } from '../src/node/file-device.js';
import { mountOffsets } from '../src/ops/mount-offset.js';
import { listPartitions, sfdiskJson } from '../src/ops/partitions.js';
import { withImage } from './helpers/partition-images.js';
import { mustRun, requireTools, runTool, tempDir } from './helpers/partition-tools.js';

interface Case {
  name: string;
  tools: string[];
  size: string;
  make(path: string, dir: string): Promise<unknown>;
  /** blkid's TYPE, when not the name's first word; null: blkid finds nothing there, and neither may platter. */
  type?: string | null;
}

/** Writes `bytes` into the file at `offset` (a field changed after mkfs, as other tools or damage leave it). */
async function poke(path: string, offset: number, bytes: string | number[]): Promise<void> {
  const data = typeof bytes === 'string' ? Buffer.from(bytes, 'latin1') : Buffer.from(bytes);
  const handle = await open(path, 'r+');
  try {
    await handle.write(data, 0, data.length, offset);
  } finally {
    await handle.close();
  }
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
  // What blkid reads beyond the common cases: other ext kinds, FAT labels as Windows leaves them, old and odd signatures.
  { name: 'jbd (an external ext journal)', tools: ['mke2fs'], size: '8M', make: (p) => mustRun('mke2fs', ['-q', '-F', '-O', 'journal_dev', '-L', 'jlabel', p]) },
  { name: 'ext4dev (test_fs)', tools: ['mke2fs'], size: '8M', make: (p) => mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-E', 'test_fs', '-L', 'tfs', p]) },
  { name: 'ext4 (label padded with spaces)', tools: ['mke2fs'], size: '8M', make: (p) => mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'ab  ', p]) },
  {
    name: 'vfat (boot sector and root directory labels differ)',
    tools: ['mkfs.fat'],
    size: '32M',
    make: async (p) => (await mustRun('mkfs.fat', ['-F', '16', '-n', 'ROOTLBL', p]), poke(p, 0x2b, 'BOOTLBL    ')),
  },
  { name: 'vfat (label in the boot sector only)', tools: ['mkfs.fat'], size: '32M', make: async (p) => (await mustRun('mkfs.fat', ['-F', '16', p]), poke(p, 0x2b, 'BOOTONLY   ')) },
  { name: 'vfat (FAT32, root directory label only)', tools: ['mkfs.fat'], size: '40M', make: async (p) => (await mustRun('mkfs.fat', ['-F', '32', '-n', 'ROOT32', p]), poke(p, 0x47, 'NO NAME    ')) },
  { name: 'vfat (serial 0)', tools: ['mkfs.fat'], size: '2M', make: (p) => mustRun('mkfs.fat', ['-F', '12', '-i', '00000000', p]) },
  {
    name: 'vfat (no type string, no jump)',
    tools: ['mkfs.fat'],
    size: '32M',
    make: async (p) => (await mustRun('mkfs.fat', ['-F', '16', '-n', 'MY FAT16', '-i', 'deadbeef', p]), await poke(p, 0x36, '        '), poke(p, 0, [0, 0, 0])),
  },
  { name: 'vfat (media byte 0: not FAT)', tools: ['mkfs.fat'], size: '32M', type: null, make: async (p) => (await mustRun('mkfs.fat', ['-F', '16', p]), poke(p, 0x15, [0])) },
  {
    name: 'ntfs (MFT record 0 damaged: not NTFS)',
    tools: ['mkntfs'],
    size: '16M',
    type: null,
    make: async (p) => {
      await mustRun('mkntfs', ['-q', '-F', '-f', '-L', 'lab', p]);
      const boot = await readFile(p).then((bytes) => bytes.subarray(0, 512));
      const clusterBytes = boot.readUInt16LE(0x0b) * boot[0x0d]!;
      return poke(p, Number(boot.readBigUInt64LE(0x30)) * clusterBytes, 'XXXX');
    },
  },
  { name: 'ntfs (128 KiB clusters)', tools: ['mkntfs'], size: '256M', make: (p) => mustRun('mkntfs', ['-q', '-F', '-f', '-c', '131072', '-L', 'bigclus', p]) },
  { name: 'swap (32 KiB pages)', tools: ['mkswap'], size: '1M', make: (p) => mustRun('mkswap', ['-p', '32768', '-L', 'sw32k', p]) },
  { name: 'swap (version 0)', tools: ['mkswap'], size: '1M', make: async (p) => (await mustRun('mkswap', [p]), poke(p, 4086, 'SWAP-SPACE')) },
  { name: 'swsuspend', tools: ['mkswap'], size: '1M', make: async (p) => (await mustRun('mkswap', ['-L', 'hib', p]), poke(p, 4086, 'S1SUSPEND\0')) },
  { name: 'swap (header version 2: not swap)', tools: ['mkswap'], size: '1M', type: null, make: async (p) => (await mustRun('mkswap', [p]), poke(p, 1024, [2, 0, 0, 0])) },
  { name: 'xfs (block size 0: not XFS)', tools: ['mkfs.xfs'], size: '300M', type: null, make: async (p) => (await mustRun('mkfs.xfs', ['-q', '-f', p]), poke(p, 4, [0, 0, 0, 0])) },
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
    name: 'squashfs3 (major version 3)',
    tools: ['mksquashfs'],
    size: '0',
    make: async (p, dir) => {
      await mkdir(join(dir, 'sq3'), { recursive: true });
      await writeFile(join(dir, 'sq3', 'a.txt'), 'squash');
      await mustRun('mksquashfs', [join(dir, 'sq3'), p, '-quiet', '-noappend']);
      return poke(p, 28, [3, 0]);
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
    name: 'iso9660 (Joliet, a label beyond ASCII)',
    tools: ['xorriso'],
    size: '0',
    make: async (p, dir) => {
      await mkdir(join(dir, 'joliet'), { recursive: true });
      await writeFile(join(dir, 'joliet', 'a.txt'), 'iso');
      return mustRun('xorriso', ['-as', 'mkisofs', '-quiet', '-J', '-V', 'Läbel étiquette', '-o', p, join(dir, 'joliet')]);
    },
  },
  {
    name: 'iso9660 (Joliet, made in a UTF-8 locale)',
    tools: ['xorriso'],
    size: '0',
    make: async (p, dir) => {
      await mkdir(join(dir, 'joliet8'), { recursive: true });
      await writeFile(join(dir, 'joliet8', 'a.txt'), 'iso');
      // The primary label then holds UTF-8 bytes, which disagree with Joliet's: blkid takes Joliet's alone.
      execFileSync('xorriso', ['-as', 'mkisofs', '-quiet', '-J', '-V', 'Läbel étiquette', '-o', p, join(dir, 'joliet8')], { env: { ...process.env, LC_ALL: 'C.UTF-8' }, stdio: 'ignore' });
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
  {
    name: 'crypto_LUKS (v2, first header wiped: the second one)',
    tools: ['cryptsetup'],
    size: '20M',
    make: async (p) => {
      await mustRun('cryptsetup', ['luksFormat', '-q', '--type', 'luks2', '--label', 'second', '--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000', '--key-file', '-', p], 'secret');
      return poke(p, 0, new Array(4096).fill(0));
    },
  },
  {
    name: 'crypto_LUKS (an unknown version: no UUID)',
    tools: ['cryptsetup'],
    size: '20M',
    make: async (p) => (await mustRun('cryptsetup', ['luksFormat', '-q', '--type', 'luks1', '--pbkdf-force-iterations', '1000', '--key-file', '-', p], 'secret'), poke(p, 6, [0, 3])),
  },
];

describe('whole-disk filesystems', () => {
  it('a filesystem cut short is given the bytes the image holds, not the size its superblock claims', async () => {
    if (!(await requireTools('mke2fs', 'truncate'))) return;
    const { dir, cleanup } = await tempDir('cut-fs');
    try {
      const path = join(dir, 'cut.img');
      await mustRun('truncate', ['-s', '16M', path]);
      await mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'big', path]);
      await mustRun('truncate', ['-s', '8M', path]);
      const offsets = await withImage(path, (image) => mountOffsets(image));
      expect(offsets.targets[0]).toMatchObject({ name: 'disk', offset: 0, sizelimit: 8 * 1024 * 1024, filesystem: { type: 'ext4', label: 'big', size: 16 * 1024 * 1024 } });
    } finally {
      await cleanup();
    }
  });
});

describe('a partition table over a FAT boot sector', () => {
  it('is listed as sfdisk lists it once its entries describe partitions; without any the disk is the filesystem', async () => {
    if (!(await requireTools('mkfs.fat', 'sfdisk', 'truncate'))) return;
    const { dir, cleanup } = await tempDir('fat-table');
    try {
      const path = join(dir, 'fat.img');
      await mustRun('truncate', ['-s', '32M', path]);
      await mustRun('mkfs.fat', ['-F', '16', '-n', 'WHOLE', path]);
      const whole = await withImage(path, (image) => mountOffsets(image));
      expect(whole.targets.map((target) => [target.name, target.filesystem?.label])).toEqual([['disk', 'WHOLE']]);
      // sfdisk keeps the first 440 bytes of sector 0, and the FAT boot sector with them.
      await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], 'label: dos\nlabel-id: 0x0fa7fa7f\n,8M,L\n,,c\n');
      const listing = await withImage(path, (image) => listPartitions(image, { device: path }));
      const ours = sfdiskJson(listing)!;
      for (const partition of ours.partitiontable.partitions) delete partition.filesystem;
      expect(ours).toEqual(JSON.parse(await mustRun('sfdisk', ['--json', path])));
      const offsets = await withImage(path, (image) => mountOffsets(image));
      expect(offsets.targets.map((target) => [target.name, target.offset])).toEqual([['1', 1024 * 1024], ['2', 9 * 1024 * 1024]]);
    } finally {
      await cleanup();
    }
  });
});

describe('hybrid ISO images', () => {
  it('an ISO 9660 image with a partition table is listed whole at offset 0, as blkid reports it beside the table', async () => {
    if (!(await requireTools('xorriso', 'blkid'))) return;
    const { dir, cleanup } = await tempDir('hybrid');
    try {
      await mkdir(join(dir, 'src'), { recursive: true });
      await writeFile(join(dir, 'src', 'a.txt'), 'iso');
      const path = join(dir, 'hybrid.iso');
      await mustRun('xorriso', ['-as', 'mkisofs', '-quiet', '-V', 'HYB', '--protective-msdos-label', '-o', path, join(dir, 'src')]);
      const blkid = (await runTool('blkid', ['-p', '-o', 'export', path])).stdout;
      expect(blkid).toMatch(/^TYPE=iso9660$/m);
      expect(blkid).toMatch(/^PTTYPE=dos$/m);
      const offsets = await withImage(path, (image) => mountOffsets(image));
      expect(offsets.targets.map((target) => target.name)).toEqual(['disk', '1']);
      expect(offsets.targets[0]).toMatchObject({ offset: 0, filesystem: { type: 'iso9660', label: 'HYB' } });
    } finally {
      await cleanup();
    }
  });
});

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
    // -o export escapes blanks and shell characters with a backslash.
    const fields: Record<string, string> = Object.fromEntries(
      blkid.stdout.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1).replace(/\\(.)/g, '$1')]),
    );
    expect(fields.TYPE).toBe(testCase.type === null ? undefined : (testCase.type ?? testCase.name.split(' ')[0]));
    // -o export writes bytes beyond ASCII in cat -v's notation; -o value gives the label as it is.
    if (fields.LABEL !== undefined) fields.LABEL = (await runTool('blkid', ['-p', '-o', 'value', '-s', 'LABEL', path])).stdout.replace(/\n$/, '');
    const device = await FileDevice.open(path);
    try {
      const found = await probeFilesystem(device);
      expect({ type: found?.type, label: found?.label, uuid: found?.uuid }).toEqual({ type: fields.TYPE, label: fields.LABEL, uuid: fields.UUID });
    } finally {
      await device.close();
    }
  });
});
