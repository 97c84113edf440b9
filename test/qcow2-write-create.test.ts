/**
 * create, resize, amend and the refusals of the write path: fresh images equal
 * qemu-img create's byte for byte; resized and amended images pass qemu-img
 * check; writing refuses images with unknown incompatible bits or the corrupt bit.
 */

import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { platter } from './helpers/tools.js';
import { qcow2TempDir, qcow2ToolAvailable, qemuRawBytes, sh, shStatus } from './helpers/qcow2-oracle.js';
import { createQcow2InMemory, openWritable } from './helpers/qcow2-writer.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());
const at = (name: string) => join(temp.dir, name);

/** Option sets whose images must come out byte-identical to qemu-img's. */
const identical: [string[], string][] = [
  [[], '1G'],
  [[], '0'],
  [['-o', 'compat=0.10'], '10G'],
  [['-o', 'cluster_size=4096,refcount_bits=8'], '100G'],
  [['-o', 'cluster_size=512,refcount_bits=1'], '1G'],
  [['-o', 'extended_l2=on,compression_type=zstd,lazy_refcounts=on'], '20G'],
  [['-o', 'cluster_size=2M'], '100G'],
  [['-o', 'compat=v2,cluster_size=16K'], '3G'],
  // compat comes before the data file on the "Formatting" line, whatever the order given.
  [['-o', 'data_file=identical-data.raw,compat=1.1'], '64M'],
  // Not whole sectors: qemu rounds the size up, and prints it as asked for.
  [[], '1000'],
  [['-o', 'cluster_size=512'], '513'],
  // An L1 table larger than the first refcount table counts: the table grows, and lands, where qemu's does.
  [['-o', 'cluster_size=512'], '32G'],
  [['-o', 'cluster_size=1024,refcount_bits=64'], '100G'],
  [['-o', 'preallocation=metadata,cluster_size=512'], '64M'],
  [['-o', 'preallocation=metadata,cluster_size=2048,refcount_bits=32'], '300M'],
  // The file options: checked and printed as qemu-img prints them, not applied (nor by qemu on ext4).
  [['-o', 'nocow=on,extent_size_hint=4M'], '1G'],
  [['-o', 'extent_size_hint=0,nocow=off'], '1G'],
];

