/**
 * Backing files named by json: names, as qemu writes them for a backing file
 * opened with options of its own: followed when they name a file (qcow2 or
 * raw, whole or a part of it), with the file name taken as qemu takes it
 * (relative to the current directory), under the same policy as plain names;
 * refused when they name anything else.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync, copyFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());
const sub = tmp.path('sub');

const WHOLE = 'json:{"driver":"qcow2","file":{"driver":"file","filename":"base.qcow2"}}';
const PART = 'json:{"driver":"raw","offset":1048576,"size":1048576,"file":{"driver":"file","filename":"base.raw"}}';

function both(args: string[], cwd: string) {
  const mine = platter(args, { cwd });
  const qemu = spawnSync('qemu-img', args, { cwd, encoding: 'utf8' });
  return { mine, qemu };
}

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('json: backing file names', () => {
  beforeAll(() => {
    mkdirSync(sub);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '1M'], { cwd: sub });
    run('qemu-io', ['-c', 'write -P 7 0 64k', 'base.qcow2'], { cwd: sub });
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', WHOLE, '-F', 'qcow2', 'top.qcow2', '1M'], { cwd: sub });
    run('qemu-io', ['-c', 'write -P 8 512k 64k', 'top.qcow2'], { cwd: sub });
    run('qemu-img', ['create', '-q', '-f', 'raw', 'base.raw', '4M'], { cwd: sub });
    run('qemu-io', ['-f', 'raw', '-c', 'write -P 9 1M 1M', 'base.raw'], { cwd: sub });
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', PART, '-F', 'raw', 'part.qcow2', '1M'], { cwd: sub });
  });

  it.each(
    [
      ['map', '--output=json', 'top.qcow2'],
      ['info', '--backing-chain', '--output=json', 'top.qcow2'],
      ['info', '--backing-chain', '--output=json', 'part.qcow2'],
      ['map', '--output=json', 'part.qcow2'],
      ['compare', 'top.qcow2', 'base.qcow2'],
    ].map((args) => [args.join(' '), args] as const),
  )('%s: what qemu-img says', (_, args) => {
    const { mine, qemu } = both(args, sub);
    expect(qemu.status).not.toBe(2);
    expect([mine.status, mine.stdout]).toEqual([qemu.status, qemu.stdout]);
  });

  it('converts to the disk qemu-img converts to, a part of a file included', () => {
    for (const image of ['top.qcow2', 'part.qcow2']) {
      expect(platter(['convert', '-O', 'raw', image, `${image}.mine.raw`], { cwd: sub }).status).toBe(0);
      run('qemu-img', ['convert', '-O', 'raw', image, `${image}.qemu.raw`], { cwd: sub });
      expect(spawnSync('cmp', [`${image}.mine.raw`, `${image}.qemu.raw`], { cwd: sub }).status).toBe(0);
    }
  });

  it('the file name is taken from the current directory, as qemu-img takes it: from elsewhere the backing file is not found', () => {
    const { mine, qemu } = both(['map', 'sub/top.qcow2'], tmp.dir);
    expect([mine.status, qemu.status]).toEqual([1, 1]);
    expect(mine.stderr).toMatch(/^platter: sub\/top\.qcow2: .*base\.qcow2.*No such file or directory\n$/);
  });

  it('a backing root applies to the file a json: name leads to', () => {
    const root = tmp.path('root');
    mkdirSync(root);
    copyFileSync(tmp.path('sub/top.qcow2'), tmp.path('root/top.qcow2'));
    const result = platter(['map', '--backing-root', root, tmp.path('root/top.qcow2')], { cwd: sub });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/refusing file name 'json:.*outside the backing root/);
  });

  it('a json: name of anything but a file is refused, naming the driver; one that names its own image is a cycle', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'json:{"driver":"nbd","server":{"type":"unix","path":"/nonexistent.sock"}}', '-F', 'raw', 'nbd.qcow2', '1M'], { cwd: sub });
    const nbd = platter(['map', 'nbd.qcow2'], { cwd: sub });
    expect(nbd.status).toBe(1);
    expect(nbd.stderr).toMatch(/refusing file name 'json:.*the 'nbd' driver is not supported/);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'json:{"driver":"qcow2","file":{"driver":"file","filename":"self.qcow2"}}', '-F', 'qcow2', 'self.qcow2', '1M'], { cwd: sub });
    const self = platter(['map', 'self.qcow2'], { cwd: sub });
    expect(self.status).toBe(1);
    expect(self.stderr).toMatch(/cycle/);
  });
});
