/**
 * Images named by qemu block options: `--image-opts` operands
 * (driver=qcow2,file.filename=disk.qcow2, with ,, for a comma) and json:{...}
 * names. The same output as qemu-img for info, map, check, compare and
 * measure; convert from them, and into an existing image named by
 * --target-image-opts; and qemu-img's refusals (an option the driver does not
 * take, no file, a node name) in its words. Drivers and protocols other than
 * qcow2, raw and file are refused as unsupported.
 */

import { copyFileSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { imageSpec } from '../src/cli/image-opts.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

describe('block options as image names', () => {
  it.each([
    ['driver=qcow2,file.filename=disk.qcow2', { path: 'disk.qcow2', format: 'qcow2' }],
    ['driver=qcow2,file.driver=file,file.filename=a,,b.qcow2', { path: 'a,b.qcow2', format: 'qcow2' }],
    ['file.filename=disk.img', { path: 'disk.img', format: undefined }],
    ['driver=raw,file.filename=disk.raw,read-only=on,cache.direct=on,file.locking=off', { path: 'disk.raw', format: 'raw' }],
    ['driver=file,filename=disk.raw,aio=threads', { path: 'disk.raw', format: 'raw' }],
    ['driver=qcow2,file.filename=d.qcow2,l2-cache-size=1M,overlap-check.template=all', { path: 'd.qcow2', format: 'qcow2' }],
    ['json:{"driver":"qcow2","file":{"driver":"file","filename":"disk.qcow2"}}', { path: 'disk.qcow2', format: 'qcow2' }],
  ])('%s', (word, spec) => {
    expect(imageSpec(word)).toEqual(spec);
  });

  it.each([
    ['driver=qcow2', 'A block device must be specified for "file"'],
    ['disk.qcow2', "Cannot find device='disk.qcow2' nor node-name='disk.qcow2'"],
    ['driver=qcow2,file=disk.qcow2', "Cannot find device='disk.qcow2' nor node-name='disk.qcow2'"],
    ['driver=qcow2,file.filename=d.qcow2,backing=null', "Block format 'qcow2' does not support the option 'backing'"],
    ['driver=qcow2,file.filename=d.qcow2,file.foo=1', "Block protocol 'file' doesn't support the option 'foo'"],
    ['driver=vmdk,file.filename=d.vmdk', "the 'vmdk' driver is not supported"],
    ['driver=qcow2,file.driver=nbd,file.filename=d', "the 'nbd' protocol is not supported"],
    ['driver=raw,file.filename=d.raw,offset=512', "the raw driver's offset and size options are not supported"],
    ['json:{"driver":', 'Could not parse the JSON options'],
  ])('%s: refused', (word, message) => {
    expect(() => imageSpec(word)).toThrow(message);
  });
});

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('--image-opts on the command line, against qemu-img', () => {
  const tmp = tempDir('platter-image-opts-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const qemuImg = (...args: string[]) => run('qemu-img', args, { cwd: tmp.dir });
  qemuImg('create', '-q', '-f', 'qcow2', 'disk.qcow2', '16M');
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 5 1M 1M', at('disk.qcow2')]);
  qemuImg('convert', '-O', 'raw', 'disk.qcow2', 'disk.raw');
  const qcow2 = 'driver=qcow2,file.driver=file,file.filename=disk.qcow2';
  const raw = 'driver=raw,file.filename=disk.raw';

  it.each([
    [['info', '--image-opts', qcow2]],
    [['info', '--output=json', '--image-opts', raw]],
    [['info', 'json:{"driver":"qcow2","file":{"driver":"file","filename":"disk.qcow2"}}']],
    [['map', '--output=json', '--image-opts', qcow2]],
    [['check', '--image-opts', qcow2]],
    [['compare', '--image-opts', qcow2, raw]],
    [['measure', '-O', 'qcow2', '--image-opts', qcow2]],
  ])('%j: what qemu-img prints', (args) => {
    const ours = platter(args, { cwd: tmp.dir });
    expect(ours.stderr).toBe('');
    expect(ours.stdout).toBe(qemuImg(...args));
  });

  it('convert from option strings, and -n into an image named by --target-image-opts: the same bytes as qemu-img', () => {
    expect(platter(['convert', '--image-opts', '-O', 'raw', qcow2, at('out.raw')], { cwd: tmp.dir }).status).toBe(0);
    expect(readFileSync(at('out.raw')).equals(readFileSync(at('disk.raw')))).toBe(true);
    for (const owner of ['ours', 'theirs']) qemuImg('create', '-q', '-f', 'qcow2', `into-${owner}.qcow2`, '16M');
    qemuImg('convert', '-n', '--target-image-opts', 'disk.raw', 'driver=qcow2,file.filename=into-theirs.qcow2');
    const result = platter(['convert', '-n', '--target-image-opts', 'disk.raw', 'driver=qcow2,file.filename=into-ours.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toBe('');
    expect(qemuImg('compare', 'into-ours.qcow2', 'into-theirs.qcow2')).toContain('Images are identical');
    expect(qemuImg('info', 'into-ours.qcow2')).toContain('file format: qcow2');
  });

  it.each([
    [['info', '--image-opts', '-f', 'qcow2', qcow2], '--image-opts and --format are mutually exclusive'],
    [['convert', '--target-image-opts', '-O', 'qcow2', 'disk.raw', 'driver=qcow2,file.filename=x.qcow2'], '--target-image-opts requires use of -n flag'],
    [['convert', '-n', '--target-image-opts', '-O', 'raw', 'disk.raw', 'driver=qcow2,file.filename=x.qcow2'], '--image-opts and --format are mutually exclusive'],
    [['info', '--image-opts', `${qcow2},foo=1`], `${qcow2},foo=1: Block format 'qcow2' does not support the option 'foo'`],
  ])('%j: refused in qemu-img words', (args, message) => {
    const result = platter(args, { cwd: tmp.dir });
    expect(result.stderr).toBe(`platter: ${message}\n`);
    expect(result.status).toBe(1);
  });

  it('an output named without a driver is refused, not probed: the image is left as it was', () => {
    copyFileSync(at('disk.qcow2'), at('kept.qcow2'));
    const before = readFileSync(at('kept.qcow2'));
    const result = platter(['convert', '-n', '--target-image-opts', 'disk.raw', 'file.filename=kept.qcow2'], { cwd: tmp.dir });
    expect(result.stderr).toMatch(/the output's driver must be given/);
    expect(readFileSync(at('kept.qcow2')).equals(before)).toBe(true);
  });
});