describe.skipIf(!haveQemu)('create -f qcow2', () => {
  identical.forEach(([options, size], i) => {
    it(`is byte-identical to qemu-img create ${options.join(' ')} ${size}`, () => {
      const mine = platter(['create', '-f', 'qcow2', ...options, at(`mine${i}.qcow2`), size]);
      const theirs = sh(temp.dir, 'qemu-img', ['create', '-f', 'qcow2', ...options, at(`theirs${i}.qcow2`), size]);
      expect(mine.status, mine.stderr).toBe(0);
      expect(mine.stdout.replace(`mine${i}`, 'X')).toBe(theirs.replace(`theirs${i}`, 'X'));
      expect(Buffer.compare(readFileSync(at(`mine${i}.qcow2`)), readFileSync(at(`theirs${i}.qcow2`)))).toBe(0);
    });
  });

  it('-o help lists the options as qemu-img does (create -f FMT, convert -O FMT): the same names, but for encryption', () => {
    const names = (text: string) => [...text.matchAll(/^ {2}(\w[\w.-]*)=<[^>]+> +- /gm)].map((match) => match[1]);
    const lines = (format: string) => [
      ['create', '-f', format, '-o', 'help'],
      ['convert', '-O', format, '-o', 'help'],
    ];
    for (const args of ['qcow2', 'raw'].flatMap(lines)) {
      const format = args[2]!;
      const mine = platter(args);
      const theirs = sh(temp.dir, 'qemu-img', args);
      expect(mine.status).toBe(0);
      expect(mine.stdout.split('\n')[0]).toBe(theirs.split('\n')[0]);
      // qemu-img lists raw's preallocation, and the file options, with the file protocol's options
      // (given a file name), not the format's; platter lists the file options with every format.
      const expected = [...names(theirs).filter((name) => !name!.startsWith('encrypt')), 'extent_size_hint', 'nocow'].sort();
      expect(names(mine.stdout).filter((name) => format === 'qcow2' || name !== 'preallocation')).toEqual(expected);
    }
    const missing = platter(['create', '-f', 'qcow2']);
    expect([missing.status, missing.stderr]).toEqual([1, 'platter: Expecting image file name\n']);
    const noTarget = platter(['convert', '-O', 'qcow2', 'source.qcow2']);
    expect([noTarget.status, noTarget.stderr]).toEqual([1, 'platter: Must specify image file name\n']);
  });

  it.each([
    ['create', '-f', 'qcow2', '-o', 'cluster_size=3', 'KEPT', '1M'],
    ['create', '-f', 'qcow2', '-o', 'foo=1', 'KEPT', '1M'],
    ['create', '-f', 'raw', '-o', 'preallocation=bogus', 'KEPT', '1M'],
    ['convert', '-O', 'qcow2', '-o', 'cluster_size=3', 'SOURCE', 'KEPT'],
    ['convert', '-O', 'qcow2', '-o', 'refcount_bits=3', '-B', 'SOURCE', '-F', 'qcow2', 'SOURCE', 'KEPT'],
    ['convert', '-O', 'raw', '-o', 'preallocation=bogus', 'SOURCE', 'KEPT'],
  ])('%s %s %s %s ... with a bad option leaves an existing file as it was', (...args) => {
    const kept = at(`kept-${args.join('-').replace(/[^\w-]/g, '')}`);
    writeFileSync(kept, 'precious');
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'bad-option-source.qcow2', '1M']);
    const line = args.map((arg) => (arg === 'KEPT' ? kept : arg === 'SOURCE' ? at('bad-option-source.qcow2') : arg));
    const result = platter(line);
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/^platter: .*\n$/);
    expect(readFileSync(kept, 'utf8')).toBe('precious');
  });

  // Each refused as qemu-img 7.2 refuses it, in its words, and after its "Formatting" line where qemu-img prints one.
  it.each([
    'cluster_size=3k',
    'cluster_size=4M',
    'refcount_bits=3',
    'compat=0.10,refcount_bits=8',
    'compat=0.10,lazy_refcounts=on',
    'compat=0.10,extended_l2=on',
    'compat=0.10,compression_type=zstd',
    'compat=0.10,data_file=refused.raw',
    'extended_l2=on,cluster_size=4k',
    'data_file_raw=on',
    'backing_fmt=qcow2',
    'compat=0.9',
    'compression_type=lz4',
    'preallocation=nope',
    'lazy_refcounts=maybe',
  ])('create -o %s is refused with qemu-img\'s message, naming the file, and no file is made', (options) => {
    const [mine, theirs] = ['mine', 'theirs'].map((who) => at(`refused-${who}.qcow2`));
    const result = platter(['create', '-f', 'qcow2', '-o', options, mine!, '1G']);
    const qemu = shStatus(temp.dir, 'qemu-img', ['create', '-f', 'qcow2', '-o', options, theirs!, '1G']);
    expect(qemu.status).toBe(1);
    expect([result.status, result.stderr]).toEqual([1, qemu.stderr.replace(/^qemu-img: /, 'platter: ').replace(theirs!, mine!)]);
    expect(result.stdout).toBe(qemu.stdout.replace(theirs!, mine!));
    expect([existsSync(mine!), existsSync(theirs!)]).toEqual([false, false]);
  });

  it.each([
    ['1T', 'cluster_size=512'],
    ['100T', 'cluster_size=4k'],
    ['4P', ''],
  ])('create of a %s image whose L1 table would be too large (-o %s) is refused as qemu-img refuses it, and leaves no file', (size, options) => {
    const [mine, theirs] = ['mine', 'theirs'].map((who) => at(`too-large-${who}.qcow2`));
    const flags = options ? ['-o', options] : [];
    const result = platter(['create', '-f', 'qcow2', ...flags, mine!, size]);
    const qemu = shStatus(temp.dir, 'qemu-img', ['create', '-f', 'qcow2', ...flags, theirs!, size]);
    expect(qemu.status).toBe(1);
    expect([result.status, result.stderr]).toEqual([1, qemu.stderr.replace(/^qemu-img: /, 'platter: ').replace(theirs!, mine!)]);
    expect(result.stdout).toBe(qemu.stdout.replace(theirs!, mine!));
    expect([existsSync(mine!), existsSync(theirs!)]).toEqual([false, false]);
  });

  it('a data file that cannot be made fails the create, and the image file is removed, as qemu-img removes it', () => {
    const result = platter(['create', '-f', 'qcow2', '-o', 'data_file=no-such-dir/data.raw', 'data-orphan.qcow2', '1M'], { cwd: temp.dir });
    const qemu = shStatus(temp.dir, 'qemu-img', ['create', '-f', 'qcow2', '-o', 'data_file=no-such-dir/data.raw', 'data-orphan-qemu.qcow2', '1M']);
    expect([result.status, qemu.status]).toEqual([1, 1]);
    expect(result.stderr).toMatch(/^platter: .*no-such-dir\/data\.raw.*No such file or directory\n$/);
    expect([existsSync(at('data-orphan.qcow2')), existsSync(at('data-orphan-qemu.qcow2'))]).toEqual([false, false]);
  });

  it.each(['cluster_size=3k', 'compat=0.9', 'compat=0.10,extended_l2=on', 'cluster_size=512'])(
    'convert -O qcow2 -o %s says what qemu-img says',
    (options) => {
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'refused-source.qcow2', '64M']);
      const result = platter(['convert', '-O', 'qcow2', '-o', options, 'refused-source.qcow2', 'refused-out.qcow2'], { cwd: temp.dir });
      const qemu = shStatus(temp.dir, 'qemu-img', ['convert', '-O', 'qcow2', '-o', options, 'refused-source.qcow2', 'refused-out.qcow2']);
      expect([result.status, result.stderr]).toEqual([qemu.status, qemu.stderr.replace(/^qemu-img: /, 'platter: ')]);
      rmSync(at('refused-out.qcow2'), { force: true });
    },
  );

  it.each([
    ['raw', 'preallocation=full'],
    ['raw', 'nocow=on,preallocation=falloc,extent_size_hint=1M'],
    ['raw', 'extent_size_hint=1M'],
    ['qcow2', 'nocow=on,extent_size_hint=1M,preallocation=off'],
  ])('create -f %s -o %s prints the line qemu-img prints', (format, options) => {
    const mine = platter(['create', '-f', format, '-o', options, 'line-mine.img', '3M'], { cwd: temp.dir });
    const theirs = sh(temp.dir, 'qemu-img', ['create', '-f', format, '-o', options, 'line-theirs.img', '3M']);
    expect(mine.status, mine.stderr).toBe(0);
    expect(mine.stdout.replace('line-mine', 'X')).toBe(theirs.replace('line-theirs', 'X'));
  });

  it.each(['qcow2', 'raw'])('create -f %s with -o size= and a size operand is refused, as qemu-img refuses it', (format) => {
    const result = platter(['create', '-f', format, '-o', 'size=5M', 'twice-mine.img', '6M'], { cwd: temp.dir });
    const qemu = shStatus(temp.dir, 'qemu-img', ['create', '-f', format, '-o', 'size=5M', 'twice-theirs.img', '6M']);
    expect([result.status, result.stderr]).toEqual([qemu.status, qemu.stderr.replace(/^qemu-img: twice-theirs/, 'platter: twice-mine')]);
    expect(existsSync(at('twice-mine.img'))).toBe(false);
  });

  it('an overlay takes its size from the backing file and matches qemu-img byte for byte', () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'base.qcow2', '3G']);
    const mine = platter(['create', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', at('over-mine.qcow2')]);
    expect(mine.status, mine.stderr).toBe(0);
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', 'over-theirs.qcow2']);
    expect(Buffer.compare(readFileSync(at('over-mine.qcow2')), readFileSync(at('over-theirs.qcow2')))).toBe(0);
  });

  it('a backing file without -F is refused, as qemu-img >= 6.1 does', () => {
    const result = platter(['create', '-f', 'qcow2', '-b', 'base.qcow2', at('noformat.qcow2')], { cwd: temp.dir });
    expect(result.status).toBe(1);
    expect(result.stderr).toContain('Backing file specified without backing format');
  });

  for (const options of ['preallocation=metadata', 'preallocation=falloc,cluster_size=16K,extended_l2=on', 'preallocation=full,compat=0.10', 'data_file=prealloc.raw,data_file_raw=on']) {
    it(`-o ${options} passes qemu-img check and reads as zeros (layouts may differ from qemu's)`, () => {
      const result = platter(['create', '-q', '-f', 'qcow2', '-o', options, at('pre.qcow2'), '3M']);
      expect(result.status, result.stderr).toBe(0);
      expect(shStatus(temp.dir, 'qemu-img', ['check', 'pre.qcow2']).status).toBe(0);
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'zeros.raw', '3M']);
      expect(shStatus(temp.dir, 'qemu-img', ['compare', 'pre.qcow2', 'zeros.raw']).status).toBe(0);
    });
  }
});

