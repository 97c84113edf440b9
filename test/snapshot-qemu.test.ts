/**
 * `platter snapshot` against qemu-img, both ways: snapshots platter creates
 * look the same to qemu-img (list, info, convert -l); snapshots qemu-img
 * creates are applied and deleted by platter with qemu-img check clean and the
 * data right; duplicate names resolve as qemu-img resolves them; refusals.
 */

import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { firstDifference, qcow2TempDir, qcow2ToolAvailable, qemuRawBytes, sh, shStatus } from './helpers/qcow2-oracle.js';
import { platter } from './helpers/tools.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());
const dir = temp.dir;

/** Runs platter in the temp directory; fails the test with its stderr on a non-zero exit. */
function plat(args: string[]): string {
  const result = platter(args, { cwd: dir });
  expect(result.status, result.stderr).toBe(0);
  return result.stdout;
}

function qemuIo(image: string, command: string): void {
  sh(dir, 'qemu-io', ['-f', 'qcow2', '-c', command, image]);
}

/** A snapshot record without the fields that depend on the clock. */
function undated(list: Record<string, unknown>[]): Record<string, unknown>[] {
  return list.map(({ 'date-sec': _sec, 'date-nsec': _nsec, ...rest }) => rest);
}

/** The snapshot table text with the DATE column blanked out (columns are fixed-width). */
function undatedTable(text: string): string {
  return text
    .split('\n')
    .map((line) => (/^\d/.test(line) ? line.slice(0, 34) + line.slice(54) : line))
    .join('\n');
}

function qemuSnapshots(image: string): Record<string, unknown>[] {
  const info = JSON.parse(sh(dir, 'qemu-img', ['info', '--output=json', '-U', image])) as { snapshots?: Record<string, unknown>[] };
  return info.snapshots ?? [];
}

function platterSnapshots(image: string): Record<string, unknown>[] {
  return JSON.parse(plat(['snapshot', '--output=json', image])) as Record<string, unknown>[];
}

function expectQemuCheckClean(image: string): void {
  const check = shStatus(dir, 'qemu-img', ['check', '--output=json', image]);
  expect(check.status, check.stdout + check.stderr).toBe(0);
  const report = JSON.parse(check.stdout) as Record<string, number>;
  expect(report['leaks'] ?? 0).toBe(0);
  expect(report['corruptions'] ?? 0).toBe(0);
}

function rawOf(image: string): Uint8Array {
  return qemuRawBytes(dir, image);
}

