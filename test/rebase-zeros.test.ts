/**
 * Safe rebase where the old chain reads zeros and the new backing file holds
 * data: the zeros must stand over the new backing file. A version 3 image
 * stores them as zero clusters (subclusters with extended L2), as qemu-img
 * does past the end of the old backing file; a version 2 image, which has no
 * zero flag, stores them as data.
 */

import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainCheck, chainSame, chainWrite, copyChain } from './helpers/chain-images.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');

interface MapEntry {
  start: number;
  length: number;
  depth: number;
  zero: boolean;
  data: boolean;
}

const map = (dir: string, image: string) => JSON.parse(run('qemu-img', ['map', '--output=json', image], { cwd: dir })) as MapEntry[];

/** The map entries that cover [start, end). */
const covering = (entries: MapEntry[], start: number, end: number) => entries.filter((entry) => entry.start < end && entry.start + entry.length > start);

const MiB = 1 << 20;

describe.skipIf(!enabled)('safe rebase onto a backing file with data where the old chain reads zeros', () => {
  const temp = tempDir('platter-rebase-zeros-');
  const source = join(temp.dir, 'source');

  beforeAll(() => {
    copyChain(temp.dir, source, []);
    const create = (name: string, options: string, backing?: string[]) =>
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, ...(backing ?? []), name, ...(backing ? [] : ['2M'])], { cwd: source });
    create('donor.qcow2', 'cluster_size=64k');
    chainWrite(source, 'donor.qcow2', ['write -P 9 0 2M']);
    create('plain.qcow2', 'cluster_size=64k');
    chainWrite(source, 'plain.qcow2', ['write -P 1 0 64k']);
    create('old.qcow2', 'compat=0.10');
    chainWrite(source, 'old.qcow2', ['write -P 1 0 64k']);
    create('ext.qcow2', 'extended_l2=on,cluster_size=128k');
    chainWrite(source, 'ext.qcow2', ['write -P 1 4k 8k']);
    // A raw backing file whose second MiB is a hole: the old chain reads zeros there from the backing file itself.
    writeFileSync(join(source, 'base.raw'), Buffer.alloc(0));
    run('truncate', ['-s', '2M', 'base.raw'], { cwd: source });
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 5 0 1M', 'base.raw'], { cwd: source });
    create('over.qcow2', 'cluster_size=64k', ['-b', 'base.raw', '-F', 'raw']);
    chainWrite(source, 'over.qcow2', ['write -P 7 0 64k']);
  });
  afterAll(() => temp.cleanup());

  /** Rebases a copy of `image` onto donor.qcow2 with qemu-img and with platter; returns both directories. */
  const rebaseBoth = (image: string, extra: string[] = []) => {
    const dirs = { qemu: join(temp.dir, `${image}-qemu`), ours: join(temp.dir, `${image}-platter`), before: join(temp.dir, `${image}-before`) };
    for (const dir of Object.values(dirs)) copyChain(source, dir, ['donor.qcow2', 'base.raw', image]);
    copyFileSync(join(source, image), join(dirs.before, image));
    run('qemu-img', ['rebase', '-b', 'donor.qcow2', '-F', 'qcow2', image], { cwd: dirs.qemu });
    const result = platter(['rebase', ...extra, '-b', 'donor.qcow2', '-F', 'qcow2', image], { cwd: dirs.ours });
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(chainSame(temp.dir, join(dirs.before, image), join(dirs.ours, image))).toBe(true);
    expect(chainCheck(dirs.ours, image).clean).toBe(true);
    return dirs;
  };

  it('a version 3 image without a backing file gets zero clusters, the map qemu-img makes', () => {
    const { qemu, ours } = rebaseBoth('plain.qcow2');
    expect(map(ours, 'plain.qcow2')).toEqual(map(qemu, 'plain.qcow2'));
    const rest = covering(map(ours, 'plain.qcow2'), 64 * 1024, 2 * MiB);
    expect(rest.every((entry) => entry.depth === 0 && entry.zero && !entry.data)).toBe(true);
  });

  it('zeros that the old backing file itself reads are zero clusters too, where qemu-img writes data', () => {
    const { qemu, ours } = rebaseBoth('over.qcow2');
    const hole = covering(map(ours, 'over.qcow2'), MiB, 2 * MiB);
    expect(hole.every((entry) => entry.depth === 0 && entry.zero && !entry.data)).toBe(true);
    // The donor's data under the first MiB differs too: that is copied as data by both.
    expect(chainCheck(ours, 'over.qcow2').allocated).toBeLessThan(chainCheck(qemu, 'over.qcow2').allocated);
  });

  it('extended L2 entries get zero subclusters and no data cluster', () => {
    const { qemu, ours } = rebaseBoth('ext.qcow2');
    const entries = map(ours, 'ext.qcow2');
    expect(covering(entries, 128 * 1024, 2 * MiB).every((entry) => entry.depth === 0 && entry.zero && !entry.data)).toBe(true);
    expect(chainCheck(ours, 'ext.qcow2').allocated).toBeLessThanOrEqual(chainCheck(qemu, 'ext.qcow2').allocated);
  });

  it('a version 2 image, which has no zero flag, stores the zeros as data and keeps its contents', () => {
    // qemu-img 7.2 leaves these clusters unallocated here, so its result reads the donor's bytes: not followed.
    const { ours } = rebaseBoth('old.qcow2');
    const rest = covering(map(ours, 'old.qcow2'), 64 * 1024, 2 * MiB);
    expect(rest.every((entry) => entry.depth === 0 && entry.data)).toBe(true);
  });
});
