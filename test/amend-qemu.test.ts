/**
 * amend (and resize --shrink, which amend -o size shares) against qemu-img on
 * copies of the same image: the same exit status, files byte for byte equal
 * when both succeed, and qemu-img's message when both refuse.
 */

import { copyFileSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-amend-');
afterAll(() => tmp.cleanup());
let made = 0;

/** An 8 MiB image made with `createOptions`, data at 0 and at 7 MiB; both tools run `args` (the image last, or where `args` puts it) on a copy. */
function both(createOptions: string[], args: string[] | ((image: string) => string[])) {
  const source = tmp.path(`source-${made++}.qcow2`);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', ...createOptions, source, '8M']);
  run('qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -P 2 7M 512k', source]);
  const outcome = (tool: 'platter' | 'qemu-img') => {
    const image = `${source}.${tool}`;
    copyFileSync(source, image);
    const line = typeof args === 'function' ? args(image) : [...args, image];
    const result = tool === 'platter' ? platter(line) : shStatus(tmp.dir, 'qemu-img', line);
    return { ...result, bytes: readFileSync(image) };
  };
  return { mine: outcome('platter'), qemu: outcome('qemu-img') };
}

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('amend against qemu-img', () => {
  it.each<[string[], string[]]>([
    [[], ['amend', '-o', 'lazy_refcounts=on']],
    [['-o', 'lazy_refcounts=on'], ['amend', '-o', 'lazy_refcounts=off']],
    [['-o', 'compat=0.10'], ['amend', '-o', 'compat=1.1,lazy_refcounts=on']],
    [['-o', 'compat=0.10'], ['amend', '-o', 'compat=1.1', '-o', 'lazy_refcounts=on']],
    [['-o', 'lazy_refcounts=on'], ['amend', '-o', 'compat=0.10']],
    // data_file_raw: off is taken (the bit cleared), on only where it is on already.
    [['-o', `data_file=${tmp.path('raw-off.data')},data_file_raw=on`], ['amend', '-o', 'data_file_raw=off']],
    [['-o', `data_file=${tmp.path('raw-on.data')},data_file_raw=on`], ['amend', '-o', 'data_file_raw=on']],
    [[], ['amend', '-o', 'data_file_raw=off']],
    [[], ['amend', '-o', 'size=16M']],
    [[], ['amend', '-o', 'size=4M']],
    [[], ['amend', '-o', 'size=512k']],
    [['-o', 'compat=0.10'], ['amend', '-o', 'size=16M']],
    [[], ['amend', '-o', 'compat=0.10,size=16M']],
    [[], ['amend', '-o', 'size=16M,lazy_refcounts=on']],
    // 0 is qemu-img's 'no size given': nothing changes.
    [[], ['amend', '-o', 'size=0']],
    [['-o', 'cluster_size=4k'], ['amend', '-o', 'size=100M']],
    [['-o', 'extended_l2=on'], ['amend', '-o', 'size=20M']],
    [['-o', 'refcount_bits=1'], ['amend', '-o', 'size=2M']],
    [[], ['amend', '-o', 'refcount_bits=16']],
    [[], ['amend', '-o', 'refcount_bits=8']],
    [[], ['amend', '-o', 'refcount_bits=1']],
    [['-o', 'refcount_bits=1'], ['amend', '-o', 'refcount_bits=64']],
    [['-o', 'cluster_size=512'], ['amend', '-o', 'refcount_bits=64']],
    [['-o', 'compat=0.10'], ['amend', '-o', 'compat=1.1,refcount_bits=4']],
    [['-o', 'refcount_bits=8'], ['amend', '-o', 'compat=0.10,refcount_bits=16']],
  ])('create %j, then %j', (createOptions, args) => {
    const { mine, qemu } = both(createOptions, args);
    expect(mine.stderr).toBe('');
    expect(qemu.status).toBe(0);
    expect(mine.status).toBe(0);
    expect(mine.bytes.equals(qemu.bytes)).toBe(true);
  });

  it.each<[string[], string[], string]>([
    [['-o', 'compat=0.10'], ['amend', '-o', 'lazy_refcounts=on'], 'Lazy refcounts only supported with compatibility level 1.1 and above (use compat=1.1 or greater)'],
    [[], ['amend', '-o', 'compat=0.10,lazy_refcounts=on'], 'Lazy refcounts only supported with compatibility level 1.1 and above'],
    [[], ['amend', '-o', 'refcount_bits=3'], 'Refcount width must be a power of two and may not exceed 64 bits'],
    [['-o', 'compat=0.10'], ['amend', '-o', 'refcount_bits=8'], 'Refcount widths other than 16 bits require compatibility level 1.1 or above (use compat=1.1 or greater)'],
    [[], ['amend', '-o', 'backing_file=other.qcow2'], 'Cannot amend the backing file'],
    [[], ['amend', '-o', 'cluster_size=4k'], "Invalid parameter 'cluster_size'\nThis option is only supported for image creation"],
    [[], ['amend', '-o', 'data_file_raw=on'], 'data-file-raw cannot be set on existing images'],
    [['-o', `data_file=${tmp.path('not-raw.data')}`], ['amend', '-o', 'data_file_raw=on'], 'data-file-raw cannot be set on existing images'],
    [[], ['amend', '-o', 'data_file=x.raw'], 'data-file can only be set for images that use an external data file'],
    [[], ['amend', '-o', 'compat=2.0'], 'Unknown compatibility level 2.0'],
    [[], ['amend', '-o', 'lazy_refcounts=maybe'], "Parameter 'lazy_refcounts' expects 'on' or 'off'"],
    [[], ['amend', '-o', 'foo=1'], "Invalid parameter 'foo'"],
  ])('create %j, then %j is refused with qemu-img\'s message, changing nothing', (createOptions, args, message) => {
    const { mine, qemu } = both(createOptions, args);
    expect(qemu.status).toBe(1);
    expect(qemu.stderr).toContain(message);
    expect(mine.status).toBe(1);
    expect(mine.stderr).toContain(`platter: ${message}`);
    expect(mine.bytes.equals(qemu.bytes)).toBe(true);
  });

  it('a refcount of 2 (a snapshot) refuses a 1-bit width, with qemu-img\'s message, changing nothing', () => {
    let before = Buffer.alloc(0);
    const { mine, qemu } = both([], (image) => {
      run('qemu-img', ['snapshot', '-c', 'kept', image]);
      if (image.endsWith('platter')) before = readFileSync(image);
      return ['amend', '-o', 'refcount_bits=1', image];
    });
    expect([mine.status, qemu.status]).toEqual([1, 1]);
    expect(qemu.stderr).toContain('Cannot decrease refcount entry width to 1 bits: Cluster at offset');
    expect(mine.stderr).toBe(`platter: ${qemu.stderr.replace(/^qemu-img: /, '')}`);
    expect(mine.bytes.equals(before)).toBe(true);
  });

  it.each<[string[], string]>([
    [['resize', '-q'], '0'],
    [['resize', '-q', '--shrink'], '0'],
    [['resize', '-q', '--shrink', '-f', 'qcow2'], '-8M'],
  ])('%j to %s is refused as qemu-img refuses it (a size must be positive), changing nothing', (args, size) => {
    let before = Buffer.alloc(0);
    const { mine, qemu } = both([], (image) => {
      if (image.endsWith('platter')) before = readFileSync(image);
      return [...args, image, '--', size];
    });
    expect([mine.status, qemu.status]).toEqual([1, 1]);
    expect(qemu.stderr).toContain('New image size must be positive');
    expect(mine.stderr).toContain('New image size must be positive');
    expect(mine.bytes.equals(before)).toBe(true);
  });

  it.each(['4M', '512k', '7M'])('resize --shrink to %s cuts the file after its last used cluster, as qemu-img does', (size) => {
    const { mine, qemu } = both([], (image) => ['resize', '-q', '--shrink', image, size]);
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    expect(mine.bytes.length).toBe(qemu.bytes.length);
    expect(mine.bytes.equals(qemu.bytes)).toBe(true);
  });

  it('size= growing an overlay above a longer backing file makes the new space read zeros, as qemu-img and resize do', () => {
    const base = tmp.path(`long-base-${made}.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
    run('qemu-io', ['-c', 'write -P 9 0 8M', base]);
    const { mine, qemu } = both(['-b', base, '-F', 'qcow2'], (image) => {
      run('qemu-img', ['resize', '-q', '--shrink', image, '4M']);
      return ['amend', '-o', 'size=6M', image];
    });
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    expect(mine.bytes.equals(qemu.bytes)).toBe(true);
    // A version 2 overlay has no zero clusters: qemu-img fails there, platter writes the zeros, as its resize does.
    const old = tmp.path(`v2-overlay-${made}.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', '-b', base, '-F', 'qcow2', old, '4M']);
    expect(platter(['amend', '-o', 'size=6M', old]).status).toBe(0);
    expect(run('qemu-io', ['-r', '-c', 'read -P 0 4M 2M', old])).toContain('read 2097152/2097152 bytes');
  });

  it.each(['lazy_refcounts=on', 'refcount_bits=8', 'compat=0.10', 'size=16M'])('-o %s on an image marked corrupt is refused, as qemu-img refuses it, changing nothing', (option) => {
    let before = Buffer.alloc(0);
    const { mine, qemu } = both([], (image) => {
      // Incompatible feature bit 1 (corrupt), in the u64 at byte 72.
      const bytes = readFileSync(image);
      bytes[79] = bytes[79]! | 2;
      writeFileSync(image, bytes);
      if (image.endsWith('platter')) before = bytes;
      return ['amend', '-o', option, image];
    });
    expect([mine.status, qemu.status]).toEqual([1, 1]);
    expect(qemu.stderr).toContain('Image is corrupt; cannot be opened read/write');
    expect(mine.stderr).toContain('image is marked corrupt and cannot be opened for writing');
    expect(mine.bytes.equals(before)).toBe(true);
  });

  it('an overlay whose backing file is missing is refused, as qemu-img refuses it, changing nothing', () => {
    const base = tmp.path(`gone-base-${made}.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', base, '8M']);
    let before = Buffer.alloc(0);
    const { mine, qemu } = both(['-b', base, '-F', 'qcow2'], (image) => {
      if (image.endsWith('platter')) {
        rmSync(base);
        before = readFileSync(image);
      }
      return ['amend', '-o', 'compat=0.10', image];
    });
    expect([mine.status, qemu.status]).toEqual([1, 1]);
    expect(qemu.stderr).toContain('Could not open backing file');
    expect(mine.stderr).toContain(`could not open backing file '${base}'`);
    expect(mine.bytes.equals(before)).toBe(true);
  });

  it('an image left dirty (lazy refcounts, a crash) is repaired and amended, as qemu-img does', () => {
    const { mine, qemu } = both(['-o', 'lazy_refcounts=on'], (image) => {
      shStatus(tmp.dir, 'qemu-io', ['-c', 'write -P 3 2M 1M', '-c', 'sigraise 9', image]);
      return ['amend', '-o', 'lazy_refcounts=off', image];
    });
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    expect(mine.stderr).toContain('refcounts repaired');
    const image = tmp.path(`source-${made - 1}.qcow2.platter`);
    expect(shStatus(tmp.dir, 'qemu-img', ['check', image]).status).toBe(0);
    expect(run('qemu-img', ['info', image])).toContain('lazy refcounts: false');
    expect(run('qemu-io', ['-r', '-c', 'read -P 3 2M 1M', image])).toContain('read 1048576/1048576 bytes');
  });

  it('changes the name of an external data file as qemu-img does', () => {
    const name = tmp.path(`data-${made}.qcow2`);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `data_file=${name}.data`, name, '8M']);
    copyFileSync(name, `${name}.q`);
    expect(platter(['amend', '-o', 'data_file=renamed.data', name]).status).toBe(0);
    run('qemu-img', ['amend', '-o', 'data_file=renamed.data', `${name}.q`]);
    expect(readFileSync(name).equals(readFileSync(`${name}.q`))).toBe(true);
  });

  it('-o help lists the options amend takes, under qemu-img\'s heading, with or without an image', () => {
    const listed = platter(['amend', '-f', 'qcow2', '-o', 'help']);
    expect(listed.status).toBe(0);
    expect(listed.stdout.split('\n')[0]).toBe("Amend options for 'qcow2':");
    const names = [...listed.stdout.matchAll(/^ {2}([a-z_]+)=/gm)].map((match) => match[1]);
    const qemuNames = [...run('qemu-img', ['amend', '-f', 'qcow2', '-o', 'help']).matchAll(/^ {2}([a-z_]+)=/gm)].map((match) => match[1]);
    expect(names.length).toBeGreaterThan(3);
    for (const name of names) expect(qemuNames).toContain(name);
    expect(platter(['amend', '-o', 'help']).stderr).toBe('platter: Expecting one image file name\n');
  });
});
