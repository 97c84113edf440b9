/**
 * Image formats platter does not read (VMDK, VDI, VHD, VHDX, QED, Parallels, qcow)
 * are refused by name, never read as raw disks: their bytes are containers,
 * not the guest's disk. Made by qemu-img, which names the same format in
 * `info`; `-f raw` still reads the file's bytes, and a qcow2 overlay on such
 * a file names the backing file it cannot read.
 */

import { statSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { foreignImageFormat } from '../formats/foreign/index.js';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-foreign-');
afterAll(() => tmp.cleanup());

/** What qemu-img creates, by file name: format and -o options. */
const images: Record<string, [string, string[]]> = {
  'sparse.vmdk': ['vmdk', []],
  'flat.vmdk': ['vmdk', ['-o', 'subformat=monolithicFlat']],
  'disk.vdi': ['vdi', []],
  'disk.vhd': ['vpc', []],
  'disk.vhdx': ['vhdx', []],
  'disk.qed': ['qed', []],
  'disk.hdd': ['parallels', []],
  // The first qcow format: qcow2's magic, version 1.
  'disk.qcow': ['qcow', []],
};

describe.skipIf(!hasTool('qemu-img'))('foreign image formats, made by qemu-img', () => {
  beforeAll(() => {
    for (const [name, [format, options]] of Object.entries(images)) run('qemu-img', ['create', '-q', '-f', format, ...options, tmp.path(name), '4M']);
  });

  it.each(Object.entries(images))('%s: qemu-img says %j; platter refuses it by that name in every command', (name, [format]) => {
    expect(shStatus(tmp.dir, 'qemu-img', ['info', name]).stdout).toContain(`file format: ${format}\n`);
    const message = `platter: ${name}: ${format} images are not supported (platter reads qcow2 and raw); -f raw reads the file's bytes as a disk\n`;
    for (const args of [['info', name], ['map', name], ['convert', '-O', 'raw', name, 'out.raw'], ['check', name], ['measure', '-O', 'qcow2', name], ['partitions', name]]) {
      const result = platter(args, { cwd: tmp.dir });
      expect(result.status, args.join(' ')).not.toBe(0);
      expect(result.stderr, args.join(' ')).toBe(message);
    }
    const named = platter(['info', '-f', format, name], { cwd: tmp.dir });
    expect(named.stderr).toBe(message);
    const raw = platter(['info', '--output=json', '-f', 'raw', name], { cwd: tmp.dir });
    expect(raw.status).toBe(0);
    expect(JSON.parse(raw.stdout)['virtual-size']).toBe(Math.ceil(statSync(tmp.path(name)).size / 512) * 512);
  });

  it("a file with qcow2's magic but version 0 is raw to both tools' probes", () => {
    const path = tmp.path('version0.img');
    const bytes = new Uint8Array(1 << 20);
    bytes.set([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 0]);
    writeFileSync(path, bytes);
    const theirs = JSON.parse(run('qemu-img', ['info', '--output=json', path]));
    const ours = platter(['info', '--output=json', path]);
    expect(ours.status, ours.stderr).toBe(0);
    expect(JSON.parse(ours.stdout).format).toBe(theirs.format);
    expect(theirs.format).toBe('raw');
  });

  it('a qcow2 overlay on a VMDK names the backing file it cannot read', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'sparse.vmdk', '-F', 'vmdk', tmp.path('overlay.qcow2')]);
    const result = platter(['convert', '-O', 'raw', 'overlay.qcow2', 'out.raw'], { cwd: tmp.dir });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^platter: .*sparse\.vmdk: vmdk images are not supported/);
  });
});

describe('foreign image signatures', () => {
  const head = (bytes: number[] | string, at = 0) => {
    const buffer = new Uint8Array(1024);
    buffer.set(typeof bytes === 'string' ? new TextEncoder().encode(bytes) : bytes, at);
    return buffer;
  };

  it('knows each format by its mark, and nothing else by any', () => {
    expect(foreignImageFormat(head('KDMV'))).toBe('vmdk');
    expect(foreignImageFormat(head('# Disk DescriptorFile\nversion=1'))).toBe('vmdk');
    expect(foreignImageFormat(head([0x7f, 0x10, 0xda, 0xbe], 64))).toBe('vdi');
    expect(foreignImageFormat(head('conectix'))).toBe('vpc');
    expect(foreignImageFormat(head('vhdxfile'))).toBe('vhdx');
    expect(foreignImageFormat(head([0x51, 0x45, 0x44, 0]))).toBe('qed');
    expect(foreignImageFormat(head([]))).toBeUndefined();
    // A raw image of an encrypted volume is a disk's bytes: not refused.
    expect(foreignImageFormat(head([0x4c, 0x55, 0x4b, 0x53, 0xba, 0xbe]))).toBeUndefined();
    // A head too short for a signature's place is not that format.
    expect(foreignImageFormat(new Uint8Array([0x4b, 0x44]))).toBeUndefined();
  });
});
