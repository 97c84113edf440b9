/**
 * platter bitmap against qemu-img bitmap 7.2: the same sequences of --add
 * (with -g), --remove, --clear, --enable and --disable, applied in the order
 * given, leave the same bitmaps (names, flags, granularity, as qemu-img info
 * lists them) with the same bits (through qemu-nbd), a clean check, and
 * bitmaps qemu goes on tracking writes into; refusals in qemu-img's words,
 * the image left as it was. An in-use bitmap (a writer stopped before
 * closing the image) can be removed; the last one removed takes the extension and autoclear bit along.
 */

import { spawnSync } from 'node:child_process';
import { copyFileSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { fuzzRun } from './helpers/fuzz-run.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';
import { dirtyMap as dirtyMapIn } from './helpers/bitmap-oracle.js';
import { findExtension, pokeFile } from './helpers/qcow2-cases.js';
import { leaveBitmapsInUse } from './helpers/qcow2-writer.js';

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io') || !hasTool('qemu-nbd'))('platter bitmap, against qemu-img bitmap', () => {
  const tmp = tempDir('platter-bitmap-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const dirtyMap = (image: string, bitmap: string) => dirtyMapIn(tmp.dir, image, bitmap);
  const qemuImg = (...args: string[]) => run('qemu-img', args, { cwd: tmp.dir });
  const qemuIo = (image: string, command: string) => run('qemu-io', ['-f', 'qcow2', '-c', command, at(image)]);
  const bitmapsOf = (image: string) => JSON.parse(qemuImg('info', '--output=json', image))['format-specific'].data.bitmaps;

  qemuImg('create', '-q', '-f', 'qcow2', '-o', 'cluster_size=4k', 'base.qcow2', '8M');
  qemuImg('bitmap', '--add', 'base.qcow2', 'old');
  qemuImg('bitmap', '--add', '-g', '64k', 'base.qcow2', 'coarse');
  qemuIo('base.qcow2', 'write -P 1 0 96k');
  // Another image of the same size whose bitmap is merged in with -b.
  qemuImg('create', '-q', '-f', 'qcow2', 'other.qcow2', '8M');
  qemuImg('bitmap', '--add', '-g', '16k', 'other.qcow2', 'theirs');
  qemuIo('other.qcow2', 'write -P 1 3M 40k');
  qemuIo('other.qcow2', 'write -P 1 5000k 1k');

  const steps: [string, string[]][] = [
    ['new', ['--add']],
    ['wide', ['--add', '-g', '1M']],
    ['frozen', ['--add', '--disable']],
    ['old', ['--clear']],
    ['coarse', ['--disable']],
    ['gone', ['--add', '--remove']],
    ['coarse', ['--enable', '--clear']],
    // Merges across granularities (4 KiB clusters: 1 MiB, 64 KiB, 16 KiB and 4 KiB bits), from this image and another.
    ['wide', ['--merge', 'old']],
    ['new', ['--merge', 'theirs', '-b', 'other.qcow2', '-F', 'qcow2']],
    ['frozen', ['--clear', '--merge', 'new', '--merge', 'wide']],
    ['coarse', ['--merge', 'theirs', '-b', 'other.qcow2']],
  ];

  it('a sequence of edits: the same bitmaps and bits as qemu-img makes, clean, and qemu tracks writes into them', async () => {
    copyFileSync(at('base.qcow2'), at('ours.qcow2'));
    copyFileSync(at('base.qcow2'), at('theirs.qcow2'));
    for (const [name, flags] of steps) {
      qemuImg('bitmap', ...flags, 'theirs.qcow2', name);
      const result = platter(['bitmap', ...flags, 'ours.qcow2', name], { cwd: tmp.dir });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
    }
    expect(bitmapsOf('ours.qcow2')).toEqual(bitmapsOf('theirs.qcow2'));
    expect(qemuImg('check', 'ours.qcow2')).toContain('No errors were found on the image.');
    for (const image of ['ours.qcow2', 'theirs.qcow2']) qemuIo(image, 'write -P 2 1M 300k');
    for (const name of ['new', 'wide', 'frozen', 'old', 'coarse']) expect(await dirtyMap('ours.qcow2', name)).toBe(await dirtyMap('theirs.qcow2', name));
  });

  qemuImg('create', '-q', '-f', 'qcow2', 'wide.qcow2', '16M');
  qemuImg('bitmap', '--add', 'wide.qcow2', 'wide');

  const sequences = fuzzRun(6);
  it(`any sequence of edits (${sequences.label}): each succeeds or fails as in qemu-img, and the bitmaps end the same`, async () => {
    const names = ['a', 'b', 'c'];
    const step = fc.oneof(
      fc.record({ name: fc.constantFrom(...names), flags: fc.constantFrom(['--add'], ['--add', '-g', '512'], ['--add', '-g', '1M'], ['--add', '--disable']) }),
      fc.record({ name: fc.constantFrom(...names), flags: fc.constantFrom(['--remove'], ['--clear'], ['--enable'], ['--disable']) }),
      fc.record({ name: fc.constantFrom(...names), flags: fc.constantFrom(...names.map((source) => ['--merge', source]), ['--merge', 'theirs', '-b', 'other.qcow2']) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(step, { minLength: 2, maxLength: 6 }), async (steps) => {
        copyFileSync(at('base.qcow2'), at('any-ours.qcow2'));
        copyFileSync(at('base.qcow2'), at('any-theirs.qcow2'));
        for (const { name, flags } of steps) {
          const theirs = spawnSync('qemu-img', ['bitmap', ...flags, 'any-theirs.qcow2', name], { cwd: tmp.dir, encoding: 'utf8' });
          const ours = platter(['bitmap', ...flags, 'any-ours.qcow2', name], { cwd: tmp.dir });
          expect(ours.status).toBe(theirs.status);
          if (theirs.status === 0) expect(ours.stderr).toBe('');
          else expect(ours.stderr.split('\n')[0]!.replace(/^platter: any-ours\.qcow2: /, '')).toBe(theirs.stderr.split('\n')[0]!.replace(/^qemu-img: /, ''));
        }
        expect(bitmapsOf('any-ours.qcow2')).toEqual(bitmapsOf('any-theirs.qcow2'));
        expect(qemuImg('check', 'any-ours.qcow2')).toContain('No errors were found on the image.');
        for (const bitmap of (bitmapsOf('any-ours.qcow2') ?? []) as { name: string }[]) {
          expect(await dirtyMap('any-ours.qcow2', bitmap.name)).toBe(await dirtyMap('any-theirs.qcow2', bitmap.name));
        }
      }),
      sequences.parameters,
    );
  }, sequences.timeoutMs);

  it.each([
    [['--add'], 'old', 'Operation add on bitmap old failed: Bitmap already exists: old'],
    [['--remove'], 'nope', "Operation remove on bitmap nope failed: Dirty bitmap 'nope' not found"],
    [['--remove', '--add'], 'nope', "Operation remove on bitmap nope failed: Dirty bitmap 'nope' not found"],
    [['--add', '-g', '1000'], 'odd', 'Operation add on bitmap odd failed: Granularity must be power of 2 and at least 512'],
    [['--add'], '', 'Operation add on bitmap  failed: Bitmap name cannot be empty'],
    [['--remove', '-g', '64k'], 'old', 'granularity only supported with --add'],
    [['--add', '-b', 'other.qcow2'], 'x', 'Merge bitmap source file only supported with --merge'],
    [['--merge', 'old', '-F', 'qcow2'], 'x', '-F only supported with -b'],
    [[], 'old', 'Need at least one of --add, --remove, --clear, --enable, --disable, or --merge'],
    [['--merge', 'nope'], 'old', "Operation merge on bitmap old failed: Dirty bitmap 'nope' not found"],
    [['--merge', 'old'], 'nope', "Operation merge on bitmap nope failed: Dirty bitmap 'nope' not found"],
    [['--merge', 'wide', '-b', 'wide.qcow2'], 'old', "Operation merge on bitmap old failed: Bitmaps are of different sizes (destination size is 8388608, source size is 16777216) and can't be merged"],
  ])('%j %s: refused in qemu-img words, the image as it was', (flags, name, message) => {
    copyFileSync(at('base.qcow2'), at('refused.qcow2'));
    const before = readFileSync(at('refused.qcow2'));
    const result = platter(['bitmap', ...flags, 'refused.qcow2', name], { cwd: tmp.dir });
    expect(result.stderr).toMatch(new RegExp(`^platter: (refused\\.qcow2: )?${message.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\n$`));
    expect(result.status).toBe(1);
    expect(readFileSync(at('refused.qcow2')).equals(before)).toBe(true);
  });

  it('several actions on one bitmap in one command (merge, clear, merge, remove): as qemu-img, clean, nothing freed twice', () => {
    for (const owner of ['ours', 'theirs']) copyFileSync(at('base.qcow2'), at(`many-${owner}.qcow2`));
    const flags = ['--merge', 'coarse', '--clear', '--merge', 'coarse', '--disable', '--enable'];
    qemuImg('bitmap', ...flags, 'many-theirs.qcow2', 'old');
    expect(platter(['bitmap', ...flags, 'many-ours.qcow2', 'old'], { cwd: tmp.dir }).status).toBe(0);
    expect(bitmapsOf('many-ours.qcow2')).toEqual(bitmapsOf('many-theirs.qcow2'));
    qemuImg('bitmap', '--merge', 'old', '--remove', 'many-theirs.qcow2', 'coarse');
    expect(platter(['bitmap', '--merge', 'old', '--remove', 'many-ours.qcow2', 'coarse'], { cwd: tmp.dir }).status).toBe(0);
    expect(bitmapsOf('many-ours.qcow2')).toEqual(bitmapsOf('many-theirs.qcow2'));
    const check = JSON.parse(qemuImg('check', '--output=json', 'many-ours.qcow2'));
    expect([check.corruptions ?? 0, check.leaks ?? 0]).toEqual([0, 0]);
  });

  it('a disk of 0 bytes has no room for a bitmap: --add refused (qemu-img loses it on close; a table of no entries makes qemu refuse the image)', () => {
    qemuImg('create', '-q', '-f', 'qcow2', 'empty.qcow2', '0');
    const before = readFileSync(at('empty.qcow2'));
    const result = platter(['bitmap', '--add', 'empty.qcow2', 'a'], { cwd: tmp.dir });
    expect(result.stderr).toBe('platter: empty.qcow2: Operation add on bitmap a failed: A disk of 0 bytes has no room for a bitmap\n');
    expect(result.status).toBe(1);
    expect(readFileSync(at('empty.qcow2')).equals(before)).toBe(true);
    expect(qemuImg('info', 'empty.qcow2')).toContain('virtual size: 0 B');
  });

  it('a version 2 image has no room for bitmaps: --add refused, the image as it was', () => {
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', 'v2.qcow2', '8M');
    const before = readFileSync(at('v2.qcow2'));
    const result = platter(['bitmap', '--add', 'v2.qcow2', 'a'], { cwd: tmp.dir });
    expect(result.stderr).toBe('platter: v2.qcow2: Operation add on bitmap a failed: Cannot store dirty bitmaps in qcow2 v2 files\n');
    expect(readFileSync(at('v2.qcow2')).equals(before)).toBe(true);
  });

  it('an in-use bitmap (a writer stopped before closing) cannot be cleared but can be removed; removing the last takes the extension along', async () => {
    copyFileSync(at('base.qcow2'), at('used.qcow2'));
    await leaveBitmapsInUse(at('used.qcow2'));
    const cleared = platter(['bitmap', '--clear', 'used.qcow2', 'old'], { cwd: tmp.dir });
    expect(cleared.stderr).toBe("platter: used.qcow2: Operation clear on bitmap old failed: Bitmap 'old' is inconsistent and cannot be used\nTry --remove to delete this bitmap from disk\n");
    for (const name of ['old', 'coarse']) expect(platter(['bitmap', '--remove', 'used.qcow2', name], { cwd: tmp.dir }).status).toBe(0);
    expect(bitmapsOf('used.qcow2')).toBeUndefined();
    expect(qemuImg('check', 'used.qcow2')).toContain('No errors were found on the image.');
    const header = readFileSync(at('used.qcow2'));
    expect(header.readBigUInt64BE(88) & 1n).toBe(0n);
  });

  it('an invalid bitmap directory entry: every edit refused as qemu-img refuses the image, the file as it was; info refuses it too', () => {
    const directory = (image: string) => Number(readFileSync(at(image)).readBigUInt64BE(findExtension(at(image), 0x23852875) + 8 + 16));
    // The last damage is in a table, which info does not read (qemu-img info loads every table).
    const damages: [string, (image: string) => void, boolean?][] = [
      ['granularity bits 255', (image) => pokeFile(at(image), directory(image) + 17, [0xff])],
      ['a misaligned table offset', (image) => pokeFile(at(image), directory(image), [0, 0, 0, 0, 0, 0, 2, 0])],
      ['an unknown flag', (image) => pokeFile(at(image), directory(image) + 12, [0, 0, 0, 6])],
      ['a table one entry too long', (image) => pokeFile(at(image), directory(image) + 8, [0, 0, 0, 2])],
      // Not the edited bitmap's: qemu loads every consistent bitmap's table when it opens the image.
      ['a reserved bit in the table of the other bitmap', (image) => pokeFile(at(image), Number(readFileSync(at(image)).readBigUInt64BE(directory(image))), [0x80]), false],
    ];
    for (const [label, damage, infoRefuses = true] of damages) {
      copyFileSync(at('base.qcow2'), at('bad.qcow2'));
      damage('bad.qcow2');
      const before = readFileSync(at('bad.qcow2'));
      for (const args of [['--remove'], ['--clear'], ['--disable'], ['--merge', 'old'], ['--add', '-g', '8k']]) {
        const name = args[0] === '--add' ? 'extra' : 'coarse';
        const theirs = spawnSync('qemu-img', ['bitmap', ...args, 'bad.qcow2', name], { cwd: tmp.dir });
        const ours = platter(['bitmap', ...args, 'bad.qcow2', name], { cwd: tmp.dir });
        expect([label, args, theirs.status !== 0, ours.status]).toEqual([label, args, true, 1]);
        expect(ours.stderr).not.toMatch(/\n\s+at /);
        expect(readFileSync(at('bad.qcow2')).equals(before)).toBe(true);
      }
      expect([label, platter(['info', 'bad.qcow2'], { cwd: tmp.dir }).status]).toEqual([label, infoRefuses ? 1 : 0]);
    }
    copyFileSync(at('base.qcow2'), at('bad.qcow2'));
    pokeFile(at('bad.qcow2'), directory('bad.qcow2') + 17, [0xff]);
    const info = platter(['info', '--output=json', 'bad.qcow2'], { cwd: tmp.dir });
    expect(info.stderr).toBe("platter: bad.qcow2: Bitmap 'old' doesn't satisfy the constraints (at byte " + directory('bad.qcow2') + ')\n');
  });
});
