/** rebase and commit on the command line: errors in qemu-img's words, progress, help. */

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chainCreate, chainSame, chainWrite, copyChain } from './helpers/chain-images.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');

describe.skipIf(!enabled)('rebase and commit commands', () => {
  const temp = tempDir('platter-chain-cli-');
  beforeAll(() => {
    chainCreate(temp.dir, 'base.qcow2', { size: '4M' });
    chainWrite(temp.dir, 'base.qcow2', ['write -P 1 0 3M']);
    chainCreate(temp.dir, 'top.qcow2', { backing: 'base.qcow2' });
    chainWrite(temp.dir, 'top.qcow2', ['write -P 2 1M 64k']);
    run('qemu-img', ['create', '-q', '-f', 'raw', 'disk.raw', '1M'], { cwd: temp.dir });
  });
  afterAll(() => temp.cleanup());

  const failures: Array<{ args: string[]; message: RegExp }> = [
    { args: ['rebase', '-b', 'base.qcow2', '-F', 'qcow2', 'disk.raw'], message: /^platter: disk\.raw: Could not change the backing file to 'base\.qcow2'/ },
    { args: ['rebase', '-b', 'base.qcow2', 'top.qcow2'], message: /^platter: top\.qcow2: Could not change the backing file to 'base\.qcow2': backing format must be specified/ },
    { args: ['rebase', 'top.qcow2'], message: /^platter: Must specify backing file \(-b\) or use unsafe mode \(-u\)/ },
    { args: ['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2'], message: /missing\.qcow2/ },
    { args: ['rebase', '-b', 'top.qcow2', '-F', 'qcow2', 'top.qcow2'], message: /^platter: top\.qcow2: the new backing chain contains the image itself/ },
    { args: ['rebase', '-u', '-b', 'x'.repeat(1100), '-F', 'raw', 'top.qcow2'], message: /^platter: .*backing file name is too long \(1100 bytes, at most 1023\)/ },
    { args: ['commit', 'base.qcow2'], message: /^platter: base\.qcow2: Image does not have a backing file/ },
    { args: ['commit', '-b', 'elsewhere.qcow2', 'top.qcow2'], message: /^platter: Did not find 'elsewhere\.qcow2' in the backing chain of 'top\.qcow2'/ },
  ];
  for (const { args, message } of failures) {
    it(`platter ${args.join(' ')} fails with a clear message`, () => {
      const result = platter(args, { cwd: temp.dir });
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(message);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    });
  }

  it.each([[[]], [['-u']]])('rebase %j onto an image whose data file is raw is refused, as qemu-img refuses it, changing nothing', (flags) => {
    for (const tool of ['platter', 'qemu-img']) {
      const name = `raw-data-${tool}-${flags.length}.qcow2`;
      run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${name}.data,data_file_raw=on`, name, '4M'], { cwd: temp.dir });
      const before = readFileSync(join(temp.dir, name));
      const args = ['rebase', ...flags, '-b', 'base.qcow2', '-F', 'qcow2', name];
      const result = tool === 'platter' ? platter(args, { cwd: temp.dir }) : spawnSync(tool, args, { cwd: temp.dir, encoding: 'utf8' });
      expect(result.status, result.stderr).toBe(1);
      expect(result.stderr).toContain("Could not change the backing file to 'base.qcow2'");
      expect(readFileSync(join(temp.dir, name)).equals(before)).toBe(true);
    }
  });

  it('rebase -u without -b drops the backing file reference, as qemu-img does', () => {
    for (const tool of ['platter', 'qemu-img']) {
      const name = `unnamed-${tool}.qcow2`;
      chainCreate(temp.dir, name, { backing: 'base.qcow2' });
      const result = tool === 'platter' ? platter(['rebase', '-u', name], { cwd: temp.dir }) : spawnSync(tool, ['rebase', '-u', name], { cwd: temp.dir, encoding: 'utf8' });
      expect(result.status, result.stderr).toBe(0);
      expect(run('qemu-img', ['info', name], { cwd: temp.dir })).not.toContain('backing file:');
    }
    expect(readFileSync(join(temp.dir, 'unnamed-platter.qcow2')).equals(readFileSync(join(temp.dir, 'unnamed-qemu-img.qcow2')))).toBe(true);
  });

  it('check of an overlay whose backing file is missing fails as qemu-img check does; with the file there it checks clean', () => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', 'gone.qcow2', '-F', 'qcow2', 'orphan.qcow2', '4M'], { cwd: temp.dir });
    const theirs = spawnSync('qemu-img', ['check', 'orphan.qcow2'], { cwd: temp.dir, encoding: 'utf8' });
    const ours = platter(['check', 'orphan.qcow2'], { cwd: temp.dir });
    expect([ours.status, theirs.status]).toEqual([1, 1]);
    expect(ours.stderr).toMatch(/^platter: orphan\.qcow2: could not open backing file '.*gone\.qcow2': No such file or directory\n$/);
    expect(platter(['check', 'top.qcow2'], { cwd: temp.dir }).status).toBe(0);
  });

  it('a failed rebase leaves the image as it was', () => {
    const result = platter(['rebase', '-b', 'missing.qcow2', '-F', 'qcow2', 'top.qcow2'], { cwd: temp.dir });
    expect(result.status).toBe(1);
    expect(JSON.parse(run('qemu-img', ['info', '--output=json', 'top.qcow2'], { cwd: temp.dir }))['backing-filename']).toBe('base.qcow2');
  });

  it('-p and --progress=json report progress up to the whole disk', () => {
    const dir = `${temp.dir}/progress`;
    copyChain(temp.dir, dir, ['base.qcow2', 'top.qcow2']);
    const rebase = platter(['rebase', '-p', '-b', '', 'top.qcow2'], { cwd: dir });
    expect(rebase.status).toBe(0);
    expect(rebase.stdout).toMatch(/\(0\.00\/100%\)\r/);
    expect(rebase.stdout).toMatch(/\(100\.00\/100%\)\r\n$/);
    expect(chainSame(temp.dir, `${dir}/top.qcow2`, 'top.qcow2')).toBe(true);
    copyChain(temp.dir, dir, ['top.qcow2']);
    const commit = platter(['commit', '--progress=json', 'top.qcow2'], { cwd: dir });
    expect(commit.status).toBe(0);
    expect(commit.stdout).toBe('Image committed.\n');
    const lines = commit.stderr.trim().split('\n').map((line) => JSON.parse(line) as { done: number; total: number });
    expect(lines.at(-1)).toEqual({ done: 4 << 20, total: 4 << 20 });
  });

  it('--help shows examples for both commands', () => {
    for (const command of ['rebase', 'commit']) {
      const result = platter([command, '--help']);
      expect(result.status).toBe(0);
      expect(result.stdout).toMatch(new RegExp(`Examples:[\\s\\S]*platter ${command} `));
    }
  });
});