describe.skipIf(!haveQemu)('convert -O qcow2 with an external data file', () => {
  it.each([
    ['data_file=DATA', []],
    ['data_file=DATA,data_file_raw=on', []],
    ['data_file=DATA,preallocation=metadata', []],
    ['data_file=DATA', ['-S', '0']],
    ['data_file=DATA', ['-B', 'dc-base.qcow2', '-F', 'qcow2']],
  ] as const)('-o %s %j: the image and its data file are qemu-img\'s', (options, flags) => {
    if (!existsSync(at('dc-top.qcow2'))) {
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'dc-base.qcow2', '8M']);
      sh(temp.dir, 'qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -P 2 4M 64k', 'dc-base.qcow2']);
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'dc-base.qcow2', '-F', 'qcow2', 'dc-top.qcow2']);
      sh(temp.dir, 'qemu-io', ['-c', 'write -P 3 512k 1M', '-c', 'write -z 4M 64k', '-c', 'write -P 4 6M 100k', 'dc-top.qcow2']);
    }
    const line = (who: string) => ['convert', '-O', 'qcow2', ...flags, '-o', options.replace('DATA', `dc-${who}.data`), 'dc-top.qcow2', `dc-${who}.qcow2`];
    for (const who of ['mine', 'theirs']) rmSync(at(`dc-${who}.data`), { force: true });
    const mine = platter(line('mine'), { cwd: temp.dir });
    expect(mine.status, mine.stderr).toBe(0);
    sh(temp.dir, 'qemu-img', line('theirs'));
    const state = (who: string) => ({
      map: sh(temp.dir, 'qemu-img', ['map', '--output=json', `dc-${who}.qcow2`]).replaceAll(`dc-${who}`, 'dc'),
      data: createHash('sha256').update(readFileSync(at(`dc-${who}.data`))).digest('hex'),
      check: shStatus(temp.dir, 'qemu-img', ['check', `dc-${who}.qcow2`]).status,
      contents: createHash('sha256').update(qemuRawBytes(temp.dir, `dc-${who}.qcow2`)).digest('hex'),
    });
    expect(state('mine')).toEqual(state('theirs'));
  });

  it.each(['off', 'on'])('create -o data_file=...,data_file_raw=%s makes the data file the disk\'s size, and the image byte for byte, as qemu-img makes them', (raw) => {
    // Names of one length: the images then differ only where the name is written.
    for (const who of ['mine', 'them']) rmSync(at(`dcc-${who}.data`), { force: true });
    const line = (who: string) => ['create', '-q', '-f', 'qcow2', '-o', `data_file=dcc-${who}.data,data_file_raw=${raw}`, `dcc-${who}.qcow2`, '80M'];
    expect(platter(line('mine'), { cwd: temp.dir }).status).toBe(0);
    sh(temp.dir, 'qemu-img', line('them'));
    expect(statSync(at('dcc-mine.data')).size).toBe(statSync(at('dcc-them.data')).size);
    const named = (who: string) => readFileSync(at(`dcc-${who}.qcow2`)).toString('latin1').replaceAll(`dcc-${who}`, 'dcc-XXXX');
    expect(named('mine') === named('them')).toBe(true);
  });

  it('-c is refused before anything is made (qemu-img fails at its first write)', () => {
    const result = platter(['convert', '-c', '-O', 'qcow2', '-o', 'data_file=dc-c.data', 'dc-top.qcow2', 'dc-c.qcow2'], { cwd: temp.dir });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/compressed clusters cannot be written into an external data file/);
    expect([existsSync(at('dc-c.data')), existsSync(at('dc-c.qcow2'))]).toEqual([false, false]);
  });
});

