import { closeSync, openSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blocksOf, bytesOf, haveTool, platter, qemuImg, run, tempDir } from './helpers/convert-tools.js';

const hasQemu = haveTool('qemu-img') && haveTool('qemu-io');
const tmp = tempDir('platter-convert-qcow2-');
const at = (name: string) => join(tmp.dir, name);

function qemuIo(image: string, commands: string[], format = 'qcow2'): void {
  const result = run('qemu-io', ['-f', format, ...commands.flatMap((command) => ['-c', command]), image], tmp.dir);
  if (result.status !== 0) throw new Error(`qemu-io failed: ${result.stderr}`);
}



beforeAll(() => {
  if (!hasQemu) return;
  // Data, zero clusters (with and without a host cluster), a discarded range,
  // sub-cluster writes and a write across an L2 boundary (512-byte clusters below).
  qemuImg(['create', '-q', '-f', 'qcow2', 'mixed.qcow2', '64M'], tmp.dir);
  qemuIo('mixed.qcow2', [
    'write -P 0x11 0 1M',
    'write -P 0 1M 128k',
    'write -z 2M 256k',
    'write -P 0x22 3M 4k',
    'write -P 0x33 5M 1M',
    'discard 5M 64k',
    'write -z 5242880 64k',
    'write -P 0x44 40000000 3000',
    'write -P 0x55 63M 1M',
  ]);
  qemuImg(['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', 'small-clusters.qcow2', '4M'], tmp.dir);
  qemuIo('small-clusters.qcow2', ['write -P 0x66 0 300k', 'write -P 0x67 1M 1k', 'write -z 2M 64k']);
  // A chain: the top overrides part of its backing file and zeroes another part.
  qemuImg(['create', '-q', '-f', 'qcow2', 'base.qcow2', '16M'], tmp.dir);
  qemuIo('base.qcow2', ['write -P 0xaa 0 8M']);
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', '16M'], tmp.dir);
  qemuIo('top.qcow2', ['write -P 0xbb 1M 1M', 'write -z 4M 1M']);
  // A top image larger than its backing file: past the backing file's end reads as zeros.
  qemuImg(['create', '-q', '-f', 'qcow2', 'short-base.qcow2', '4M'], tmp.dir);
  qemuIo('short-base.qcow2', ['write -P 0x10 0 1M']);
  qemuImg(['create', '-q', '-f', 'qcow2', '-b', 'short-base.qcow2', '-F', 'qcow2', 'long-top.qcow2', '8M'], tmp.dir);
  qemuIo('long-top.qcow2', ['write -P 0x20 6M 64k']);
  // Compressed clusters, both codecs.
  qemuImg(['create', '-q', '-f', 'raw', 'text.raw', '4M'], tmp.dir);
  qemuIo('text.raw', ['write -P 0x61 0 2M', 'write -P 0x62 3M 512k'], 'raw');
  qemuImg(['convert', '-c', '-O', 'qcow2', 'text.raw', 'zlib.qcow2'], tmp.dir);
  qemuImg(['convert', '-c', '-O', 'qcow2', '-o', 'compression_type=zstd', 'text.raw', 'zstd.qcow2'], tmp.dir);
  // An internal snapshot, then a change after it.
  qemuImg(['create', '-q', '-f', 'qcow2', 'snap.qcow2', '8M'], tmp.dir);
  qemuIo('snap.qcow2', ['write -P 0x01 0 2M']);
  qemuImg(['snapshot', '-c', 'before', 'snap.qcow2'], tmp.dir);
  qemuIo('snap.qcow2', ['write -P 0x02 1M 2M']);
  // 1 TiB of virtual disk holding 1 MiB of data.
  qemuImg(['create', '-q', '-f', 'qcow2', 'huge.qcow2', '1T'], tmp.dir);
  qemuIo('huge.qcow2', ['write -P 0x77 512G 1M']);
});

afterAll(() => tmp.cleanup());

const IMAGES = ['mixed.qcow2', 'small-clusters.qcow2', 'top.qcow2', 'long-top.qcow2', 'zlib.qcow2', 'zstd.qcow2', 'snap.qcow2'];

