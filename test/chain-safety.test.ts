/**
 * Chain safety: names resolve against the naming image's directory from any
 * working directory; cycles, over-deep chains and missing files fail fast and
 * say which files are involved; rewriting the backing name keeps unknown
 * header extensions.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MAX_BACKING_DEPTH } from '../src/core/limits.js';
import { FileDevice } from '../src/node/file-device.js';
import { openImageFile } from '../src/node/open.js';
import { readMetadata } from '../formats/qcow2/index.js';
import { writeBackingReference } from '../formats/qcow2/backing-header.js';
import { chainBacking, chainCheck, chainCreate, chainSame, chainWrite } from './helpers/chain-images.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');

describe.skipIf(!enabled)('backing chain safety', () => {
  const temp = tempDir('platter-chain-safety-');
  afterAll(() => temp.cleanup());

  it('a three-layer chain over three directories resolves from a fourth working directory', () => {
    for (const dir of ['d1', 'd2', 'd3', 'd4']) mkdirSync(temp.path(dir));
    chainCreate(temp.path('d1'), 'base.qcow2', { size: '2M' });
    chainWrite(temp.path('d1'), 'base.qcow2', ['write -P 1 0 1M']);
    chainCreate(temp.path('d2'), 'mid.qcow2', { backing: '../d1/base.qcow2' });
    chainWrite(temp.path('d2'), 'mid.qcow2', ['write -P 2 512k 512k']);
    chainCreate(temp.path('d3'), 'top.qcow2', { backing: join(temp.dir, 'd2', 'mid.qcow2') });
    chainWrite(temp.path('d3'), 'top.qcow2', ['write -P 3 1M 64k']);
    const cwd = temp.path('d4');
    const args = ['info', '--backing-chain', '--output=json', '../d3/top.qcow2'];
    const result = platter(args, { cwd });
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual(JSON.parse(run('qemu-img', args, { cwd })));
    expect(platter(['convert', '-O', 'raw', '../d3/top.qcow2', 'flat.raw'], { cwd }).status).toBe(0);
    expect(chainSame(cwd, 'flat.raw', '../d3/top.qcow2')).toBe(true);
    const map = platter(['map', '--output=json', '../d3/top.qcow2'], { cwd });
    const depths = (JSON.parse(map.stdout) as Array<{ depth: number; data: boolean }>).filter((entry) => entry.data).map((entry) => entry.depth);
    expect(new Set(depths)).toEqual(new Set([0, 1, 2]));
  });

  it('a two-image cycle fails at once, naming both files', async () => {
    const dir = temp.path('cycle');
    mkdirSync(dir);
    chainCreate(dir, 'a.qcow2', { size: '1M', backing: 'b.qcow2', unsafe: true });
    chainCreate(dir, 'b.qcow2', { size: '1M', backing: 'a.qcow2', unsafe: true });
    await expect(openImageFile(join(dir, 'a.qcow2'))).rejects.toThrow(/a\.qcow2.*b\.qcow2.*a\.qcow2/);
    for (const command of [['info', '--backing-chain'], ['map'], ['convert', '-O', 'raw']]) {
      const result = platter([...command, 'a.qcow2', ...(command[0] === 'convert' ? ['out.raw'] : [])], { cwd: dir });
      expect(result.status).not.toBe(0);
      expect(result.stderr).toMatch(/^platter: .*cycle.*a\.qcow2.*b\.qcow2/m);
      expect(result.stderr).not.toMatch(/\n\s+at /);
    }
  }, 1000 * 10);

  it('the cycle is found within a second', async () => {
    const dir = temp.path('cycle');
    await expect(openImageFile(join(dir, 'b.qcow2'))).rejects.toThrow(/cycle/);
  }, 1000);

  it(`a chain deeper than ${MAX_BACKING_DEPTH} images fails, saying how deep`, () => {
    const dir = temp.path('deep');
    mkdirSync(dir);
    chainCreate(dir, 'l0.qcow2', { size: '1M' });
    for (let layer = 1; layer <= MAX_BACKING_DEPTH; layer++) {
      chainCreate(dir, `l${layer}.qcow2`, { size: '1M', backing: `l${layer - 1}.qcow2`, unsafe: true });
    }
    const result = platter(['info', '--backing-chain', `l${MAX_BACKING_DEPTH}.qcow2`], { cwd: dir });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toMatch(new RegExp(`deeper than ${MAX_BACKING_DEPTH} images: .*l${MAX_BACKING_DEPTH}\.qcow2 -> .*l${MAX_BACKING_DEPTH - 1}\.qcow2 -> .* more.* -> .*l0\.qcow2`));
    expect(platter(['info', '--backing-chain', `l${MAX_BACKING_DEPTH - 1}.qcow2`], { cwd: dir }).status).toBe(0);
  });

  it('a missing backing file names the path tried and the image that names it', () => {
    const dir = temp.path('missing');
    mkdirSync(join(dir, 'sub'), { recursive: true });
    chainCreate(join(dir, 'sub'), 'top.qcow2', { size: '1M', backing: 'gone.qcow2', unsafe: true });
    const result = platter(['info', '--backing-chain', 'sub/top.qcow2'], { cwd: dir });
    expect(result.status).not.toBe(0);
    expect(result.stderr).toContain('sub/top.qcow2');
    expect(result.stderr).toContain("'sub/gone.qcow2'");
  });

  it('rewriting the backing file name keeps unknown header extensions', async () => {
    const dir = temp.path('extensions');
    mkdirSync(dir);
    chainCreate(dir, 'base.qcow2', { size: '1M' });
    chainCreate(dir, 'top.qcow2', { backing: 'base.qcow2' });
    const path = join(dir, 'top.qcow2');
    const unknown = { type: 0x12345678, data: new Uint8Array([1, 2, 3, 4, 5]) };
    let device = await FileDevice.open(path, { writable: true });
    const metadata = await readMetadata(device);
    metadata.extensions.all.push(unknown);
    await writeBackingReference(device, metadata, { file: 'base.qcow2', format: 'qcow2' });
    await device.close();
    writeFileSync(join(dir, 'renamed-base.raw'), new Uint8Array(1 << 20));
    expect(platter(['rebase', '-u', '-b', 'renamed-base.raw', '-F', 'raw', 'top.qcow2'], { cwd: dir }).status).toBe(0);
    device = await FileDevice.open(path);
    const after = await readMetadata(device);
    await device.close();
    expect(after.extensions.unknown).toEqual([unknown]);
    expect(after.backingFileName).toBe('renamed-base.raw');
    expect(chainBacking(dir, 'top.qcow2')).toEqual({ name: 'renamed-base.raw', format: 'raw' });
    expect(chainCheck(dir, 'top.qcow2').clean).toBe(true);
    expect(platter(['rebase', '-u', '-b', '', 'top.qcow2'], { cwd: dir }).status).toBe(0);
    expect(chainBacking(dir, 'top.qcow2')).toEqual({ name: undefined, format: undefined });
  });
});
