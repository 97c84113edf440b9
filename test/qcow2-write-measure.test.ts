/** platter measure against qemu-img measure: the same JSON on varied sizes, options and source images. */

import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { platter } from './helpers/tools.js';
import { qcow2TempDir, qcow2ToolAvailable, sh, shStatus } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

beforeAll(() => {
  if (!haveQemu) return;
  const q = (...args: string[]) => sh(temp.dir, 'qemu-img', args);
  const io = (image: string, ...commands: string[]) => sh(temp.dir, 'qemu-io', [...commands.flatMap((c) => ['-c', c]), image]);
  q('create', '-q', '-f', 'qcow2', 'sparse.qcow2', '1G');
  io('sparse.qcow2', 'write -P 1 0 1M', 'write -P 2 100M 70k', 'write -z 200M 1M', 'write -P 3 300M 1k');
  q('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096,compat=0.10', 'small.qcow2', '64M');
  io('small.qcow2', 'write -P 4 1000 5000', 'write -P 5 10M 64k');
  q('create', '-q', '-f', 'raw', 'full.raw', '0');
  sh(temp.dir, 'dd', ['if=/dev/urandom', 'of=full.raw', 'bs=64k', 'count=17', 'status=none']);
  q('convert', '-c', '-O', 'qcow2', 'sparse.qcow2', 'packed.qcow2');
  q('create', '-q', '-f', 'qcow2', '-b', 'sparse.qcow2', '-F', 'qcow2', 'overlay.qcow2');
  io('overlay.qcow2', 'write -P 6 500M 2M');
  q('create', '-q', '-f', 'qcow2', 'snaps.qcow2', '256M');
  io('snaps.qcow2', 'write -P 7 0 3M');
  q('snapshot', '-c', 'one', 'snaps.qcow2');
  io('snaps.qcow2', 'write -P 8 100M 5M', 'write -z 0 1M');
  q('snapshot', '-c', 'two', 'snaps.qcow2');
  io('snaps.qcow2', 'write -P 9 200M 20M');
  q('create', '-q', '-f', 'qcow2', 'bitmaps.qcow2', '3G');
  q('bitmap', '--add', 'bitmaps.qcow2', 'first');
  q('bitmap', '--add', '-g', '4k', 'bitmaps.qcow2', 'second');
});

const cases: string[][] = [
  ['-O', 'qcow2', '--size', '10G'],
  ['-O', 'qcow2', '--size', '1T', '-o', 'cluster_size=2M'],
  ['-O', 'qcow2', '--size', '100G', '-o', 'refcount_bits=1,extended_l2=on'],
  ['-O', 'qcow2', '--size', '12345', '-o', 'cluster_size=512,refcount_bits=64'],
  ['-O', 'qcow2', '--size', '5G', '-o', 'preallocation=full'],
  ['-O', 'raw', '--size', '1000'],
  ['-O', 'qcow2', 'sparse.qcow2'],
  ['-O', 'qcow2', '-o', 'cluster_size=4k', 'sparse.qcow2'],
  ['-O', 'qcow2', '-o', 'compat=0.10', 'sparse.qcow2'],
  ['-O', 'qcow2', '-o', 'backing_file=x', 'sparse.qcow2'],
  ['-O', 'qcow2', 'small.qcow2'],
  ['-O', 'qcow2', '-o', 'extended_l2=on,cluster_size=16k', 'small.qcow2'],
  ['-O', 'qcow2', '-f', 'raw', 'full.raw'],
  ['-O', 'qcow2', 'packed.qcow2'],
  ['-O', 'qcow2', 'overlay.qcow2'],
  ['-O', 'raw', 'sparse.qcow2'],
  ['-O', 'qcow2', 'bitmaps.qcow2'],
  // -l: the disk as an internal snapshot holds it (by id or name, bare or as snapshot.id= / snapshot.name=).
  ['-O', 'qcow2', 'snaps.qcow2'],
  ['-O', 'qcow2', '-l', 'one', 'snaps.qcow2'],
  ['-O', 'qcow2', '-l', 'snapshot.id=2', 'snaps.qcow2'],
  ['-O', 'qcow2', '-o', 'cluster_size=4k', '-l', 'snapshot.name=two', 'snaps.qcow2'],
  ['-O', 'qcow2', '-l', 'snapshot.id=2,snapshot.name=two', 'snaps.qcow2'],
  ['-U', '-O', 'raw', '-l', '1', 'snaps.qcow2'],
  ['-O', 'qcow2', '-o', 'cluster_size=512', 'bitmaps.qcow2'],
];

