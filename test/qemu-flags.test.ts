/**
 * Flags that scripts written for qemu-img pass: quiet (-q), cache modes (-t
 * for the image written, -T for the images read), --target-is-zero, amend's
 * -p and --force. Each command line runs under both tools on copies of the
 * same images: the same exit status, the same stdout, and the same result.
 */

import { copyFileSync, readFileSync, statSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-qemu-flags-');
afterAll(() => tmp.cleanup());

/** Runs `args` with each tool, on fresh copies of the images, in its own directory; returns both outcomes and the files they left. */
function both(args: string[]) {
  const outcome = (tool: 'platter' | 'qemu-img') => {
    const dir = tmp.path(tool);
    run('mkdir', ['-p', dir]);
    for (const name of ['base.qcow2', 'top.qcow2', 'zeros.raw']) copyFileSync(tmp.path(name), `${dir}/${name}`);
    const result = tool === 'platter' ? platter(args, { cwd: dir }) : shStatus(dir, 'qemu-img', args);
    const file = (name: string) => readFileSync(`${dir}/${name}`);
    return { ...result, file };
  };
  return { mine: outcome('platter'), qemu: outcome('qemu-img') };
}

describe.skipIf(!hasTool('qemu-img'))('qemu-img flags', () => {
  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', tmp.path('base.qcow2'), '8M']);
    run('qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -P 3 6M 64k', tmp.path('base.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', tmp.path('top.qcow2')]);
    run('qemu-io', ['-c', 'write -P 2 512k 1M', '-c', 'write -z 6M 64k', tmp.path('top.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'raw', tmp.path('zeros.raw'), '8M']);
  });

  it.each([
    ['convert', '-q', '-p', '-O', 'raw', 'top.qcow2', 'out.raw'],
    ['convert', '-T', 'none', '-t', 'writeback', '-O', 'raw', 'top.qcow2', 'out.raw'],
    ['convert', '-n', '--target-is-zero', '-O', 'raw', 'top.qcow2', 'zeros.raw'],
    ['convert', '-n', '-O', 'raw', 'top.qcow2', 'zeros.raw'],
    ['rebase', '-q', '-p', '-T', 'writeback', '-t', 'unsafe', '-b', '', 'top.qcow2'],
    ['commit', '-t', 'writethrough', '-q', '-p', 'top.qcow2'],
    ['check', '-T', 'directsync', 'top.qcow2'],
    ['compare', '-T', 'none', 'top.qcow2', 'base.qcow2'],
    ['amend', '-p', '-t', 'none', '--force', '-o', 'compat=1.1', 'top.qcow2'],
    ['amend', '-q', '-p', '-o', 'compat=1.1', 'top.qcow2'],
    ['convert', '-O', 'raw', '-o', 'preallocation=full', 'top.qcow2', 'full.raw'],
    ['convert', '-O', 'raw', '-o', 'preallocation=falloc', 'top.qcow2', 'falloc.raw'],
    // A flag given twice takes its last value; -o adds up.
    ['convert', '-O', 'qcow2', '-f', 'raw', '-O', 'raw', '-f', 'qcow2', 'top.qcow2', 'twice.raw'],
    ['map', '--output=human', '--output=json', 'top.qcow2'],
    ['convert', '-C', '-O', 'raw', 'top.qcow2', 'offload.raw'],
    // The file options (hints qemu applies where the file system has them): taken and printed.
    ['convert', '-O', 'raw', '-o', 'nocow=off,extent_size_hint=2M', 'top.qcow2', 'hinted.raw'],
    ['create', '-f', 'raw', '-o', 'extent_size_hint=1M,nocow=off', 'hinted.raw', '1M'],
    // Booleans are echoed as written; an escaped comma at the end is no empty option.
    ['create', '-f', 'qcow2', '-o', 'extended_l2=yes,lazy_refcounts=true', 'echoed.qcow2', '1M'],
    // Object definitions (the secrets of encrypted images), passed along by scripts: checked, unused.
    ['info', '--object', 'secret,id=sec0,data=x', '--object', '{"qom-type":"throttle-group","id":"t1"}', 'top.qcow2'],
    ['convert', '--object', 'secret,id=sec0,data=x', '-O', 'raw', 'top.qcow2', 'secret.raw'],
    ['create', '-f', 'raw', '--object', 'secret,id=sec0,data=x', 'made.raw', '1M'],
    // `--` ends the options; the words after it are operands, a size or a file name that starts with '-' too.
    ['info', '--', 'top.qcow2'],
    ['resize', 'top.qcow2', '--', '+1M'],
    ['resize', '--shrink', 'top.qcow2', '--', '-1M'],
    ['resize', 'top.qcow2', '--', '0'],
    ['convert', '-O', 'raw', 'top.qcow2', '--', '-dash.raw'],
  ])('%s %s %s %s ...', (...args) => {
    const { mine, qemu } = both(args);
    expect(mine.status, mine.stderr).toBe(qemu.status);
    expect(mine.stdout).toBe(qemu.stdout);
    const written = args.includes('convert') ? args[args.length - 1]! : args.includes('commit') ? 'base.qcow2' : undefined;
    if (written?.endsWith('.raw')) expect(mine.file(written).equals(qemu.file(written))).toBe(true);
    // preallocation=full: every block of the output is stored, holes none.
    if (written === 'full.raw') expect(statSync(tmp.path('platter/full.raw')).blocks * 512).toBeGreaterThanOrEqual(8 << 20);
    if (args[0] === 'rebase' || args[0] === 'commit') {
      const compare = shStatus(tmp.dir, 'qemu-img', ['compare', 'platter/top.qcow2', 'qemu-img/top.qcow2']);
      expect(compare.status, compare.stdout).toBe(0);
    }
  });

  it.each([
    [['convert', '--target-is-zero', '-O', 'raw', 'top.qcow2', 'out.raw'], '--target-is-zero requires use of -n flag'],
    [['convert', '-t', 'fast', '-O', 'raw', 'top.qcow2', 'out.raw'], 'Invalid cache option: fast'],
    [['check', '-T', 'fast', 'top.qcow2'], 'Invalid source cache option: fast'],
    [['compare', '-T', 'fast', 'top.qcow2', 'base.qcow2'], 'Invalid source cache option: fast'],
    [['amend', '-t', 'fast', '-o', 'compat=1.1', 'top.qcow2'], 'Invalid cache option: fast'],
    [['convert', '-O', 'raw', '-o', 'preallocation=metadata', 'top.qcow2', 'out.raw'], 'Unsupported preallocation mode: metadata'],
    [['convert', '-O', 'raw', '-o', 'cluster_size=4k', 'top.qcow2', 'out.raw'], "Invalid parameter 'cluster_size'"],
    [['convert', '-B', 'base.qcow2', '-O', 'qcow2', 'top.qcow2', 'out.qcow2'], 'Use of backing file requires explicit backing format'],
    [['convert', '-o', 'backing_file=base.qcow2', '-O', 'qcow2', 'top.qcow2', 'out.qcow2'], 'Use of backing file requires explicit backing format'],
    [['convert', '-n', '-o', 'preallocation=full', '-O', 'raw', 'top.qcow2', 'zeros.raw'], '-o has no effect when skipping image creation'],
    [['convert', '-C', '-c', '-O', 'qcow2', 'top.qcow2', 'out.qcow2'], 'Cannot enable copy offloading when -c is used'],
    [['convert', '-c', '-o', 'preallocation=metadata', '-O', 'qcow2', 'top.qcow2', 'out.qcow2'], 'Compression and preallocation not supported at the same time'],
    // Each -o is checked as an option list first: not empty, no comma at either end.
    [['create', '-f', 'qcow2', '-o', 'cluster_size=4k,', 'out.qcow2', '1M'], 'Invalid option list: cluster_size=4k,'],
    [['amend', '-o', '', 'top.qcow2'], 'Invalid option list: '],
    [['convert', '-O', 'qcow2', '-o', 'compat=1.1', '-o', ',', 'top.qcow2', 'out.qcow2'], 'Invalid option list: ,'],
    [['convert', '-C', '-S', '4k', '-O', 'raw', 'top.qcow2', 'out.raw'], 'Cannot enable copy offloading when -S is used'],
    [['convert', '-F', 'qcow2', '-O', 'qcow2', 'top.qcow2', 'out.qcow2'], 'Backing format cannot be used without backing file'],
    [['create', '-f', 'qcow2', '-o', 'nocow=maybe', 'out.qcow2', '1M'], "out.qcow2: Parameter 'nocow' expects 'on' or 'off'"],
    [['info', '--object', 'secret,data=x', 'top.qcow2'], "Parameter 'id' is missing"],
    [['map', '--object', 'frobnicator,id=f', 'top.qcow2'], "Parameter 'qom-type' does not accept value 'frobnicator'"],
    [['check', '--object', 'secret,id=a,data=x', '--object', 'secret,id=a,data=y', 'top.qcow2'], "attempt to add duplicate property 'a' to object (type 'container')"],
    [['create', '-f', 'raw', '-o', 'extent_size_hint=5G', 'out.raw', '1M'], 'out.raw: Extent size hint is too large'],
  ])('%j is refused with qemu-img\'s message', (args, message) => {
    const { mine, qemu } = both(args);
    expect(mine.status).toBe(qemu.status);
    expect(qemu.stderr).toContain(message);
    expect(mine.stderr).toBe(`platter: ${message}\n`);
  });
});

describe.skipIf(!hasTool('qemu-img'))('create, bitmap and snapshot as qemu-img takes them', () => {
  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', tmp.path('base.qcow2'), '8M']);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', tmp.path('top.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'raw', tmp.path('zeros.raw'), '8M']);
  });

  it('create refuses an image named as its own backing file, and leaves the file as it was', () => {
    const { mine, qemu } = both(['create', '-f', 'qcow2', '-b', 'top.qcow2', '-F', 'qcow2', 'top.qcow2']);
    expect(qemu.stderr).toBe('qemu-img: top.qcow2: Error: Trying to create an image with the same filename as the backing file\n');
    expect([mine.status, mine.stderr]).toEqual([qemu.status, qemu.stderr.replace('qemu-img: ', 'platter: ')]);
    expect(mine.file('top.qcow2').equals(readFileSync(tmp.path('top.qcow2')))).toBe(true);
  });

  it('create refuses an image that is its own external data file (qemu-img fails on its lock)', () => {
    const { mine, qemu } = both(['create', '-f', 'qcow2', '-o', 'data_file=./top.qcow2', 'top.qcow2', '1M']);
    expect(qemu.status).toBe(1);
    expect([mine.status, mine.stderr]).toEqual([1, "platter: top.qcow2: the external data file './top.qcow2' is the image itself\n"]);
    expect(mine.file('top.qcow2').equals(readFileSync(tmp.path('top.qcow2')))).toBe(true);
  });

  it.each([
    ['metadata', 'Unsupported preallocation mode: metadata'],
    ['bogus', 'invalid parameter value: bogus'],
  ])('create -f raw -o preallocation=%s is refused after the Formatting line, in qemu-img\'s words', (mode, message) => {
    const { mine, qemu } = both(['create', '-f', 'raw', '-o', `preallocation=${mode}`, 'pre.raw', '1M']);
    expect(qemu.stderr).toBe(`qemu-img: pre.raw: ${message}\n`);
    expect([mine.status, mine.stdout, mine.stderr]).toEqual([qemu.status, qemu.stdout, qemu.stderr.replace('qemu-img: ', 'platter: ')]);
  });

  it('create -o data_file=...,preallocation=full writes every byte of the data file, as qemu-img does', () => {
    const { mine, qemu } = both(['create', '-q', '-f', 'qcow2', '-o', 'data_file=full.data,preallocation=full', 'full.qcow2', '2M']);
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    const stored = (tool: string) => statSync(tmp.path(`${tool}/full.data`)).blocks * 512;
    expect(stored('platter')).toBeGreaterThanOrEqual(2 << 20);
    expect(stored('platter')).toBe(stored('qemu-img'));
    expect(mine.file('full.qcow2').equals(qemu.file('full.qcow2'))).toBe(true);
  });

  it('bitmap --add -g 0 adds a bitmap of the default granularity', () => {
    const { mine, qemu } = both(['bitmap', '--add', '-g', '0', 'base.qcow2', 'b0']);
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    const granularity = (tool: string) => JSON.parse(run('qemu-img', ['info', '--output=json', tmp.path(`${tool}/base.qcow2`)]))['format-specific'].data.bitmaps[0].granularity;
    expect(granularity('platter')).toBe(granularity('qemu-img'));
  });

  it('snapshot -c takes an empty name, twice, and -d of it deletes the first, as qemu-img does', () => {
    const [ours, theirs] = [tmp.path('unnamed-platter.qcow2'), tmp.path('unnamed-qemu.qcow2')];
    copyFileSync(tmp.path('base.qcow2'), ours);
    copyFileSync(tmp.path('base.qcow2'), theirs);
    for (const args of [['-c', ''], ['-c', ''], ['-d', '']]) {
      expect(platter(['snapshot', ...args, ours]).status, args.join(' ')).toBe(0);
      expect(shStatus(tmp.dir, 'qemu-img', ['snapshot', ...args, theirs]).status, args.join(' ')).toBe(0);
    }
    const ids = (path: string) => JSON.parse(run('qemu-img', ['info', '--output=json', path])).snapshots.map((s: { id: string; name: string }) => [s.id, s.name]);
    expect(ids(ours)).toEqual([['2', '']]);
    expect(ids(ours)).toEqual(ids(theirs));
  });

  it('snapshot -c keeps the first 255 bytes of a longer name, and -q -l still lists', () => {
    const name = 'n'.repeat(300);
    const { mine, qemu } = both(['snapshot', '-c', name, 'base.qcow2']);
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    const names = (tool: string) => JSON.parse(run('qemu-img', ['info', '--output=json', tmp.path(`${tool}/base.qcow2`)])).snapshots.map((s: { name: string }) => s.name);
    expect(names('platter')).toEqual(names('qemu-img'));
    expect(names('platter')[0]).toHaveLength(255);
    const listed = (tool: 'platter' | 'qemu-img') => (tool === 'platter' ? platter(['snapshot', '-q', '-l', tmp.path('platter/base.qcow2')]) : shStatus(tmp.dir, 'qemu-img', ['snapshot', '-q', '-l', tmp.path('qemu-img/base.qcow2')]));
    const ours = listed('platter');
    expect(ours.stdout).toMatch(/^Snapshot list:\n/);
    // The dates differ by the second the two were made: compare all but them.
    const undated = (text: string) => text.replace(/\d{4}-\d\d-\d\d \d\d:\d\d:\d\d/g, 'DATE');
    expect(undated(ours.stdout)).toBe(undated(listed('qemu-img').stdout));
  });
});
