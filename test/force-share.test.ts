/**
 * -U / --force-share, against qemu-img: taken by the commands that take it in
 * qemu-img, with the same output and exit status as qemu-img gives; refused,
 * as qemu-img refuses it, where the image would be opened for writing (and the
 * file is left as it was).
 */

import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-force-share-');
afterAll(() => tmp.cleanup());

const qemuImg = (args: string[]) => shStatus(tmp.dir, 'qemu-img', args);
const platterCli = (args: string[]) => platter(args, { cwd: tmp.dir });

describe.skipIf(!hasTool('qemu-img'))('-U (force-share)', () => {
  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', tmp.path('base.qcow2'), '8M']);
    run('qemu-io', ['-c', 'write -P 1 0 1M', tmp.path('base.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', tmp.path('top.qcow2')]);
    run('qemu-io', ['-c', 'write -P 2 512k 1M', tmp.path('top.qcow2')]);
    run('qemu-img', ['snapshot', '-c', 'first', tmp.path('top.qcow2')]);
  });

  it.each([
    ['info', '-U', 'top.qcow2'],
    ['info', '--force-share', '--output=json', 'top.qcow2'],
    ['check', '-U', 'top.qcow2'],
    ['map', '-U', '--output=json', 'top.qcow2'],
    ['compare', '-U', 'top.qcow2', 'base.qcow2'],
    ['measure', '-U', '-O', 'qcow2', 'top.qcow2'],
    ['snapshot', '-U', '-l', 'top.qcow2'],
  ])('%s %s ... answers as qemu-img does', (...args) => {
    const mine = platterCli(args);
    const qemu = qemuImg(args);
    expect(mine.stdout.replace(/disk size: .*\n/, '')).toBe(qemu.stdout.replace(/disk size: .*\n/, ''));
    expect(mine.status).toBe(qemu.status);
  });

  it('convert and dd read a shared image; rebase takes -U as qemu-img does', () => {
    run('cp', [tmp.path('top.qcow2'), tmp.path('rebased.qcow2')]);
    expect(platterCli(['rebase', '-U', '-u', '-b', 'base.qcow2', '-F', 'qcow2', 'rebased.qcow2']).status).toBe(0);
    expect(platterCli(['convert', '-U', '-O', 'raw', 'top.qcow2', 'out.raw']).status).toBe(0);
    expect(platterCli(['dd', '-U', '-O', 'raw', 'if=top.qcow2', 'of=dd.raw']).status).toBe(0);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', 'out.raw', 'top.qcow2']).status).toBe(0);
    expect(qemuImg(['compare', '-f', 'raw', '-F', 'qcow2', 'dd.raw', 'top.qcow2']).status).toBe(0);
  });

  it.each([
    ['check', '-U', '-r', 'leaks', 'top.qcow2'],
    ['snapshot', '-U', '-c', 'second', 'top.qcow2'],
    ['snapshot', '-U', '-d', 'first', 'top.qcow2'],
  ])('%s %s %s ... is refused, as qemu-img refuses it, and changes nothing', (...args) => {
    const before = readFileSync(tmp.path('top.qcow2'));
    const mine = platterCli(args);
    const qemu = qemuImg(args);
    expect(qemu.status).toBe(1);
    expect(mine.status).toBe(1);
    expect(mine.stderr).toBe('platter: top.qcow2: force-share=on can only be used with read-only images\n');
    expect(qemu.stderr).toMatch(/force-share=on can only be used with read-only images/);
    expect(readFileSync(tmp.path('top.qcow2')).equals(before)).toBe(true);
  });

  it('is not taken where qemu-img does not take it: a usage error, and nothing written', () => {
    const before = readFileSync(tmp.path('top.qcow2'));
    for (const args of [['resize', '-U', 'top.qcow2', '16M'], ['commit', '-U', 'top.qcow2'], ['amend', '-U', '-o', 'compat=1.1', 'top.qcow2']]) {
      const mine = platterCli(args);
      expect(mine.status, args.join(' ')).toBe(1);
      expect(mine.stderr).toBe('platter: Unknown argument: U\n');
      expect(qemuImg(args).status).toBe(1);
    }
    expect(readFileSync(tmp.path('top.qcow2')).equals(before)).toBe(true);
  });
});