describe.skipIf(!haveQemu)('platter snapshot and qemu-img', () => {
  it('snapshots platter creates appear in qemu-img snapshot -l and read back with qemu-img convert -l', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', 'p.qcow2', '1M']);
    qemuIo('p.qcow2', 'write -P 0x11 0 64k');
    plat(['snapshot', '-c', 'first', 'p.qcow2']);
    const first = rawOf('p.qcow2');
    qemuIo('p.qcow2', 'write -P 0x22 8k 16k');
    qemuIo('p.qcow2', 'write -P 0x33 512k 8k');
    plat(['snapshot', '-c', 'second', 'p.qcow2']);
    const second = rawOf('p.qcow2');
    qemuIo('p.qcow2', 'write -P 0x44 0 1M');
    expect(undated(platterSnapshots('p.qcow2'))).toEqual(undated(qemuSnapshots('p.qcow2')));
    expect(undatedTable(plat(['snapshot', '-l', 'p.qcow2']))).toBe(undatedTable(sh(dir, 'qemu-img', ['snapshot', '-l', 'p.qcow2'])));
    expect(firstDifference(qemuRawBytes(dir, 'p.qcow2', 'first'), first)).toBe(-1);
    expect(firstDifference(qemuRawBytes(dir, 'p.qcow2', 'second'), second)).toBe(-1);
    expectQemuCheckClean('p.qcow2');
    // qemu-img can revert to and delete what platter made.
    sh(dir, 'qemu-img', ['snapshot', '-a', 'first', 'p.qcow2']);
    expect(firstDifference(rawOf('p.qcow2'), first)).toBe(-1);
    sh(dir, 'qemu-img', ['snapshot', '-d', 'second', 'p.qcow2']);
    expectQemuCheckClean('p.qcow2');
  });

  it('snapshots qemu-img creates are applied and deleted by platter, check clean, data right', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512,extended_l2=off', 'q.qcow2', '256k']);
    qemuIo('q.qcow2', 'write -P 1 0 100k');
    sh(dir, 'qemu-img', ['snapshot', '-c', 'one', 'q.qcow2']);
    const one = rawOf('q.qcow2');
    qemuIo('q.qcow2', 'write -P 2 50k 100k');
    qemuIo('q.qcow2', 'write -z 0 4k');
    sh(dir, 'qemu-img', ['snapshot', '-c', 'two', 'q.qcow2']);
    const two = rawOf('q.qcow2');
    qemuIo('q.qcow2', 'write -P 3 10k 200k');
    const current = rawOf('q.qcow2');
    plat(['snapshot', '-a', 'one', 'q.qcow2']);
    expectQemuCheckClean('q.qcow2');
    expect(firstDifference(rawOf('q.qcow2'), one)).toBe(-1);
    expect(firstDifference(qemuRawBytes(dir, 'q.qcow2', 'two'), two)).toBe(-1);
    plat(['snapshot', '-d', 'one', 'q.qcow2']);
    expectQemuCheckClean('q.qcow2');
    expect(firstDifference(rawOf('q.qcow2'), one)).toBe(-1);
    plat(['snapshot', '-a', 'two', 'q.qcow2']);
    expect(firstDifference(rawOf('q.qcow2'), two)).toBe(-1);
    plat(['snapshot', '-d', 'two', 'q.qcow2']);
    expectQemuCheckClean('q.qcow2');
    expect(firstDifference(rawOf('q.qcow2'), two)).toBe(-1);
    expect(platterSnapshots('q.qcow2')).toEqual([]);
    expect(firstDifference(current, two)).not.toBe(-1);
  });

  it('applying a snapshot taken before qemu-img resize restores its disk size, as qemu-img does', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'rs-q.qcow2', '1M']);
    qemuIo('rs-q.qcow2', 'write -P 5 0 1M');
    sh(dir, 'qemu-img', ['snapshot', '-c', 'small', 'rs-q.qcow2']);
    const small = rawOf('rs-q.qcow2');
    sh(dir, 'qemu-img', ['resize', '-q', 'rs-q.qcow2', '3M']);
    qemuIo('rs-q.qcow2', 'write -P 6 2M 1M');
    copyFileSync(join(dir, 'rs-q.qcow2'), join(dir, 'rs-p.qcow2'));
    sh(dir, 'qemu-img', ['snapshot', '-a', 'small', 'rs-q.qcow2']);
    plat(['snapshot', '-a', 'small', 'rs-p.qcow2']);
    expect(rawOf('rs-p.qcow2').length).toBe(1 << 20);
    expect(firstDifference(rawOf('rs-p.qcow2'), small)).toBe(-1);
    expect(shStatus(dir, 'qemu-img', ['compare', 'rs-p.qcow2', 'rs-q.qcow2']).status).toBe(0);
    expectQemuCheckClean('rs-p.qcow2');
  });

  it('resizes a v3 image with snapshots as qemu-img does, grown and shrunk; each snapshot applies back to its size and data', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'grow-base.qcow2', '4M']);
    qemuIo('grow-base.qcow2', 'write -P 5 0 4M');
    sh(dir, 'qemu-img', ['snapshot', '-c', 'four', 'grow-base.qcow2']);
    const four = rawOf('grow-base.qcow2');
    for (const image of ['grow-q.qcow2', 'grow-p.qcow2']) copyFileSync(join(dir, 'grow-base.qcow2'), join(dir, image));
    const both = (args: (image: string) => string[]) => {
      sh(dir, 'qemu-img', args('grow-q.qcow2'));
      plat(args('grow-p.qcow2'));
    };
    const same = () => {
      expectQemuCheckClean('grow-p.qcow2');
      expect(shStatus(dir, 'qemu-img', ['compare', 'grow-p.qcow2', 'grow-q.qcow2']).status).toBe(0);
    };
    both((image) => ['resize', '-q', image, '8M']);
    same();
    for (const image of ['grow-q.qcow2', 'grow-p.qcow2']) qemuIo(image, 'write -P 7 6M 1M');
    both((image) => ['resize', '-q', '--shrink', image, '1M']);
    same();
    both((image) => ['snapshot', '-a', 'four', image]);
    same();
    expect(firstDifference(rawOf('grow-p.qcow2'), four)).toBe(-1);
  });

  it('puts new tables and data where qemu-img does, and ends the file where it does: freed clusters are reused first, by single clusters and runs alike', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4096', 'layout-base.qcow2', '1M']);
    qemuIo('layout-base.qcow2', 'write -P 1 0 64k');
    qemuIo('layout-base.qcow2', 'write -P 2 600k 12k');
    for (const image of ['layout-q.qcow2', 'layout-p.qcow2']) copyFileSync(join(dir, 'layout-base.qcow2'), join(dir, image));
    /** Where the header puts the L1 table, the refcount table and the snapshot table, and how large each is. */
    const tables = (image: string) => {
      const header = readFileSync(join(dir, image)).subarray(0, 72);
      return [header.readUInt32BE(36), header.readBigUInt64BE(40), header.readBigUInt64BE(48), header.readUInt32BE(56), header.readUInt32BE(60), header.readBigUInt64BE(64)];
    };
    const layoutOf = (image: string) => ({
      tables: tables(image),
      map: sh(dir, 'qemu-img', ['map', '--output=json', image]),
      end: shStatus(dir, 'qemu-img', ['check', image]).stdout.match(/Image end offset: \d+/)?.[0],
      // The file ends where qemu's does: a table written last is not padded to its cluster.
      fileSize: statSync(join(dir, image)).size,
    });
    const snapshot = (flag: string, name: string) => (image: string) => ['snapshot', flag, name, image];
    const resize = (size: string) => (image: string) => ['resize', '-q', image, size];
    const steps: Array<string | ((image: string) => string[])> = [
      snapshot('-c', 'a'),
      'write -P 3 0 16k',
      snapshot('-c', 'b'),
      // 1 MiB to 4 GiB: the L1 table grows from one entry to two clusters of them.
      resize('4G'),
      snapshot('-d', 'a'),
      'write -P 4 3G 40k',
      snapshot('-c', 'c'),
      snapshot('-d', 'b'),
      resize('8G'),
      // Not `snapshot -a`: qemu overwrites the active L1 table in place, platter writes a new one (crash safety).
    ];
    for (const step of steps) {
      if (typeof step === 'string') {
        for (const image of ['layout-q.qcow2', 'layout-p.qcow2']) qemuIo(image, step);
      } else {
        sh(dir, 'qemu-img', step('layout-q.qcow2'));
        plat(step('layout-p.qcow2'));
      }
      const what = typeof step === 'string' ? step : step('').join(' ');
      expect(layoutOf('layout-p.qcow2'), what).toEqual(layoutOf('layout-q.qcow2'));
    }
    expectQemuCheckClean('layout-p.qcow2');
  });

  it('refuses to resize a v2 image with snapshots, as qemu-img does', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '1M']);
    sh(dir, 'qemu-img', ['snapshot', '-c', 'one', 'v2.qcow2']);
    const result = platter(['resize', 'v2.qcow2', '2M'], { cwd: dir });
    expect(result.status).toBe(1);
    expect(result.stderr).toMatch(/Can't resize a v2 image which has snapshots/);
    expect(shStatus(dir, 'qemu-img', ['resize', 'v2.qcow2', '2M']).stderr).toMatch(/Can't resize a v2 image which has snapshots/);
  });

  it('duplicate names and ids resolve as in qemu-img (ids unique, -a by id then first name, -d first name)', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'dup-base.qcow2', '128k']);
    for (const image of ['dup-q.qcow2', 'dup-p.qcow2']) copyFileSync(join(dir, 'dup-base.qcow2'), join(dir, image));
    const contents: Uint8Array[] = [];
    const steps: [string, string][] = [
      ['-c', 'x'],
      ['-c', 'x'],
      ['-c', '1'],
      ['-d', 'x'],
      ['-c', 'y'],
      ['-c', 'x'],
    ];
    for (const [index, [flag, name]] of steps.entries()) {
      for (const image of ['dup-q.qcow2', 'dup-p.qcow2']) {
        qemuIo(image, `write -P ${index + 1} 0 4k`);
        if (image === 'dup-q.qcow2') sh(dir, 'qemu-img', ['snapshot', flag, name, image]);
        else plat(['snapshot', flag, name, image]);
      }
      // Only the states the applies below go back to are read out (each read is a qemu-img run).
      contents.push(index === 1 || index === 2 ? rawOf('dup-p.qcow2') : new Uint8Array(0));
    }
    // Ids: max + 1, never reused while a higher one exists; -d x removed the first 'x' (id 1).
    expect(undated(platterSnapshots('dup-p.qcow2'))).toEqual(undated(qemuSnapshots('dup-q.qcow2')));
    expect(platterSnapshots('dup-p.qcow2').map((s) => [s['id'], s['name']])).toEqual([
      ['2', 'x'],
      ['3', '1'],
      ['4', 'y'],
      ['5', 'x'],
    ]);
    // -a 3 is id 3 (named '1'); -a 1 is no id any more, so the snapshot named '1'; -a x is the first 'x' (id 2).
    for (const [key, stepIndex] of [['3', 2], ['1', 2], ['x', 1]] as const) {
      for (const image of ['dup-q.qcow2', 'dup-p.qcow2']) {
        if (image === 'dup-q.qcow2') sh(dir, 'qemu-img', ['snapshot', '-a', key, image]);
        else plat(['snapshot', '-a', key, image]);
      }
      expect(firstDifference(rawOf('dup-p.qcow2'), contents[stepIndex]!)).toBe(-1);
      expect(firstDifference(rawOf('dup-q.qcow2'), contents[stepIndex]!)).toBe(-1);
    }
    expectQemuCheckClean('dup-p.qcow2');
  });

  it('refuses images with an external data file and unknown snapshots, repairs dirty images first, like qemu-img', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'data_file=df.raw', 'df.qcow2', '1M']);
    const dataFile = platter(['snapshot', '-c', 's', 'df.qcow2'], { cwd: dir });
    expect(dataFile.status).toBe(1);
    expect(dataFile.stderr).toMatch(/^platter: df\.qcow2: .*external data file/);
    expect(shStatus(dir, 'qemu-img', ['snapshot', '-c', 's', 'df.qcow2']).status).toBe(1);

    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'dirty.qcow2', '1M']);
    const bytes = new Uint8Array(readFileSync(join(dir, 'dirty.qcow2')));
    bytes[79] = bytes[79]! | 1; // incompatible feature bit 0: dirty
    writeFileSync(join(dir, 'dirty.qcow2'), bytes);
    writeFileSync(join(dir, 'dirty-q.qcow2'), bytes);
    const dirty = platter(['snapshot', '-c', 's', 'dirty.qcow2'], { cwd: dir });
    expect(dirty.status, dirty.stderr).toBe(0);
    expect(dirty.stderr).toMatch(/not closed cleanly.*refcounts repaired/);
    sh(dir, 'qemu-img', ['snapshot', '-c', 's', 'dirty-q.qcow2']);
    expect(undated(platterSnapshots('dirty.qcow2'))).toEqual(undated(qemuSnapshots('dirty-q.qcow2')));
    expectQemuCheckClean('dirty.qcow2');

    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'none.qcow2', '1M']);
    // Unknown snapshots and mixed actions, in qemu-img's words.
    for (const args of [['-a', 'nope'], ['-d', 'nope'], ['-c', 'x', '-d', 'y']]) {
      const missing = platter(['snapshot', ...args, 'none.qcow2'], { cwd: dir });
      const qemu = shStatus(dir, 'qemu-img', ['snapshot', ...args, 'none.qcow2']);
      expect([missing.status, qemu.status]).toEqual([1, 1]);
      expect(missing.stderr).toBe(qemu.stderr.split('\n')[0]!.replace(/^qemu-img: /, 'platter: ') + '\n');
    }
    // An empty list prints nothing, like qemu-img.
    expect(plat(['snapshot', 'none.qcow2'])).toBe(sh(dir, 'qemu-img', ['snapshot', '-l', 'none.qcow2']));
  });

  it('keeps a snapshot name that is not UTF-8 byte for byte when it writes the table again', () => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'latin1.qcow2', '16M']);
    // Names are bytes to qemu: 'café' in Latin-1, which is not valid UTF-8.
    const name = Buffer.from([0x63, 0x61, 0x66, 0xe9]);
    // Node passes arguments as UTF-8, so the shell makes the byte.
    const made = spawnSync('sh', ['-c', `qemu-img snapshot -c "$(printf 'caf\\351')" latin1.qcow2`], { cwd: dir });
    expect(made.status, String(made.stderr)).toBe(0);
    const before = spawnSync('qemu-img', ['snapshot', '-l', 'latin1.qcow2'], { cwd: dir }).stdout;
    plat(['snapshot', '-c', 'second', 'latin1.qcow2']);
    plat(['snapshot', '-d', 'second', 'latin1.qcow2']);
    expectQemuCheckClean('latin1.qcow2');
    const after = spawnSync('qemu-img', ['snapshot', '-l', 'latin1.qcow2'], { cwd: dir }).stdout;
    expect(after.includes(name)).toBe(true);
    expect(undatedTable(after.toString('latin1'))).toBe(undatedTable(before.toString('latin1')));
  });
});

