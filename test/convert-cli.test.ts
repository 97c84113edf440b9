import { randomBytes } from 'node:crypto';
import { closeSync, openSync, statSync, symlinkSync, truncateSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { blocksOf, bytesOf, haveTool, platter, qemuImg, run, tempDir } from './helpers/convert-tools.js';

const hasQemu = haveTool('qemu-img');
const tmp = tempDir();
const at = (name: string) => join(tmp.dir, name);

/** Writes `pieces` (offset, bytes) into a new file of `size` bytes (the rest stays a hole). */
function makeFile(name: string, size: number, pieces: Array<[number, Uint8Array]>): string {
  const path = at(name);
  const fd = openSync(path, 'w');
  try {
    for (const [offset, bytes] of pieces) writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
  truncateSync(path, size);
  return path;
}

const MiB = 1024 * 1024;

beforeAll(() => {
  // Random data, explicit zeros (allocated but zero), unaligned small writes, and holes.
  makeFile('mixed.raw', 9 * MiB + 3 * 4096, [
    [0, randomBytes(MiB)],
    [MiB, new Uint8Array(2 * MiB)],
    [3 * MiB + 1000, randomBytes(65536)],
    [5 * MiB + 4095, Uint8Array.of(1, 2)],
    [6 * MiB, new Uint8Array(4096).fill(0).map((_, i) => (i === 700 ? 9 : 0))],
    [8 * MiB, randomBytes(MiB)],
  ]);
  makeFile('odd.raw', 100_007, [[0, randomBytes(100_007)]]);
  makeFile('full.raw', 3 * MiB, [[0, randomBytes(3 * MiB)]]);
  const base = randomBytes(2 * MiB);
  makeFile('a.raw', 2 * MiB, [[0, base]]);
  makeFile('a-copy.raw', 2 * MiB, [[0, base]]);
  const changed = Buffer.from(base);
  changed[700_001] = (changed[700_001] ?? 0) ^ 0xff;
  makeFile('a-changed.raw', 2 * MiB, [[0, changed]]);
  makeFile('a-longer-zero.raw', 3 * MiB, [[0, base]]);
  makeFile('a-longer-data.raw', 3 * MiB, [
    [0, base],
    [2 * MiB + 123_456, Uint8Array.of(7)],
  ]);
});

afterAll(() => tmp.cleanup());


describe.skipIf(!hasQemu)('convert -O raw vs qemu-img (raw sources)', () => {
  // Block counts are compared where the source's own holes do not matter: qemu sees
  // a raw file's holes (SEEK_HOLE) and we do not, so with -S above the file
  // system block it may write less around data that borders a hole.
  for (const [source, flags, checkBlocks] of [
    ['mixed.raw', [], true],
    ['mixed.raw', ['-S', '0'], true],
    ['mixed.raw', ['-S', '64k'], false],
    ['odd.raw', [], true],
    ['full.raw', ['-m', '1'], true],
    ['mixed.raw', ['-t', 'writeback'], true],
    ['odd.raw', ['-t', 'writethrough', '-m', '3'], true],
  ] as const) {
    it(`${source} ${flags.join(' ')}: same bytes${checkBlocks ? ', no more blocks' : ''}`, () => {
      const name = `${source}-${flags.join('')}`;
      qemuImg(['convert', '-f', 'raw', '-O', 'raw', ...flags, at(source), at(`${name}.qemu`)]);
      const ours = platter(['convert', '-f', 'raw', '-O', 'raw', ...flags, at(source), at(`${name}.ours`)]);
      expect(ours.stderr).toBe('');
      expect(ours.status).toBe(0);
      expect(bytesOf(at(`${name}.ours`)).equals(bytesOf(at(`${name}.qemu`)))).toBe(true);
      if (checkBlocks) expect(blocksOf(at(`${name}.ours`))).toBeLessThanOrEqual(blocksOf(at(`${name}.qemu`)));
    });
  }

  it('-o size= is checked and ignored, as qemu-img ignores it: the output is as large as the source', () => {
    for (const [format, size] of [
      ['qcow2', '64k'],
      ['qcow2', '1G'],
      ['raw', '64k'],
      ['raw', '1G'],
    ] as const) {
      const name = `sized-${format}-${size}`;
      qemuImg(['convert', '-f', 'raw', '-O', format, '-o', `size=${size}`, at('mixed.raw'), at(`${name}.qemu`)]);
      const ours = platter(['convert', '-f', 'raw', '-O', format, '-o', `size=${size}`, at('mixed.raw'), at(`${name}.ours`)]);
      expect({ format, size, stderr: ours.stderr, status: ours.status }).toEqual({ format, size, stderr: '', status: 0 });
      const guestSize = (path: string) => (JSON.parse(qemuImg(['info', '--output=json', path])) as { 'virtual-size': number })['virtual-size'];
      expect(guestSize(at(`${name}.ours`))).toBe(guestSize(at(`${name}.qemu`)));
      expect(run('qemu-img', ['compare', '-q', '-F', 'raw', at(`${name}.ours`), at('mixed.raw')]).status).toBe(0);
    }
    const bad = platter(['convert', '-O', 'qcow2', '-o', 'size=abc', at('mixed.raw'), at('sized-bad.qcow2')]);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^platter: invalid image size 'abc'/);
  });

  it('-p prints qemu-style progress on stdout; --progress=json prints JSON lines on stderr', () => {
    const human = platter(['convert', '-p', '-O', 'raw', at('mixed.raw'), at('progress.out')]);
    expect(human.status).toBe(0);
    expect(human.stdout).toMatch(/^ {4}\(0\.00\/100%\)\r/);
    expect(human.stdout.endsWith('    (100.00/100%)\r\n')).toBe(true);
    const json = platter(['convert', '--progress=json', '-O', 'raw', at('mixed.raw'), at('progress.out')]);
    expect(json.status).toBe(0);
    const lines = json.stderr.trim().split('\n').map((line) => JSON.parse(line) as { done: number; total: number });
    expect(lines.length).toBeGreaterThan(1);
    expect(lines.at(-1)).toEqual({ done: statSync(at('mixed.raw')).size, total: statSync(at('mixed.raw')).size });
    // Each step once: done grows strictly, the last line is not repeated.
    for (let i = 1; i < lines.length; i++) expect(lines[i]!.done).toBeGreaterThan(lines[i - 1]!.done);
  });
});

describe('convert errors', () => {
  it('refuses to convert onto the source, by path or through a link', () => {
    const before = bytesOf(at('full.raw'));
    symlinkSync(at('full.raw'), at('link.raw'));
    for (const target of [at('full.raw'), at('link.raw')]) {
      const result = platter(['convert', '-O', 'raw', at('full.raw'), target]);
      expect(result.status).toBe(1);
      expect(result.stderr).toMatch(/^platter: .*refusing to convert onto the source image/);
    }
    expect(bytesOf(at('full.raw')).equals(before)).toBe(true);
  });

  it('rejects a bad -S', () => {
    for (const bad of ['1000', 'abc', '32M']) {
      const result = platter(['convert', '-S', bad, '-O', 'raw', at('full.raw'), at('bad-s.raw')]);
      expect(result.status).toBe(1);
      expect(result.stderr).toContain('Invalid buffer size for sparse output specified');
    }
  });

  it('rejects an unknown or unsupported -O and a bad -m', () => {
    const unknown = platter(['convert', '-O', 'vhdz', at('full.raw'), at('o.img')]);
    expect(unknown.status).toBe(1);
    expect(unknown.stderr).toBe("platter: Unknown file format 'vhdz'\n");
    const compressedRaw = platter(['convert', '-c', '-O', 'raw', at('full.raw'), at('o.img')]);
    expect(compressedRaw.status).toBe(1);
    expect(compressedRaw.stderr).toBe('platter: Compression not supported for this file format\n');
    const parallel = platter(['convert', '-m', '0', '-O', 'raw', at('full.raw'), at('o.img')]);
    expect(parallel.status).toBe(1);
    expect(parallel.stderr).toContain('Invalid number of coroutines');
  });

  it('rejects a cache mode qemu does not know, with its wording', () => {
    const result = platter(['convert', '-t', 'bogus', '-O', 'raw', at('full.raw'), at('o.img')]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe('platter: Invalid cache option: bogus\n');
  });

  it('reports a missing source without a stack trace', () => {
    const result = platter(['convert', '-O', 'raw', at('missing.raw'), at('o.img')]);
    expect(result.status).toBe(1);
    expect(result.stderr).toBe(`platter: ${at('missing.raw')}: Could not open: No such file or directory\n`);
  });
});

describe.skipIf(!hasQemu)('map vs qemu-img (fully allocated raw)', () => {
  for (const flags of [[], ['--start-offset', '1000', '--max-length', '70000'], ['--start-offset', '5M'], ['-s', '1000', '-l', '70000'], ['-l', '1M']]) {
    it(`map --output=json ${flags.join(' ')}`, () => {
      const expected = JSON.parse(qemuImg(['map', '-f', 'raw', '--output=json', ...flags, at('full.raw')]));
      const ours = platter(['map', '-f', 'raw', '--output=json', ...flags, at('full.raw')]);
      expect(ours.status).toBe(0);
      expect(JSON.parse(ours.stdout)).toEqual(expected);
    });
  }

  it('human map prints the same table', () => {
    const expected = qemuImg(['map', '-f', 'raw', 'full.raw'], tmp.dir);
    const ours = platter(['map', '-f', 'raw', 'full.raw'], tmp.dir);
    expect(ours.stdout).toBe(expected);
  });
});

describe.skipIf(!hasQemu)('compare vs qemu-img', () => {
  for (const [first, second, flags] of [
    ['a.raw', 'a-copy.raw', []],
    ['a.raw', 'a-changed.raw', []],
    ['a.raw', 'a-longer-zero.raw', []],
    ['a-longer-zero.raw', 'a.raw', []],
    ['a.raw', 'a-longer-data.raw', []],
    ['a.raw', 'a-longer-zero.raw', ['-s']],
    ['a.raw', 'missing.raw', []],
  ] as const) {
    it(`${flags.join(' ')} ${first} ${second}`, () => {
      const expected = run('qemu-img', ['compare', '-f', 'raw', ...flags, first, second], tmp.dir);
      const ours = platter(['compare', '-f', 'raw', ...flags, first, second], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(ours.stdout).toBe(expected.stdout);
    });
  }
});

describe.skipIf(!hasQemu)('compare -p vs qemu-img', () => {
  // Images of one compare chunk (2 MiB), so the progress steps are 0% and 100% in both tools.
  for (const [first, second] of [
    ['a.raw', 'a-copy.raw'],
    ['a.raw', 'a-changed.raw'],
  ] as const) {
    it(`-p ${first} ${second}`, () => {
      const expected = run('qemu-img', ['compare', '-p', '-f', 'raw', '-F', 'raw', first, second], tmp.dir);
      const ours = platter(['compare', '-p', '-f', 'raw', '-F', 'raw', first, second], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(ours.stdout).toBe(expected.stdout);
    });
  }
});

describe.skipIf(!hasQemu)('dd vs qemu-img dd', () => {
  const cases = [
    ['bs=4k', 'count=10', 'skip=3'],
    ['bs=1k', 'count=1K'],
    ['skip=5000'],
    ['bs=3000', 'count=7', 'skip=2'],
    ['bs=1M', 'skip=20'],
    ['count=0'],
    ['bs=64k'],
  ];
  for (const operands of cases) {
    it(operands.join(' '), () => {
      const name = operands.join('_');
      const expected = run('qemu-img', ['dd', '-f', 'raw', '-O', 'raw', ...operands, 'if=mixed.raw', `of=${name}.qemu`], tmp.dir);
      const ours = platter(['dd', '-f', 'raw', '-O', 'raw', ...operands, 'if=mixed.raw', `of=${name}.ours`], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(bytesOf(at(`${name}.ours`)).equals(bytesOf(at(`${name}.qemu`)))).toBe(true);
    });
  }

  it('rejects what qemu-img dd rejects', () => {
    for (const operands of [['bs=0'], ['bs=abc'], ['bs=3G'], ['foo=1'], ['count=abc']]) {
      const expected = run('qemu-img', ['dd', ...operands, 'if=mixed.raw', 'of=rejected.img'], tmp.dir);
      const ours = platter(['dd', ...operands, 'if=mixed.raw', 'of=rejected.img'], tmp.dir);
      expect(ours.status).toBe(expected.status);
      expect(ours.stderr.replace(/^platter: /, '')).toBe(expected.stderr.replace(/^qemu-img: /, '').replace(/\nqemu-img: /, ' '));
    }
    expect(platter(['dd', 'if=mixed.raw'], tmp.dir).stderr).toBe('platter: Must specify both input and output files\n');
  });
});