describe.skipIf(!haveQemu)('measure', () => {
  for (const args of cases) {
    it(`measure ${args.join(' ')}`, () => {
      const mine = platter(['measure', '--output=json', ...args], { cwd: temp.dir });
      const qemu = shStatus(temp.dir, 'qemu-img', ['measure', '--output=json', ...args]);
      expect(qemu.status).toBe(0);
      expect(mine.status, mine.stderr).toBe(0);
      expect(mine.stdout).toBe(qemu.stdout);
    });
  }

  // snapshot.name= looks up names only, and with snapshot.id= both must match.
  it.each(['snapshot.name=1', 'snapshot.id=1,snapshot.name=two'])('measure -l %s finds no snapshot, as qemu-img finds none', (param) => {
    const args = ['measure', '-O', 'qcow2', '-l', param, 'snaps.qcow2'];
    const qemu = shStatus(temp.dir, 'qemu-img', args);
    const mine = platter(args, { cwd: temp.dir });
    expect([mine.status, mine.stdout]).toEqual([qemu.status, qemu.stdout]);
    expect(qemu.status).toBe(1);
    expect(mine.stderr).toMatch(/^platter: snaps\.qcow2: no snapshot with /);
  });

  it('human output matches too', () => {
    const args = ['-O', 'qcow2', 'sparse.qcow2'];
    expect(platter(['measure', ...args], { cwd: temp.dir }).stdout).toBe(shStatus(temp.dir, 'qemu-img', ['measure', ...args]).stdout);
  });

  // measure's checks are not create's: compat only as 0.10 or 1.1, and no refusal of lazy_refcounts on v2, say.
  it.each([
    'cluster_size=3k',
    'refcount_bits=3',
    'compat=0.10,refcount_bits=8',
    'extended_l2=on,cluster_size=4k',
    'compat=v2',
    'preallocation=nope',
    'compat=0.10,lazy_refcounts=on',
    'compat=0.10,extended_l2=on',
    'compression_type=lz4',
    'data_file_raw=on',
  ])('measure -o %s: the same answer or refusal as qemu-img', (options) => {
    const args = ['measure', '--size', '1G', '-O', 'qcow2', '-o', options];
    const mine = platter(args, { cwd: temp.dir });
    const qemu = shStatus(temp.dir, 'qemu-img', args);
    expect([mine.status, mine.stdout, mine.stderr]).toEqual([qemu.status, qemu.stdout, qemu.stderr.replace(/^qemu-img: /, 'platter: ')]);
  });

  it('refuses sizes whose L1 table would be too large, as qemu-img does', () => {
    const result = platter(['measure', '-O', 'qcow2', '--size', '1T', '-o', 'cluster_size=512']);
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('The image size is too large');
  });
});

describe.skipIf(!haveQemu)('measure --size with flags about a source', () => {
  it.each([['-f', 'qcow2'], ['-l', '1'], ['--image-opts']])('--size with %s and no file is refused, as qemu-img refuses it', (...flags) => {
    const args = ['measure', '--size', '1G', ...flags, '-O', 'qcow2'];
    const qemu = shStatus(temp.dir, 'qemu-img', args);
    const mine = platter(args, { cwd: temp.dir });
    expect(qemu.status).toBe(1);
    expect([mine.status, mine.stdout, mine.stderr]).toEqual([1, '', qemu.stderr.replace('qemu-img: ', 'platter: ')]);
  });
});