describe.skipIf(!hasQemu)('convert qcow2 -O raw vs qemu-img', () => {
  for (const image of IMAGES) {
    it(`${image}: same bytes, no more blocks`, () => {
      qemuImg(['convert', '-O', 'raw', image, `${image}.qemu.raw`], tmp.dir);
      const ours = platter(['convert', '-O', 'raw', image, `${image}.ours.raw`], tmp.dir);
      expect(ours.stderr).toBe('');
      expect(ours.status).toBe(0);
      expect(bytesOf(at(`${image}.ours.raw`)).equals(bytesOf(at(`${image}.qemu.raw`)))).toBe(true);
      expect(blocksOf(at(`${image}.ours.raw`))).toBeLessThanOrEqual(blocksOf(at(`${image}.qemu.raw`)));
    });
  }

  it('-l SNAPSHOT converts the snapshot, as qemu-img does', () => {
    qemuImg(['convert', '-l', 'before', '-O', 'raw', 'snap.qcow2', 'snap-before.qemu.raw'], tmp.dir);
    const ours = platter(['convert', '-l', 'before', '-O', 'raw', 'snap.qcow2', 'snap-before.ours.raw'], tmp.dir);
    expect(ours.status).toBe(0);
    expect(bytesOf(at('snap-before.ours.raw')).equals(bytesOf(at('snap-before.qemu.raw')))).toBe(true);
    const missing = platter(['convert', '-l', 'nope', '-O', 'raw', 'snap.qcow2', 'nope.raw'], tmp.dir);
    expect(missing.status).toBe(1);
    expect(missing.stderr).toMatch(/^platter: .*nope/);
  });

  it('refuses to convert onto a backing file of the source', () => {
    const before = bytesOf(at('base.qcow2'));
    const result = platter(['convert', '-O', 'raw', 'top.qcow2', 'base.qcow2'], tmp.dir);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing to convert onto the source image/);
    expect(bytesOf(at('base.qcow2')).equals(before)).toBe(true);
  });

  it('a 1 TiB image holding 1 MiB converts to a file holding about 1 MiB', () => {
    const ours = platter(['convert', '-O', 'raw', 'huge.qcow2', 'huge.raw'], tmp.dir);
    expect(ours.status).toBe(0);
    const stats = statSync(at('huge.raw'));
    expect(stats.size).toBe(2 ** 40);
    const allocated = blocksOf(at('huge.raw')) * 512;
    expect(allocated).toBeGreaterThanOrEqual(1024 * 1024);
    expect(allocated).toBeLessThan(1024 * 1024 + 256 * 1024);
    const fd = openSync(at('huge.raw'), 'r');
    try {
      const sample = Buffer.alloc(4096);
      readSyncAt(fd, sample, 512 * 2 ** 30);
      expect(sample.every((byte) => byte === 0x77)).toBe(true);
    } finally {
      closeSync(fd);
    }
  });
});

function readSyncAt(fd: number, buffer: Buffer, position: number): void {
  readSync(fd, buffer, 0, buffer.length, position);
}

