/**
 * Real filesystems made by real tools in an MBR image (FAT32 in partition 1, ext4
 * in logical partition 6): platter's offsets let mtools and debugfs read a known
 * file back, and labels and UUIDs equal `blkid -p`'s.
 */

import { existsSync } from 'node:fs';
import { mkdir, open, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mountOffsets, selectTarget, type MountOffsets } from '../src/ops/mount-offset.js';
import { listPartitions } from '../src/ops/partitions.js';
import { mustRun, requireTools, runTool, tempDir } from './helpers/partition-tools.js';
import { withImage } from './helpers/partition-images.js';

const FAT_TEXT = `fat says hello ${process.pid}\n`;
const EXT_TEXT = `ext4 says hello ${process.pid}\n`;

/** blkid -p's view of a byte range of a file, as KEY=value pairs. */
async function blkid(path: string, offset: number, size: number): Promise<Record<string, string>> {
  const text = await mustRun('blkid', ['-p', '-o', 'export', '-O', String(offset), '-S', String(size), path]);
  return Object.fromEntries(text.trim().split('\n').map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]));
}

async function extractSlice(path: string, offset: number, size: number, target: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    const buffer = Buffer.alloc(size);
    await handle.read(buffer, 0, size, offset);
    await writeFile(target, buffer);
  } finally {
    await handle.close();
  }
}

describe('filesystems inside partitions, checked by real tools', () => {
  let available = false;
  let dir = '';
  let cleanup = async () => {};
  let image = '';
  let offsets: MountOffsets;

  beforeAll(async () => {
    available = await requireTools('sfdisk', 'mkfs.fat', 'mcopy', 'mtype', 'mke2fs', 'debugfs', 'blkid', 'truncate');
    ({ dir, cleanup } = await tempDir('fs'));
    if (!available) return;
    image = join(dir, 'disk.img');
    await mustRun('truncate', ['-s', '96M', image]);
    const script = 'label: dos\nlabel-id: 0x5eed0001\n\n,40M,c\n,,Ex\n,4M,S\n,20M,L\n';
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', image], script);
    // Offsets from sfdisk itself, so the filesystems are placed independently of platter.
    const table = JSON.parse(await mustRun('sfdisk', ['--json', image])).partitiontable;
    const byNumber = (n: number) => table.partitions.find((p: { node: string }) => p.node === `${image}${n}`);
    const fat = byNumber(1);
    const ext = byNumber(6);
    await mustRun('mkfs.fat', ['-F', '32', '-n', 'FATLABEL', '-i', '1234abcd', `--offset=${fat.start}`, image, String(fat.size / 2)]);
    await writeFile(join(dir, 'hello.txt'), FAT_TEXT);
    await mustRun('mcopy', ['-i', `${image}@@${fat.start * 512}`, join(dir, 'hello.txt'), '::/hello.txt']);
    const root = join(dir, 'root');
    await mkdir(root);
    await writeFile(join(root, 'hello.txt'), EXT_TEXT);
    await mustRun('mke2fs', ['-q', '-F', '-t', 'ext4', '-L', 'extlabel', '-U', '0c8a3f2e-1b2d-4e5f-8a9b-0c1d2e3f4a5b', '-d', root, '-E', `offset=${ext.start * 512}`, image, `${ext.size / 2}k`]);
    offsets = await withImage(image, (disk) => mountOffsets(disk));
  });
  afterAll(() => cleanup());

  it('finds vfat in partition 1 and ext4 in logical partition 6', async () => {
    if (!available) return;
    expect(selectTarget(offsets, '1').filesystem?.type).toBe('vfat');
    expect(selectTarget(offsets, '6').filesystem?.type).toBe('ext4');
    expect(selectTarget(offsets, '5').filesystem?.type).toBeUndefined();
    const listing = await withImage(image, (disk) => listPartitions(disk, { device: image }));
    expect(listing.partitions.map((p) => p.filesystem?.type)).toEqual(['vfat', undefined, undefined, 'ext4']);
  });

  it("mtools reads the known file at platter's offset of partition 1", async () => {
    if (!available) return;
    const fat = selectTarget(offsets, 'LABEL=FATLABEL');
    expect(fat.name).toBe('1');
    expect(await mustRun('mtype', ['-i', `${image}@@${fat.offset}`, '::/hello.txt'])).toBe(FAT_TEXT);
  });

  it("debugfs reads the known file from the slice at platter's offset of partition 6", async () => {
    if (!available) return;
    const ext = selectTarget(offsets, 'UUID=0c8a3f2e-1b2d-4e5f-8a9b-0c1d2e3f4a5b');
    expect(ext.name).toBe('6');
    const slice = join(dir, 'ext.slice');
    await extractSlice(image, ext.offset!, ext.sizelimit!, slice);
    expect(await mustRun('debugfs', ['-R', 'cat /hello.txt', slice])).toBe(EXT_TEXT);
  });

  it('labels, UUIDs and types equal blkid -p', async () => {
    if (!available) return;
    for (const name of ['1', '6']) {
      const target = selectTarget(offsets, name);
      const expected = await blkid(image, target.offset!, target.sizelimit!);
      expect({ type: target.filesystem?.type, label: target.filesystem?.label, uuid: target.filesystem?.uuid }).toEqual({
        type: expected.TYPE,
        label: expected.LABEL,
        uuid: expected.UUID,
      });
    }
  });

  it('a qcow2 image of the same disk gives the same offsets and filesystems', async () => {
    if (!available || !(await requireTools('qemu-img'))) return;
    const qcow2 = join(dir, 'disk.qcow2');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', image, qcow2]);
    const fromQcow2 = await withImage(qcow2, (disk) => mountOffsets(disk));
    expect(fromQcow2.format).toBe('qcow2');
    expect(fromQcow2.targets).toEqual(offsets.targets);
  });

  it('loop-mounts with the offsets when root with loop devices (else skipped)', async () => {
    if (!available) return;
    if (process.getuid?.() !== 0 || !existsSync('/dev/loop-control')) {
      console.warn('SKIPPED: loop mount needs root and loop devices');
      return;
    }
    const ext = selectTarget(offsets, '6');
    const mountpoint = join(dir, 'mnt');
    await mkdir(mountpoint);
    const mounted = await runTool('mount', ['-o', `loop,ro,offset=${ext.offset},sizelimit=${ext.sizelimit}`, image, mountpoint]);
    if (mounted.code !== 0 && /permission denied|not permitted|no free loop|failed to setup loop|cannot mount .* read-only|only root/i.test(mounted.stderr)) {
      console.warn(`SKIPPED: loop mount unavailable here: ${mounted.stderr.trim()}`);
      return;
    }
    expect(mounted.stderr).toBe('');
    try {
      expect(await readFile(join(mountpoint, 'hello.txt'), 'utf8')).toBe(EXT_TEXT);
    } finally {
      await runTool('umount', [mountpoint]);
    }
  });
});