describe.skipIf(!haveQemu)('resize and amend', () => {
  it.each([
    ['off', ['+1M']],
    ['on', ['+1M']],
    ['off', ['--shrink', '1M']],
    ['on', ['--shrink', '1536k']],
    ['off', ['--preallocation=metadata', '+2M']],
    ['on', ['--preallocation=full', '+2M']],
    ['off', ['amend', '-o', 'size=8M']],
    ['on', ['amend', '-o', 'size=8M']],
    ['on', ['amend', '-o', 'size=2M']],
  ] as const)('an image with an external data file (data_file_raw=%s) resizes as qemu-img resizes it: %j', (raw, flags) => {
    const paths = (who: string) => ({ image: at(`df-${who}.qcow2`), data: at(`df-${who}.data`) });
    for (const who of ['mine', 'theirs']) {
      const { image, data } = paths(who);
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${data},data_file_raw=${raw}`, image, '4M']);
      sh(temp.dir, 'qemu-io', ['-c', 'write -P 5 1M 1M', '-c', 'write -P 6 3M 64k', image]);
    }
    // resize takes the image before the size; amend's flags come first too.
    const line = (image: string) => (flags[0] === 'amend' ? [...flags, image] : ['resize', ...flags.slice(0, -1), image, flags.at(-1)!]);
    const mine = platter(line(paths('mine').image));
    const theirs = shStatus(temp.dir, 'qemu-img', line(paths('theirs').image));
    expect([mine.status, mine.stdout]).toEqual([theirs.status, theirs.stdout]);
    const state = (who: string) => {
      const { image, data } = paths(who);
      return {
        map: sh(temp.dir, 'qemu-img', ['map', '--output=json', image]).replaceAll(`df-${who}`, 'df'),
        dataSize: statSync(data).size,
        check: shStatus(temp.dir, 'qemu-img', ['check', image]).status,
        contents: createHash('sha256').update(qemuRawBytes(temp.dir, image)).digest('hex'),
      };
    };
    expect(state('mine')).toEqual(state('theirs'));
  });

  it('grows and shrinks a qcow2 image; qemu-img reads the result as expected', () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', 'rs.qcow2', '1M']);
    sh(temp.dir, 'qemu-io', ['-c', 'write -P 7 0 1M', 'rs.qcow2']);
    expect(platter(['resize', at('rs.qcow2'), '+600M']).stdout).toBe('Image resized.\n');
    expect(platter(['resize', at('rs.qcow2'), '-100M']).status).toBe(1); // needs --shrink
    expect(platter(['resize', '--shrink', at('rs.qcow2'), '-600M']).status).toBe(0);
    expect(platter(['resize', '--shrink', at('rs.qcow2'), '512K']).status).toBe(0);
    expect(platter(['resize', at('rs.qcow2'), '2M']).status).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['check', 'rs.qcow2']).status).toBe(0);
    const expected = new Uint8Array(2 << 20);
    expected.fill(7, 0, 512 << 10);
    writeFileSync(at('rs-expected.raw'), expected);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', '-F', 'raw', 'rs.qcow2', 'rs-expected.raw']).status).toBe(0);
  });

  it('resizes raw images', () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'rs.raw', '1M']);
    expect(platter(['resize', '-f', 'raw', at('rs.raw'), '+1M']).status).toBe(0);
    expect(readFileSync(at('rs.raw')).length).toBe(2 << 20);
  });

  it('takes sizes that are not whole sectors as qemu-img does: raw to the byte, qcow2 not at all', () => {
    const both = (args: (image: string) => string[], image: string) => {
      const mine = platter(args(`${image}-mine`), { cwd: temp.dir });
      const theirs = shStatus(temp.dir, 'qemu-img', args(`${image}-theirs`));
      expect(mine.status, mine.stderr).toBe(theirs.status);
      expect(mine.stdout.replaceAll('-mine', '')).toBe(theirs.stdout.replaceAll('-theirs', ''));
      expect(readFileSync(at(`${image}-mine`)).equals(readFileSync(at(`${image}-theirs`)))).toBe(true);
      return mine;
    };
    both((image) => ['create', '-q', '-f', 'raw', image, '1000'], 'odd.raw');
    both((image) => ['resize', '-f', 'raw', image, '+100'], 'odd.raw');
    both((image) => ['resize', '--shrink', '-f', 'raw', image, '3'], 'odd.raw');
    expect(readFileSync(at('odd.raw-mine')).length).toBe(3);
    both((image) => ['create', '-q', '-f', 'qcow2', image, '1000'], 'odd.qcow2');
    const refused = both((image) => ['resize', image, '+100'], 'odd.qcow2');
    expect(refused.stderr).toMatch(/The new size must be a multiple of 512\n$/);
  });

  it('a shrink without --shrink is refused with qemu-img\'s error and warning, and the image is left as it was', () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'noshrink-mine.qcow2', '4M']);
    copyFileSync(at('noshrink-mine.qcow2'), at('noshrink-theirs.qcow2'));
    const mine = platter(['resize', 'noshrink-mine.qcow2', '1M'], { cwd: temp.dir });
    const theirs = shStatus(temp.dir, 'qemu-img', ['resize', 'noshrink-theirs.qcow2', '1M']);
    expect(mine.status).toBe(theirs.status);
    // platter names the file in its error line, as it names it in every error.
    expect(mine.stderr.replace('platter: noshrink-mine.qcow2: ', 'platter: ')).toBe(theirs.stderr.replaceAll('qemu-img: ', 'platter: '));
    expect(readFileSync(at('noshrink-mine.qcow2')).equals(readFileSync(at('noshrink-theirs.qcow2')))).toBe(true);
  });

  it.each([
    ['64k', '96M', 'metadata'],
    ['4k', '64M', 'metadata'],
    ['64k', '2G', 'data_file_raw'],
  ])('resize of a %s-cluster image with a freed hole to %s (%s) gives qemu-img\'s file, byte for byte', (clusterSize, size, kind) => {
    // Each span of new clusters in an L2 table takes one run of host clusters, as in qemu: a hole
    // freed by a discard is too small for it and stays free (one cluster at a time filled it before).
    // Names of one length: the data file's name is in the header.
    const name = (who: string) => `hole-${clusterSize}-${kind}-${who}`;
    for (const who of ['mine', 'qemu']) {
      const options = kind === 'data_file_raw' ? `cluster_size=${clusterSize},data_file=${name(who)}.data,data_file_raw=on` : `cluster_size=${clusterSize}`;
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', options, `${name(who)}.qcow2`, '16M']);
      sh(temp.dir, 'qemu-io', ['-c', 'write -P 1 0 4M', '-c', 'discard 1M 1M', '-c', 'write -P 2 10M 100k', `${name(who)}.qcow2`]);
    }
    const flags = kind === 'metadata' ? ['--preallocation=metadata'] : [];
    const mine = platter(['resize', ...flags, `${name('mine')}.qcow2`, size], { cwd: temp.dir });
    const theirs = shStatus(temp.dir, 'qemu-img', ['resize', ...flags, `${name('qemu')}.qcow2`, size]);
    expect([mine.status, mine.stdout]).toEqual([theirs.status, theirs.stdout]);
    const bytes = (who: string) => {
      const file = readFileSync(at(`${name(who)}.qcow2`));
      const named = file.indexOf(name(who));
      if (named >= 0) file.write(name('xxxx'), named, 'latin1');
      return file;
    };
    expect(bytes('mine').equals(bytes('qemu'))).toBe(true);
  });

  it.each(['metadata', 'falloc', 'full'])('resize --preallocation=%s grows a qcow2 image as qemu-img does', (mode) => {
    for (const who of ['mine', 'theirs']) {
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', `pre-${mode}-${who}.qcow2`, '1M']);
      sh(temp.dir, 'qemu-io', ['-c', 'write -P 9 0 100k', `pre-${mode}-${who}.qcow2`]);
    }
    const mine = platter(['resize', `--preallocation=${mode}`, `pre-${mode}-mine.qcow2`, '3M'], { cwd: temp.dir });
    const theirs = shStatus(temp.dir, 'qemu-img', ['resize', `--preallocation=${mode}`, `pre-${mode}-theirs.qcow2`, '3M']);
    expect([mine.status, mine.stdout]).toEqual([theirs.status, theirs.stdout]);
    const [ours, qemus] = [at(`pre-${mode}-mine.qcow2`), at(`pre-${mode}-theirs.qcow2`)];
    // metadata: the same file. falloc and full: qemu-img also builds a new refcount table there (platter
    // does not), so the clusters lie elsewhere: the same contents and the same clusters allocated.
    if (mode === 'metadata') expect(readFileSync(ours).equals(readFileSync(qemus))).toBe(true);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', ours, qemus]).status).toBe(0);
    const check = (file: string) => JSON.parse(shStatus(temp.dir, 'qemu-img', ['check', '--output=json', file]).stdout) as Record<string, number>;
    expect(check(ours)['allocated-clusters']).toBe(check(qemus)['allocated-clusters']);
    expect(shStatus(temp.dir, 'qemu-img', ['check', ours]).status).toBe(0);
    if (mode === 'full') {
      // The new clusters hold written zeros: no hole in the file where they lie.
      const map = JSON.parse(shStatus(temp.dir, 'qemu-img', ['map', '--output=json', ours]).stdout) as Array<{ start: number; zero: boolean }>;
      expect(map.find((entry) => entry.start === 1 << 20)?.zero).toBe(false);
    }
  });

  it('resize --preallocation on raw files and its refusals match qemu-img', () => {
    const both = (args: string[], file: string) => {
      for (const who of ['mine', 'theirs']) sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'raw', `${file}-${who}`, '1M']);
      const mine = platter([...args.slice(0, -1), `${file}-mine`, args[args.length - 1]!], { cwd: temp.dir });
      const theirs = shStatus(temp.dir, 'qemu-img', [...args.slice(0, -1), `${file}-theirs`, args[args.length - 1]!]);
      expect(mine.status).toBe(theirs.status);
      expect(readFileSync(at(`${file}-mine`)).equals(readFileSync(at(`${file}-theirs`)))).toBe(true);
      return { mine, theirs };
    };
    both(['resize', '-f', 'raw', '--preallocation=full', '3000000'], 'pre-full.raw');
    both(['resize', '-f', 'raw', '--preallocation=falloc', '3M'], 'pre-falloc.raw');
    for (const [args, message] of [
      [['resize', '-f', 'raw', '--preallocation=metadata', '3M'], 'Unsupported preallocation mode: metadata'],
      [['resize', '-f', 'raw', '--preallocation=bogus', '3M'], "Invalid preallocation mode 'bogus'"],
      [['resize', '-f', 'raw', '--shrink', '--preallocation=full', '512k'], 'Preallocation can only be used for growing images'],
    ] as const) {
      const { mine, theirs } = both([...args], 'pre-refused.raw');
      expect(theirs.stderr).toContain(message);
      expect(mine.stderr).toBe(`platter: pre-refused.raw-mine: ${message}\n`);
    }
  });

  it('amend -o compat upgrades and downgrades exactly as qemu-img amend does', () => {
    for (const name of ['am-mine.qcow2', 'am-theirs.qcow2']) {
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', 'base.qcow2', '-F', 'qcow2', name]);
      sh(temp.dir, 'qemu-io', ['-c', 'write -P 3 0 100k', name]);
    }
    for (const compat of ['1.1', '0.10']) {
      expect(platter(['amend', '-o', `compat=${compat}`, at('am-mine.qcow2')]).status).toBe(0);
      sh(temp.dir, 'qemu-img', ['amend', '-o', `compat=${compat}`, 'am-theirs.qcow2']);
      expect(Buffer.compare(readFileSync(at('am-mine.qcow2')), readFileSync(at('am-theirs.qcow2'))), compat).toBe(0);
    }
  });

  it('downgrades an image with zero clusters by writing them out (amend-downgrade.test.ts compares with qemu-img)', () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'zc.qcow2', '1M']);
    sh(temp.dir, 'qemu-io', ['-c', 'write -z 0 64k', 'zc.qcow2']);
    const result = platter(['amend', '-o', 'compat=0.10', at('zc.qcow2')]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(sh(temp.dir, 'qemu-img', ['info', 'zc.qcow2'])).toContain('compat: 0.10');
  });
});

describe('write refusals', () => {
  async function pokedImage(incompatibleBits: bigint): Promise<MemoryDevice> {
    const device = await createQcow2InMemory(1 << 20, {});
    const bytes = device.contents();
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    view.setBigUint64(72, view.getBigUint64(72) | incompatibleBits);
    return device;
  }

  it('refuses an image with an unknown incompatible feature bit', async () => {
    await expect(openWritable(await pokedImage(1n << 40n))).rejects.toMatchObject({ code: 'EUNSUPPORTED', message: expect.stringContaining('unknown incompatible feature bit 40') });
  });

  it('refuses an image marked corrupt', async () => {
    await expect(openWritable(await pokedImage(2n))).rejects.toMatchObject({ code: 'ECORRUPT', message: expect.stringContaining('marked corrupt') });
  });

  it('a refcount block pointer that is not cluster-aligned is a corruption error, before anything is written', async () => {
    const device = await createQcow2InMemory(1 << 20, {});
    const bytes = device.contents();
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    const tableOffset = Number(view.getBigUint64(48));
    view.setBigUint64(tableOffset, view.getBigUint64(tableOffset) + 0x1000n);
    const before = bytes.slice();
    await expect(openWritable(device)).rejects.toMatchObject({ code: 'ECORRUPT' });
    expect(Buffer.compare(device.contents(), before)).toBe(0);
  });

  it('opens a dirty image for writing once its refcounts are rebuilt, dirty bit cleared', async () => {
    const device = await pokedImage(1n);
    const image = await openWritable(device);
    expect(new DataView(device.contents().buffer, device.contents().byteOffset).getBigUint64(72) & 1n).toBe(0n);
    await image.close();
  });

  it('a lazy-refcounts image is dirty while open for writing and clean after close', async () => {
    const device = await createQcow2InMemory(1 << 20, { lazy_refcounts: 'on' });
    const image = await openWritable(device);
    await image.write(0, new Uint8Array(4096).fill(1));
    const view = () => new DataView(device.contents().buffer, device.contents().byteOffset);
    expect(view().getBigUint64(72) & 1n).toBe(1n);
    await image.close();
    expect(view().getBigUint64(72) & 1n).toBe(0n);
  });
});

describe.skipIf(!haveQemu)('an image left dirty by a crash', () => {
  it('is repaired on opening for writing, as qemu repairs it: check clean, same contents as qemu-io makes', () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', 'crashed.qcow2', '4M']);
    // qemu-io's abort ends the process with the data written and the refcounts never updated.
    shStatus(temp.dir, 'qemu-io', ['-c', 'write -P 0x5a 0 1M', '-c', 'abort', 'crashed.qcow2']);
    expect(shStatus(temp.dir, 'qemu-img', ['check', 'crashed.qcow2']).status).toBe(2);
    sh(temp.dir, 'cp', ['crashed.qcow2', 'crashed-q.qcow2']);
    const result = platter(['resize', at('crashed.qcow2'), '8M']);
    expect(result.status, result.stderr).toBe(0);
    expect(result.stderr).toMatch(/not closed cleanly.*refcounts repaired/);
    sh(temp.dir, 'qemu-img', ['resize', '-q', 'crashed-q.qcow2', '8M']);
    expect(shStatus(temp.dir, 'qemu-img', ['check', 'crashed.qcow2']).status).toBe(0);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', 'crashed.qcow2', 'crashed-q.qcow2']).status).toBe(0);
    const read = shStatus(temp.dir, 'qemu-io', ['-r', '-c', 'read -P 0x5a 0 1M', 'crashed.qcow2']);
    expect(read.status).toBe(0);
    expect(read.stdout + read.stderr).not.toMatch(/verification failed/);
  });
});

describe.skipIf(!haveQemu)('an unknown autoclear feature bit', () => {
  /** The autoclear features (u64 at byte 88) of the image named `name`. */
  const autoclear = (name: string) => readFileSync(at(name)).readBigUint64BE(88);
  let made = 0;

  // Each command opens the overlay for writing (with qemu-img too), so the bit goes; info only reads.
  it.each<[string, (image: string) => string[]]>([
    ['amend -o lazy_refcounts=on', (image) => ['amend', '-o', 'lazy_refcounts=on', image]],
    ['rebase -u', (image) => ['rebase', '-u', '-b', 'autoclear-other.qcow2', '-F', 'qcow2', image]],
    ['commit', (image) => ['commit', '-q', image]],
    ['check -r leaks', (image) => ['check', '-q', '-r', 'leaks', image]],
    ['snapshot -c', (image) => ['snapshot', '-c', 'kept', image]],
    ['resize --shrink', (image) => ['resize', '-q', '--shrink', image, '2M']],
    ['info', (image) => ['info', image]],
  ])('%s leaves it as qemu-img does: cleared when the image is opened for writing', (_, args) => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'autoclear-base.qcow2', '4M']);
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'autoclear-other.qcow2', '4M']);
    const bits: bigint[] = [];
    for (const tool of ['platter', 'qemu-img'] as const) {
      const name = `autoclear-${made++}.qcow2`;
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'autoclear-base.qcow2', '-F', 'qcow2', name]);
      sh(temp.dir, 'qemu-io', ['-c', 'write 0 64k', name]);
      const bytes = readFileSync(at(name));
      bytes.writeBigUint64BE(bytes.readBigUint64BE(88) | 0x80n, 88);
      writeFileSync(at(name), bytes);
      const result = tool === 'platter' ? platter(args(at(name))) : shStatus(temp.dir, 'qemu-img', args(name));
      expect(result.status, result.stderr).toBe(0);
      bits.push(autoclear(name));
    }
    expect(bits[0]).toBe(bits[1]);
  });
});

describe.skipIf(!haveQemu)('writing over internal snapshots', () => {
  it('copies shared L2 tables and clusters on write; the snapshot keeps its data', async () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'snap.qcow2', '4M']);
    sh(temp.dir, 'qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -P 2 2M 64k', 'snap.qcow2']);
    sh(temp.dir, 'qemu-img', ['snapshot', '-c', 'before', 'snap.qcow2']);
    const { openImageFile } = await import('../src/node/open.js');
    const image = await openImageFile(at('snap.qcow2'), { writable: true });
    await image.write!(4096, new Uint8Array(100).fill(3));
    await (image as unknown as { writeZeroes(o: number, l: number): Promise<void> }).writeZeroes(2 << 20, 64 << 10);
    await image.write!(3 << 20, new Uint8Array(70000).fill(4));
    await image.close();
    const check = shStatus(temp.dir, 'qemu-img', ['check', 'snap.qcow2']);
    expect(check.status, check.stdout + check.stderr).toBe(0);
    const expected = new Uint8Array(4 << 20);
    expected.fill(1, 0, 1 << 20);
    expected.fill(3, 4096, 4196);
    expected.fill(4, 3 << 20, (3 << 20) + 70000);
    writeFileSync(at('snap-now.raw'), expected);
    expect(shStatus(temp.dir, 'qemu-img', ['compare', '-F', 'raw', 'snap.qcow2', 'snap-now.raw']).status).toBe(0);
    const before = new Uint8Array(4 << 20);
    before.fill(1, 0, 1 << 20);
    before.fill(2, 2 << 20, (2 << 20) + (64 << 10));
    writeFileSync(at('snap-before.raw'), before);
    sh(temp.dir, 'qemu-img', ['convert', '-l', 'before', '-O', 'raw', 'snap.qcow2', 'snap-before-out.raw']);
    expect(Buffer.compare(readFileSync(at('snap-before-out.raw')), readFileSync(at('snap-before.raw')))).toBe(0);
  });
});

describe.skipIf(!haveQemu)('external data files', () => {
  for (const raw of [false, true]) {
    it(`writes, zero writes and discards land in the data file (data_file_raw=${raw ? 'on' : 'off'}); qemu agrees`, async () => {
      const { createQcow2WithDataFile, openWithDataFile } = await import('./helpers/qcow2-writer.js');
      const size = 2 << 20;
      const { device, data } = await createQcow2WithDataFile(size, { data_file_raw: raw ? 'on' : 'off', cluster_size: '65536' });
      const image = await openWithDataFile(device, data, true);
      const expected = new Uint8Array(size);
      const write = async (offset: number, length: number, value: number) => {
        await image.write(offset, new Uint8Array(length).fill(value));
        expected.fill(value, offset, offset + length);
      };
      await write(0, 200_000, 1);
      await write(70_000, 5, 2);
      await write(1 << 20, 300, 3);
      await image.writeZeroes(65536, 65536);
      expected.fill(0, 65536, 131072);
      await image.discard(131072, 65536);
      expected.fill(0, 131072, 196608);
      await image.close();
      const dir = join(temp.dir, `data-${raw}`);
      sh(temp.dir, 'mkdir', ['-p', dir]);
      writeFileSync(join(dir, 'image.qcow2'), device.contents());
      const dataBytes = new Uint8Array(Math.max(data.size, 0));
      dataBytes.set(data.contents());
      writeFileSync(join(dir, 'data.raw'), dataBytes);
      writeFileSync(join(dir, 'expected.raw'), expected);
      const check = shStatus(dir, 'qemu-img', ['check', 'image.qcow2']);
      expect(check.status, check.stdout + check.stderr).toBe(0);
      expect(shStatus(dir, 'qemu-img', ['compare', '-F', 'raw', 'image.qcow2', 'expected.raw']).status).toBe(0);
      if (raw) expect(Buffer.compare(Buffer.from(dataBytes.subarray(0, size)), Buffer.from(expected))).toBe(0);
    });
  }

  it('an L2 entry mapping a guest cluster to another offset of the data file: reads refused as qemu refuses them, check clean as in qemu-img', () => {
    const dir = join(temp.dir, 'data-moved');
    sh(temp.dir, 'mkdir', ['-p', dir]);
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=moved.raw', 'moved.qcow2', '16M']);
    sh(dir, 'qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 0 1M', 'moved.qcow2']);
    const bytes = readFileSync(join(dir, 'moved.qcow2'));
    const l2 = Number(bytes.readBigUInt64BE(Number(bytes.readBigUInt64BE(40))) & 0xfffffffffe00n);
    // Guest cluster 1 (64 KiB) mapped to host offset 3 MiB, COPIED set.
    bytes.writeBigUInt64BE(0x8000000000300000n, l2 + 8);
    writeFileSync(join(dir, 'moved.qcow2'), bytes);
    for (const args of [['convert', '-O', 'raw', 'moved.qcow2', 'out.raw'], ['map', '--output=json', 'moved.qcow2']]) {
      const qemu = shStatus(dir, 'qemu-img', args);
      const mine = platter(args, { cwd: dir });
      expect(qemu.stderr).toContain('External data file host cluster offset 0x300000 does not match guest cluster offset: 0x10000');
      expect([args[0], mine.status]).toEqual([args[0], qemu.status]);
      expect(mine.stderr).toContain('External data file host cluster offset 0x300000 does not match guest cluster offset 0x10000');
    }
    const check = platter(['check', 'moved.qcow2'], { cwd: dir });
    expect([check.status, check.stdout]).toEqual([0, shStatus(dir, 'qemu-img', ['check', 'moved.qcow2']).stdout]);
  });
});