describe.skipIf(!hasQemu)('map vs qemu-img (qcow2)', () => {
  for (const image of [...IMAGES, 'huge.qcow2']) {
    it(`${image}: JSON equal`, () => {
      const expected = JSON.parse(qemuImg(['map', '--output=json', image], tmp.dir));
      const ours = platter(['map', '--output=json', image], tmp.dir);
      expect(ours.status).toBe(0);
      expect(JSON.parse(ours.stdout)).toEqual(expected);
    });
  }

  for (const image of ['mixed.qcow2', 'top.qcow2', 'zlib.qcow2']) {
    it(`${image}: human table equal`, () => {
      const expected = run('qemu-img', ['map', image], tmp.dir);
      const ours = platter(['map', image], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(ours.stdout).toBe(expected.stdout);
    });
  }

  it('a window: --start-offset and --max-length', () => {
    const flags = ['--start-offset', '1000000', '--max-length', '5M'];
    const expected = JSON.parse(qemuImg(['map', '--output=json', ...flags, 'mixed.qcow2'], tmp.dir));
    const ours = platter(['map', '--output=json', ...flags, 'mixed.qcow2'], tmp.dir);
    expect(JSON.parse(ours.stdout)).toEqual(expected);
  });
});

// Strict mode against raw files is left out: qemu sees a raw file's holes as
// zero runs (SEEK_HOLE) and portable file APIs do not, so allocation differs there.
describe.skipIf(!hasQemu)('compare vs qemu-img (qcow2)', () => {
  beforeAll(() => {
    qemuImg(['convert', '-O', 'raw', 'mixed.qcow2', 'mixed-cmp.raw'], tmp.dir);
    qemuImg(['convert', '-O', 'qcow2', 'mixed.qcow2', 'mixed-copy.qcow2'], tmp.dir);
    qemuImg(['convert', '-O', 'qcow2', 'mixed.qcow2', 'mixed-changed.qcow2'], tmp.dir);
    qemuIo('mixed-changed.qcow2', ['write -P 0x99 40001000 1']);
    qemuImg(['convert', '-O', 'qcow2', 'mixed.qcow2', 'mixed-grown.qcow2'], tmp.dir);
    qemuImg(['resize', '-q', 'mixed-grown.qcow2', '80M'], tmp.dir);
    qemuImg(['convert', '-O', 'qcow2', 'mixed-grown.qcow2', 'mixed-grown-data.qcow2'], tmp.dir);
    qemuIo('mixed-grown-data.qcow2', ['write -P 0x01 70M 4k']);
    qemuImg(['convert', '-c', '-O', 'qcow2', 'mixed.qcow2', 'mixed-compressed.qcow2'], tmp.dir);
  });

  for (const [flags, first, second] of [
    [[], 'mixed.qcow2', 'mixed-cmp.raw'],
    [[], 'mixed.qcow2', 'mixed-copy.qcow2'],
    [[], 'mixed.qcow2', 'mixed-changed.qcow2'],
    [[], 'mixed.qcow2', 'mixed-grown.qcow2'],
    [[], 'mixed-grown-data.qcow2', 'mixed.qcow2'],
    [['-s'], 'mixed.qcow2', 'mixed-grown.qcow2'],
    [['-s'], 'mixed.qcow2', 'mixed-copy.qcow2'],
    // Compressed data has no host offset: a block status of its own in strict mode.
    [['-s'], 'mixed.qcow2', 'mixed-compressed.qcow2'],
    [['-s'], 'mixed-compressed.qcow2', 'mixed-compressed.qcow2'],
    [[], 'top.qcow2', 'top.qcow2.qemu.raw'],
  ] as const) {
    it(`${flags.join(' ')} ${first} ${second}`, () => {
      const expected = run('qemu-img', ['compare', ...flags, first, second], tmp.dir);
      const ours = platter(['compare', ...flags, first, second], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(ours.stdout).toBe(expected.stdout);
    });
  }
});

describe.skipIf(!hasQemu)('dd vs qemu-img dd (qcow2)', () => {
  for (const [format, operands] of [
    ['raw', ['bs=1M', 'count=8', 'skip=1']],
    ['raw', ['bs=4k', 'skip=1000']],
    ['raw', ['bs=64k', 'count=100']],
    // A qcow2 output: every block written, so every cluster allocated, byte for byte as qemu-img dd writes it.
    ['qcow2', ['bs=1M', 'count=8', 'skip=1']],
    ['qcow2', ['bs=3000', 'count=700']],
  ] as const) {
    it(`-O ${format} ${operands.join(' ')}`, () => {
      const name = `${format}_${operands.join('_')}`;
      const expected = run('qemu-img', ['dd', '-O', format, ...operands, 'if=mixed.qcow2', `of=${name}.qemu`], tmp.dir);
      const ours = platter(['dd', '-O', format, ...operands, 'if=mixed.qcow2', `of=${name}.ours`], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(bytesOf(at(`${name}.ours`)).equals(bytesOf(at(`${name}.qemu`)))).toBe(true);
    });
  }
});
