/**
 * rebase and commit against qemu-img on chains of unlike images: different
 * cluster sizes, extended L2 entries with subcluster writes, version 2 images,
 * lazy refcounts, an overlay larger than its backing file.
 */

import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { chainCheck, chainSame, chainWrite, copyChain } from './helpers/chain-images.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');

interface ChainVariant {
  title: string;
  baseOptions: string;
  baseSize: string;
  topOptions: string;
  topSize?: string;
  topWrites: string[];
}

const VARIANTS: ChainVariant[] = [
  { title: 'small clusters under large ones', baseOptions: 'cluster_size=4k', baseSize: '3M', topOptions: 'cluster_size=64k', topWrites: ['write -P 7 100k 5k', 'write -z 1M 64k'] },
  { title: 'extended L2 with subcluster writes', baseOptions: 'cluster_size=64k', baseSize: '3M', topOptions: 'extended_l2=on,cluster_size=128k', topWrites: ['write -P 7 8k 4k', 'write -z 260k 8k', 'write -P 8 2M 100k'] },
  { title: 'version 2 images', baseOptions: 'compat=0.10', baseSize: '3M', topOptions: 'compat=0.10', topWrites: ['write -P 7 0 64k', 'write -z 1M 128k'] },
  { title: 'lazy refcounts', baseOptions: 'cluster_size=64k', baseSize: '3M', topOptions: 'lazy_refcounts=on', topWrites: ['write -P 7 64k 64k'] },
  { title: 'an overlay larger than its backing file', baseOptions: 'cluster_size=64k', baseSize: '2M', topOptions: 'cluster_size=64k', topSize: '5M', topWrites: ['write -P 7 3M 64k', 'write -P 8 1M 4k'] },
];

describe.skipIf(!enabled)('rebase and commit on unlike chains', () => {
  const temp = tempDir('platter-chain-variants-');
  afterAll(() => temp.cleanup());

  for (const [index, variant] of VARIANTS.entries()) {
    const source = join(temp.dir, `v${index}`);
    const setup = () => {
      copyChain(temp.dir, source, []);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', variant.baseOptions, 'base.qcow2', variant.baseSize], { cwd: source });
      chainWrite(source, 'base.qcow2', ['write -P 1 0 1M', 'write -P 2 1536k 512k']);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', variant.topOptions, '-b', 'base.qcow2', '-F', 'qcow2', 'top.qcow2', ...(variant.topSize ? [variant.topSize] : [])], { cwd: source });
      chainWrite(source, 'top.qcow2', variant.topWrites);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', 'other.qcow2', '1536k'], { cwd: source });
      chainWrite(source, 'other.qcow2', ['write -P 1 0 512k', 'write -P 9 1M 64k']);
    };
    const both = (name: string, qemuArgs: string[], ourArgs: string[], expectOutput?: string) => {
      const qemu = join(source, `${name}-qemu`);
      const ours = join(source, `${name}-platter`);
      for (const dir of [qemu, ours]) copyChain(source, dir, ['base.qcow2', 'top.qcow2', 'other.qcow2']);
      run('qemu-img', qemuArgs, { cwd: qemu });
      const result = platter(ourArgs, { cwd: ours });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      if (expectOutput !== undefined) expect(result.stdout).toBe(expectOutput);
      for (const image of ['base.qcow2', 'top.qcow2']) {
        expect({ image, same: chainSame(temp.dir, join(qemu, image), join(ours, image)) }).toEqual({ image, same: true });
        const ourCheck = chainCheck(ours, image);
        expect({ image, clean: ourCheck.clean }).toEqual({ image, clean: true });
        expect(ourCheck.allocated).toBeLessThanOrEqual(chainCheck(qemu, image).allocated);
      }
      return { qemu, ours };
    };

    it(`${variant.title}: safe rebase onto another image and onto none, and commit`, () => {
      setup();
      const onto = both('rebase', ['rebase', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'], ['rebase', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2']);
      expect(chainSame(temp.dir, join(source, 'top.qcow2'), join(onto.ours, 'top.qcow2'))).toBe(true);
      both('flatten', ['rebase', '-b', '', 'top.qcow2'], ['rebase', '-b', '', 'top.qcow2']);
      both('commit', ['commit', '-q', 'top.qcow2'], ['commit', 'top.qcow2'], 'Image committed.\n');
    });
  }
});

describe.skipIf(!enabled)('commit -b through a middle layer shorter than the top', () => {
  const temp = tempDir('platter-chain-short-mid-');
  afterAll(() => temp.cleanup());

  it('writes zeros into the base where the top reads past the middle layer\'s end, as qemu-img does', () => {
    const map = (dir: string) => run('qemu-img', ['map', '--output=json', 'base.qcow2'], { cwd: dir }).replace(/, "offset": \d+/g, '');
    const dirs = ['qemu', 'platter'].map((who) => {
      const dir = join(temp.dir, who);
      copyChain(temp.dir, dir, []);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '8M'], { cwd: dir });
      chainWrite(dir, 'base.qcow2', ['write -P 1 0 8M']);
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'mid.qcow2', '2M'], { cwd: dir });
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'top.qcow2', '6M'], { cwd: dir });
      chainWrite(dir, 'top.qcow2', ['write -P 3 5M 64k']);
      return dir;
    });
    run('qemu-img', ['commit', '-q', '-b', 'base.qcow2', 'top.qcow2'], { cwd: dirs[0] });
    const result = platter(['commit', '-b', 'base.qcow2', 'top.qcow2'], { cwd: dirs[1] });
    expect([result.status, result.stderr]).toEqual([0, '']);
    // 2M..5M and past 5M+64k read zeros in the top before the commit: so must the base (it read 0x01 there).
    const zeros = run('qemu-io', ['-r', '-c', 'read -P 0 2M 3M', '-c', 'read -P 0 5184k 960k', 'base.qcow2'], { cwd: dirs[1] });
    expect(zeros).not.toContain('Pattern verification failed');
    expect(chainSame(temp.dir, join(dirs[0]!, 'base.qcow2'), join(dirs[1]!, 'base.qcow2'))).toBe(true);
    expect(map(dirs[1]!)).toBe(map(dirs[0]!));
  });
});
