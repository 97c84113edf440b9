/**
 * Images named by qemu block options: `--image-opts` operands
 * (driver=qcow2,file.filename=disk.qcow2, with ,, for a comma) and json:{...}
 * names. The same output as qemu-img for info, map, check, compare and
 * measure; convert from them, and into an existing image named by
 * --target-image-opts; a raw image that is a part of its file (the raw
 * driver's offset and size); and qemu-img's refusals (an option the driver
 * does not take, no file, a node name) in its words. Drivers and protocols
 * other than qcow2, raw and file are refused as unsupported.
 */

import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { imageSpec } from '../src/core/block-options.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

describe('block options as image names', () => {
  it.each([
    ['driver=qcow2,file.filename=disk.qcow2', { path: 'disk.qcow2', format: 'qcow2' }],
    ['driver=qcow2,file.driver=file,file.filename=a,,b.qcow2', { path: 'a,b.qcow2', format: 'qcow2' }],
    ['file.filename=disk.img', { path: 'disk.img', format: undefined }],
    ['driver=raw,file.filename=disk.raw,read-only=on,cache.direct=on,file.locking=off', { path: 'disk.raw', format: 'raw' }],
    ['driver=file,filename=disk.raw,aio=threads', { path: 'disk.raw', format: 'file' }],
    ['driver=qcow2,file.filename=d.qcow2,l2-cache-size=1M,overlap-check.template=all', { path: 'd.qcow2', format: 'qcow2' }],
    ['json:{"driver":"qcow2","file":{"driver":"file","filename":"disk.qcow2"}}', { path: 'disk.qcow2', format: 'qcow2' }],
    // A null backing (JSON has a null, option strings do not) opens the image alone, for any driver.
    ['json:{"driver":"qcow2","file":{"driver":"file","filename":"top.qcow2"},"backing":null}', { path: 'top.qcow2', format: 'qcow2', noBacking: true }],
    ['json:{"driver":"raw","file":{"driver":"file","filename":"d.raw"},"backing":null}', { path: 'd.raw', format: 'raw', noBacking: true }],
    // A part of the file, named as qemu names it: the options as given, in the order qemu prints a dictionary.
    [
      'driver=raw,offset=1M,size=4M,file.filename=disk.img',
      {
        path: 'disk.img',
        format: 'raw',
        window: { offset: 1 << 20, size: 4 << 20, name: 'json:{"offset": "1M", "driver": "raw", "size": "4M", "file": {"driver": "file", "filename": "disk.img"}}' },
      },
    ],
    [
      'driver=raw,offset=1000,file.filename=disk.img',
      { path: 'disk.img', format: 'raw', window: { offset: 1000, name: 'json:{"offset": "1000", "driver": "raw", "file": {"driver": "file", "filename": "disk.img"}}' } },
    ],
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
    ['driver=raw,file.filename=d.raw,offset=-1', "Parameter 'offset' expects a non-negative number below 2^64"],
    ['driver=qcow2,file.filename=d.qcow2,offset=512', "Block format 'qcow2' does not support the option 'offset'"],
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
  qemuImg('create', '-q', '-f', 'qcow2', '-b', 'disk.qcow2', '-F', 'qcow2', 'top.qcow2');
  run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 6 3M 64k', at('top.qcow2')]);
  const alone = 'json:{"driver":"qcow2","file":{"driver":"file","filename":"top.qcow2"},"backing":null}';
  // An overlay whose backing file is named by such a json: name: qemu reads that backing file alone.
  qemuImg('create', '-q', '-f', 'qcow2', '-u', '-b', alone, '-F', 'qcow2', 'over-alone.qcow2', '16M');
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
    // qemu's file protocol as the image: the file's bytes, under the name 'file'.
    [['info', '--image-opts', 'driver=file,filename=disk.raw']],
    [['info', '--output=json', '-f', 'file', 'disk.raw']],
    [['compare', '-f', 'file', '-F', 'qcow2', 'disk.raw', 'disk.qcow2']],
    // An overlay opened alone: its unallocated clusters read as zeros, not from disk.qcow2.
    [['info', alone]],
    [['map', '--output=json', alone]],
    [['measure', '-O', 'qcow2', alone]],
    [['check', alone]],
    // info --backing-chain lists every name followed, as qemu-img does, "backing": null or not.
    [['info', '--backing-chain', alone]],
    [['map', '--output=json', 'over-alone.qcow2']],
    [['info', '--backing-chain', 'over-alone.qcow2']],
  ])('%j: what qemu-img prints', (args) => {
    const ours = platter(args, { cwd: tmp.dir });
    expect(ours.stderr).toBe('');
    expect(ours.stdout).toBe(qemuImg(...args));
  });

  // A raw image that is part of the file: 4 MiB from 1 MiB in, and from byte 1000 to the end.
  const part = 'driver=raw,offset=1M,size=4M,file.filename=disk.raw';
  const tail = 'driver=raw,offset=1000,file.filename=disk.raw';

  it.each([
    [['info', '--image-opts', part]],
    [['info', '--output=json', '--image-opts', tail]],
    [['compare', '--image-opts', part, 'driver=raw,offset=1M,size=4M,file.filename=disk.raw']],
  ])('a part of a raw file, %j: what qemu-img prints', (args) => {
    const ours = platter(args, { cwd: tmp.dir });
    expect(ours.stderr).toBe('');
    expect(ours.stdout).toBe(qemuImg(...args));
  });

  it('a part of a raw file: converted, the same bytes as qemu-img; mapped into the file; never converted onto its file', () => {
    // Sector-aligned: from byte 1000, qemu-img 7.2 takes the sector where the data starts for a hole and loses its bytes.
    for (const [window, name] of [[part, 'part'], ['driver=raw,offset=512,file.filename=disk.raw', 'tail']] as const) {
      expect(platter(['convert', '--image-opts', '-O', 'qcow2', window, at(`${name}-ours.qcow2`)], { cwd: tmp.dir }).status).toBe(0);
      qemuImg('convert', '--image-opts', '-O', 'qcow2', window, `${name}-theirs.qcow2`);
      expect(readFileSync(at(`${name}-ours.qcow2`)).equals(readFileSync(at(`${name}-theirs.qcow2`)))).toBe(true);
    }
    // From byte 1000 on: the file's bytes from there, the last sector padded with zeros, as qemu sizes the image.
    expect(platter(['convert', '--image-opts', '-O', 'raw', tail, at('tail.raw')], { cwd: tmp.dir }).status).toBe(0);
    const file = readFileSync(at('disk.raw'));
    const expected = Buffer.alloc(Math.ceil((file.length - 1000) / 512) * 512);
    file.copy(expected, 0, 1000);
    expect(readFileSync(at('tail.raw')).equals(expected)).toBe(true);
    // Without SEEK_DATA platter maps the whole part as data, where qemu-img finds the holes; both place it in the file.
    const mapped = JSON.parse(platter(['map', '--output=json', '--image-opts', part], { cwd: tmp.dir }).stdout) as { offset: number }[];
    expect(mapped[0]!.offset).toBe(1 << 20);
    expect(platter(['map', '--image-opts', part], { cwd: tmp.dir }).stdout).toContain('0x100000        disk.raw');
    const before = readFileSync(at('disk.raw'));
    const onto = platter(['convert', '--image-opts', '-O', 'raw', part, 'disk.raw'], { cwd: tmp.dir });
    expect(onto.stderr).toContain('refusing to convert onto the source image disk.raw');
    expect(readFileSync(at('disk.raw')).equals(before)).toBe(true);
  });

  it.each([part, qcow2])('dd --image-opts if=%s: the same bytes as qemu-img dd', (input) => {
    const args = (out: string) => ['dd', '--image-opts', `if=${input}`, `of=${out}`, 'bs=64k', 'count=40'];
    qemuImg(...args('dd-theirs.raw'));
    const ours = platter(args('dd-ours.raw'), { cwd: tmp.dir });
    expect(ours.stderr).toBe('');
    expect(readFileSync(at('dd-ours.raw')).equals(readFileSync(at('dd-theirs.raw')))).toBe(true);
  });

  it.each([
    [['info', '--image-opts', 'driver=raw,offset=15M,size=4M,file.filename=disk.raw'], 'disk.raw: The sum of offset (15728640) and size (4194304) has to be smaller or equal to the actual size of the containing file (16777216)'],
    [['info', '--image-opts', 'driver=raw,offset=20M,file.filename=disk.raw'], 'disk.raw: Offset (20971520) cannot be greater than size of the containing file (16777216)'],
    [['resize', '--image-opts', part, '8M'], 'json:{"offset": "1M", "driver": "raw", "size": "4M", "file": {"driver": "file", "filename": "disk.raw"}}: Cannot resize fixed-size raw disks'],
  ])('a part of a raw file, %j: refused as qemu-img refuses it', (args, message) => {
    const result = platter(args, { cwd: tmp.dir });
    expect(result.stderr).toBe(`platter: ${message}\n`);
    expect(result.status).toBe(1);
  });

  it('a part of a file whose length is not whole sectors: bounds taken in whole sectors, the tail of the last reading zeros, as qemu-img takes them', () => {
    writeFileSync(at('odd.raw'), Buffer.alloc(1000, 7));
    const window = (options: string) => `json:{"driver":"raw",${options}"file":{"driver":"file","filename":"odd.raw"}}`;
    for (const options of ['"offset":0,"size":1024,', '"offset":512,"size":512,', '"offset":1000,', '"offset":600,', '"offset":1024,']) {
      const name = window(options);
      const ours = JSON.parse(platter(['info', '--output=json', name], { cwd: tmp.dir }).stdout) as { 'virtual-size': number };
      const theirs = JSON.parse(qemuImg('info', '--output=json', name)) as { 'virtual-size': number };
      expect(ours['virtual-size'], options).toBe(theirs['virtual-size']);
      qemuImg('convert', '-O', 'raw', name, 'odd-theirs.raw');
      expect(platter(['convert', '-O', 'raw', name, at('odd-ours.raw')], { cwd: tmp.dir }).status).toBe(0);
      expect(readFileSync(at('odd-ours.raw')).equals(readFileSync(at('odd-theirs.raw'))), options).toBe(true);
    }
    // Refused as qemu-img refuses them: the bounds against 1024 bytes first, then a size of whole sectors.
    for (const [options, message] of [
      ['"offset":1025,', 'Offset (1025) cannot be greater than size of the containing file (1024)'],
      ['"offset":0,"size":1025,', 'The sum of offset (0) and size (1025) has to be smaller or equal to the actual size of the containing file (1024)'],
      ['"offset":1000,"size":24,', 'Specified size is not multiple of 512'],
    ]) {
      const ours = platter(['info', window(options!)], { cwd: tmp.dir });
      expect(ours.stderr).toBe(`platter: odd.raw: ${message}\n`);
      expect(ours.status).toBe(1);
      const theirs = spawnSync('qemu-img', ['info', window(options!)], { cwd: tmp.dir, encoding: 'utf8' });
      expect(theirs.stderr.replace('  actual', ' actual')).toContain(`: ${message}\n`);
      expect(theirs.status).toBe(1);
    }
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
    [['dd', '--image-opts', '-f', 'raw', `if=${raw}`, 'of=x.raw'], '--image-opts and --format are mutually exclusive'],
    [['convert', '-n', '--target-image-opts', 'disk.raw', 'driver=raw,offset=1M,file.filename=x.raw'], "an output that is a part of a file (the raw driver's offset and size) is not supported"],
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