describe.skipIf(!haveQemu)('snapshot: one action, once', () => {
  it.each([['-d', 's1', '-d', 's2'], ['-c', 'a', '-c', 'b'], ['-a', 's1', '-a', 's2'], ['-c', 'x', '-a', 's1'], ['-l', '-l'], ['-ll'], ['-l', '-c', 'x']].map((flags) => [flags]))(
    '%j is refused as qemu-img refuses it, the image left as it was',
    (flags) => {
      for (const who of ['mine', 'qemu']) {
        sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', `twice-${who}.qcow2`, '1M']);
        sh(dir, 'qemu-img', ['snapshot', '-c', 's1', `twice-${who}.qcow2`]);
        sh(dir, 'qemu-img', ['snapshot', '-c', 's2', `twice-${who}.qcow2`]);
      }
      const before = readFileSync(join(dir, 'twice-mine.qcow2'));
      const mine = platter(['snapshot', ...flags, 'twice-mine.qcow2'], { cwd: dir });
      const qemu = shStatus(dir, 'qemu-img', ['snapshot', ...flags, 'twice-qemu.qcow2']);
      expect(qemu.stderr).toContain("Cannot mix '-l', '-a', '-c', '-d'");
      expect([mine.status, mine.stderr]).toEqual([1, "platter: Cannot mix '-l', '-a', '-c', '-d'\n"]);
      expect(readFileSync(join(dir, 'twice-mine.qcow2')).equals(before)).toBe(true);
    },
  );
});

describe.skipIf(!haveQemu)('snapshot takes no -f', () => {
  it.each([[['-f', 'qcow2']], [['--format=qcow2']]])('%j is refused as qemu-img refuses it, with nothing listed', (flags) => {
    sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', 'no-format.qcow2', '1M']);
    sh(dir, 'qemu-img', ['snapshot', '-c', 's1', 'no-format.qcow2']);
    const mine = platter(['snapshot', ...flags, '-l', 'no-format.qcow2'], { cwd: dir });
    const qemu = shStatus(dir, 'qemu-img', ['snapshot', ...flags, '-l', 'no-format.qcow2']);
    expect(qemu.stderr).toContain('unrecognized option');
    expect([qemu.status, qemu.stdout]).toEqual([1, '']);
    expect([mine.status, mine.stdout, mine.stderr]).toEqual([1, '', `platter: Unknown argument: ${flags[0] === '-f' ? 'f' : 'format'}\n`]);
  });
});
