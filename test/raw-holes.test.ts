/**
 * A raw file that is one hole (no block allocated) is zeros that are never
 * read: map, measure and convert see it as qemu-img sees it through SEEK_DATA,
 * and a 1 TiB one converts at once. A file that holds any data, and a file too
 * small to rule out data kept in its inode, stays data; so does a file system
 * whose block counts platter does not trust.
 */

import { spawnSync } from 'node:child_process';
import { truncateSync, writeFileSync, openSync, writeSync, closeSync, statSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { RawImage } from '../formats/raw/index.js';
import { FileDevice } from '../src/node/file-device.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** The file systems whose block counts platter trusts, by `stat -f -c %t` (f_type in hex). */
const EXACT = new Set(['ef53', '58465342', '9123683e', '1021994']);
const exactHere = EXACT.has(spawnSync('stat', ['-f', '-c', '%t', tmp.path('.')], { encoding: 'utf8' }).stdout.trim());

function sparse(name: string, size: number): string {
  const path = tmp.path(name);
  writeFileSync(path, '');
  truncateSync(path, size);
  return path;
}

/** A sparse file of `size` bytes with `bytes` written at `at`. */
function sparseWith(name: string, size: number, at: number, bytes: Uint8Array): string {
  const path = sparse(name, size);
  const fd = openSync(path, 'r+');
  writeSync(fd, bytes, 0, bytes.length, at);
  closeSync(fd);
  return path;
}

const both = (args: string[]) => ({ mine: platter(args, { cwd: tmp.dir }), qemu: spawnSync('qemu-img', args, { cwd: tmp.dir, encoding: 'utf8' }) });

describe.skipIf(!hasTool('qemu-img') || !exactHere)('raw files that are one hole', () => {
  sparse('hole-64M.raw', 64 << 20);

  it.each(
    [
      ['map', '--output=json', '-f', 'raw', 'hole-64M.raw'],
      ['map', '-f', 'raw', 'hole-64M.raw'],
      ['measure', '--output=json', '-O', 'qcow2', '-f', 'raw', 'hole-64M.raw'],
      ['map', '--output=json', '-s', '1M', '-l', '5M', 'hole-64M.raw'],
      ['map', '--output=json', '--image-opts', 'driver=raw,offset=1M,size=4M,file.filename=hole-64M.raw'],
    ].map((args) => [args.join(' '), args] as const),
  )('%s prints what qemu-img prints', (_, args) => {
    const { mine, qemu } = both(args);
    expect(qemu.status).toBe(0);
    expect([mine.status, mine.stdout]).toEqual([0, qemu.stdout]);
  });

  it('a 1 TiB hole converts to qcow2 with nothing read or written but metadata, as qemu-img converts it', () => {
    sparse('hole-1T.raw', 2 ** 40);
    const mine = platter(['convert', '-f', 'raw', '-O', 'qcow2', 'hole-1T.raw', 'hole-1T-mine.qcow2'], { cwd: tmp.dir });
    expect(mine.status, mine.stderr).toBe(0);
    run('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', 'hole-1T.raw', 'hole-1T-qemu.qcow2'], { cwd: tmp.dir });
    const mapOf = (image: string) => run('qemu-img', ['map', '--output=json', image], { cwd: tmp.dir });
    expect(mapOf('hole-1T-mine.qcow2')).toBe(mapOf('hole-1T-qemu.qcow2'));
    expect(run('qemu-img', ['info', '--output=json', 'hole-1T-mine.qcow2'], { cwd: tmp.dir })).toContain('"virtual-size": 1099511627776');
  }, 60_000);

  it('a sparse file holding one sector of data is data, and converts to the same disk', () => {
    const sector = new Uint8Array(512).fill(0x5a);
    sparseWith('one-sector.raw', 32 << 20, (32 << 20) - 512, sector);
    const map = JSON.parse(platter(['map', '--output=json', '-f', 'raw', 'one-sector.raw'], { cwd: tmp.dir }).stdout) as { data: boolean }[];
    expect(map.every((entry) => entry.data)).toBe(true);
    expect(platter(['convert', '-f', 'raw', '-O', 'qcow2', 'one-sector.raw', 'one-sector.qcow2'], { cwd: tmp.dir }).status).toBe(0);
    expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', 'qcow2', 'one-sector.raw', 'one-sector.qcow2'], { cwd: tmp.dir }).status).toBe(0);
  });

  it('a file mostly holes, with data here and there, converts to the same disk (its reads go around the page cache)', () => {
    const path = sparse('mostly-holes.raw', 256 << 20);
    const fd = openSync(path, 'r+');
    for (const at of [0, 3 << 20, (100 << 20) + 4096, (256 << 20) - 65536]) writeSync(fd, new Uint8Array(65536).fill((at >>> 12) & 0xff | 1), 0, 65536, at);
    closeSync(fd);
    for (const format of ['qcow2', 'raw']) {
      const out = `mostly-holes-out.${format}`;
      expect(platter(['convert', '-f', 'raw', '-O', format, 'mostly-holes.raw', out], { cwd: tmp.dir }).status).toBe(0);
      expect(spawnSync('qemu-img', ['compare', '-f', 'raw', '-F', format, 'mostly-holes.raw', out], { cwd: tmp.dir }).status).toBe(0);
    }
  });

  it('convert -n into a raw target that is one hole writes no zeros: the same disk, and the target stays sparse', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', 'n-source.qcow2', '64M'], { cwd: tmp.dir });
    run('qemu-io', ['-c', 'write -P 0x61 0 1M', '-c', 'write -P 0 8M 16M', '-c', 'write -P 0x62 40M 64k', 'n-source.qcow2'], { cwd: tmp.dir });
    sparse('n-target.raw', 64 << 20);
    expect(platter(['convert', '-n', '-O', 'raw', 'n-source.qcow2', 'n-target.raw'], { cwd: tmp.dir }).status).toBe(0);
    expect(spawnSync('qemu-img', ['compare', '-F', 'raw', 'n-source.qcow2', 'n-target.raw'], { cwd: tmp.dir }).status).toBe(0);
    // 1 MiB and 64 KiB of data; the 16 MiB written as zeros in the source stays a hole here.
    expect(statSync(tmp.path('n-target.raw')).blocks * 512).toBeLessThan(4 << 20);
  });

  it('a file too small to rule out inline data is data', async () => {
    const image = new RawImage(await FileDevice.open(sparse('small.raw', 4096)));
    try {
      expect((await image.blockStatus(0, 4096)).map((extent) => extent.kind)).toEqual(['data']);
    } finally {
      await image.close();
    }
  });

  it('a writable hole becomes data once written, at the next block status', async () => {
    const image = new RawImage(await FileDevice.open(sparse('written.raw', 8 << 20), { writable: true }));
    try {
      expect((await image.blockStatus(0, 8 << 20)).map((extent) => [extent.kind, extent.hostOffset])).toEqual([['zero', 0]]);
      await image.write(4 << 20, new Uint8Array(512).fill(1));
      expect((await image.blockStatus(0, 8 << 20)).map((extent) => extent.kind)).toEqual(['data']);
      expect((await image.read(4 << 20, 4))).toEqual(new Uint8Array([1, 1, 1, 1]));
    } finally {
      await image.close();
    }
  });
});
