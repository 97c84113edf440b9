/**
 * convert -n with a qcow2 output: the source is written into an existing
 * qcow2 image, which keeps its size and options. Each case builds the same
 * target twice, lets platter fill one and qemu-img the other, and asks
 * qemu-img whether the two read alike (past the source's size too, where both
 * leave the target as it was) and whether platter's is clean.
 */

import { readFileSync, writeFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { shStatus } from './helpers/qcow2-oracle.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir('platter-convert-into-');
afterAll(() => tmp.cleanup());

/** How to make a target: qemu-img create arguments after the file name, and qemu-io commands. */
interface TargetRecipe {
  create: string[];
  io?: string[];
  /** qemu-img snapshot -c after the writes (its clusters are shared with the active image). */
  snapshot?: boolean;
}

/** Makes `name` from `recipe` in the test directory. */
function makeTarget(name: string, recipe: TargetRecipe): void {
  run('qemu-img', ['create', '-q', '-f', 'qcow2', ...recipe.create.slice(0, -1), tmp.path(name), recipe.create[recipe.create.length - 1]!]);
  if (recipe.io) run('qemu-io', recipe.io.flatMap((command) => ['-c', command]).concat(tmp.path(name)));
  if (recipe.snapshot) run('qemu-img', ['snapshot', '-c', 'before', tmp.path(name)]);
}

/** Fills a platter copy and a qemu-img copy of the target; returns both outcomes. */
function both(recipe: TargetRecipe, flags: string[], source = 'top.qcow2') {
  const outcome = (tool: 'platter' | 'qemu-img') => {
    const name = `${tool}-${Math.random().toString(36).slice(2)}.qcow2`;
    makeTarget(name, recipe);
    const args = ['convert', '-n', ...flags, '-O', 'qcow2', source, name];
    const result = tool === 'platter' ? platter(args, { cwd: tmp.dir }) : shStatus(tmp.dir, 'qemu-img', args);
    return { ...result, name };
  };
  return { mine: outcome('platter'), qemu: outcome('qemu-img') };
}

const compare = (a: string, b: string) => shStatus(tmp.dir, 'qemu-img', ['compare', a, b]);
const check = (image: string) => shStatus(tmp.dir, 'qemu-img', ['check', image]);

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('convert -n -O qcow2', () => {
  beforeAll(() => {
    run('qemu-img', ['create', '-q', '-f', 'qcow2', tmp.path('base.qcow2'), '8M']);
    run('qemu-io', ['-c', 'write -P 1 0 1M', '-c', 'write -P 3 6M 64k', tmp.path('base.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', tmp.path('top.qcow2')]);
    run('qemu-io', ['-c', 'write -P 2 512k 1M', '-c', 'write -z 6M 64k', '-c', 'write -P 4 7M 4k', tmp.path('top.qcow2')]);
    run('qemu-img', ['convert', '-c', '-O', 'qcow2', tmp.path('top.qcow2'), tmp.path('packed.qcow2')]);
    run('qemu-img', ['create', '-q', '-f', 'raw', tmp.path('other.raw'), '8M']);
  });

  it.each<[string, TargetRecipe, string[]?, string?]>([
    ['an empty image of the same size', { create: ['8M'] }],
    ['a larger image full of data (its tail stays)', { create: ['12M'], io: ['write -P 5 0 12M'] }],
    ['4 KiB clusters with data here and there', { create: ['-o', 'cluster_size=4k', '8M'], io: ['write -P 6 0 64k', 'write -P 7 5M 3M'] }],
    ['a version 2 image with data', { create: ['-o', 'compat=0.10', '8M'], io: ['write -P 5 0 8M'] }],
    ['extended L2 entries', { create: ['-o', 'extended_l2=on', '8M'], io: ['write -P 5 100k 3M'] }],
    ['an overlay whose backing file holds data', { create: ['-b', 'base.qcow2', '-F', 'qcow2', '8M'], io: ['write -P 9 2M 64k'] }],
    ['an image whose clusters a snapshot shares', { create: ['8M'], io: ['write -P 5 0 4M'], snapshot: true }],
    ['-S 0', { create: ['8M'], io: ['write -P 5 0 8M'] }, ['-S', '0']],
    ['a compressed source', { create: ['8M'], io: ['write -P 5 0 8M'] }, [], 'packed.qcow2'],
  ])('into %s', (_what, recipe, flags = [], source = 'top.qcow2') => {
    const { mine, qemu } = both(recipe, flags, source);
    expect(mine.stderr).toBe('');
    expect(qemu.status).toBe(0);
    expect(mine.status).toBe(0);
    expect(compare(mine.name, qemu.name).status, compare(mine.name, qemu.name).stdout).toBe(0);
    expect(check(mine.name).status, check(mine.name).stdout).toBe(0);
    if (recipe.snapshot) {
      // The snapshot still reads as it did: its clusters were copied on write, not overwritten.
      run('qemu-img', ['convert', '-l', 'before', '-O', 'raw', mine.name, 'snapshot.raw'], { cwd: tmp.dir });
      const bytes = readFileSync(tmp.path('snapshot.raw'));
      expect(bytes.subarray(0, 4 << 20).every((byte) => byte === 5)).toBe(true);
      expect(bytes.subarray(4 << 20).every((byte) => byte === 0)).toBe(true);
    }
  });

  it('--target-is-zero: the source is written over what the target holds, and nothing else', () => {
    const { mine, qemu } = both({ create: ['8M'], io: ['write -P 5 3M 2M'] }, ['--target-is-zero']);
    expect([mine.status, qemu.status]).toEqual([0, 0]);
    expect(compare(mine.name, qemu.name).status).toBe(0);
  });

  /** The allocation qemu-img maps (where new clusters land depends on the order writes finish in, in both tools). */
  const map = (image: string) => shStatus(tmp.dir, 'qemu-img', ['map', '--output=json', image]).stdout.replace(/, "offset": \d+/g, '');

  it.each<[string, TargetRecipe, string]>([
    ['an overlay', 'top.qcow2'],
    ['an image without a backing file', 'packed.qcow2'],
  ].flatMap(([what, source]) => [
    [`${what} into an image full of data`, { create: ['8M'], io: ['write -P 5 0 8M'] }, source],
    [`${what} into an image with 4 KiB clusters`, { create: ['-o', 'cluster_size=4k', '8M'], io: ['write -P 6 0 64k', 'write -P 7 5M 3M'] }, source],
    [`${what} into a version 2 image`, { create: ['-o', 'compat=0.10', '8M'], io: ['write -P 5 0 8M'] }, source],
  ] as Array<[string, TargetRecipe, string]>))('-B: only the top layer of %s, as qemu-img writes it', (_what, recipe, source) => {
    // The -B file is not opened with -n (qemu-img does not look for it either); the target's backing file is kept.
    const { mine, qemu } = both(recipe, ['-B', 'no-such-base.qcow2'], source);
    expect([mine.status, mine.stderr]).toEqual([0, '']);
    expect(qemu.status).toBe(0);
    expect(compare(mine.name, qemu.name).status, compare(mine.name, qemu.name).stdout).toBe(0);
    expect(map(mine.name)).toBe(map(qemu.name));
    expect(check(mine.name).status, check(mine.name).stdout).toBe(0);
  });

  it('-B into a raw target: the top layer is written, the rest of the file is left as it was', () => {
    const fill = (name: string) => {
      run('qemu-img', ['create', '-q', '-f', 'raw', tmp.path(name), '8M']);
      run('qemu-io', ['-f', 'raw', '-c', 'write -P 5 0 8M', tmp.path(name)]);
    };
    fill('mine.raw');
    fill('qemu.raw');
    expect(platter(['convert', '-n', '-B', 'base.qcow2', '-O', 'raw', 'top.qcow2', 'mine.raw'], { cwd: tmp.dir }).status).toBe(0);
    expect(shStatus(tmp.dir, 'qemu-img', ['convert', '-n', '-B', 'base.qcow2', '-O', 'raw', 'top.qcow2', 'qemu.raw']).status).toBe(0);
    const bytes = readFileSync(tmp.path('mine.raw'));
    expect(bytes.equals(readFileSync(tmp.path('qemu.raw')))).toBe(true);
    expect(bytes[0]).toBe(5); // the base's data is not copied
  });

  it('-B with --target-is-zero is refused with qemu-img\'s message (qemu-img then exits 0), and --delta-from with -n', () => {
    const { mine, qemu } = both({ create: ['8M'], io: ['write -P 5 0 8M'] }, ['-B', 'base.qcow2', '--target-is-zero']);
    expect(qemu.stderr).toContain('Cannot use --target-is-zero when the destination image has a backing file');
    expect(mine.status).toBe(1);
    expect(mine.stderr).toBe('platter: Cannot use --target-is-zero when the destination image has a backing file\n');
    expect(compare(mine.name, qemu.name).status).toBe(0);
    const delta = platter(['convert', '-n', '--delta-from', 'base.qcow2', '-O', 'qcow2', 'top.qcow2', mine.name], { cwd: tmp.dir });
    expect([delta.status, delta.stderr]).toEqual([1, 'platter: -n cannot be used with --delta-from\n']);
  });

  it.each([1000001, 999999, 999487])('-n into a raw file of %i bytes: sizes compared in whole sectors, as qemu-img compares them', (size) => {
    writeFileSync(tmp.path('odd-source.raw'), Buffer.alloc(1000001, 7));
    const outcome = (tool: 'platter' | 'qemu-img') => {
      const name = `odd-${size}-${tool}.raw`;
      writeFileSync(tmp.path(name), Buffer.alloc(size, 1));
      const args = ['convert', '-n', '-f', 'raw', '-O', 'raw', 'odd-source.raw', name];
      const result = tool === 'platter' ? platter(args, { cwd: tmp.dir }) : shStatus(tmp.dir, 'qemu-img', args);
      return { status: result.status, bytes: readFileSync(tmp.path(name)) };
    };
    const [mine, qemu] = [outcome('platter'), outcome('qemu-img')];
    expect(mine.status).toBe(qemu.status);
    expect(mine.bytes.equals(qemu.bytes)).toBe(true); // grown to the source's last whole sector, or left alone
  });

  it.each<[string, TargetRecipe, string[], string]>([
    ['a smaller image', { create: ['4M'] }, [], 'output file is smaller than input file'],
    ['-o', { create: ['8M'] }, ['-o', 'cluster_size=4k'], '-o has no effect when skipping image creation'],
  ])('into %s is refused with qemu-img\'s message', (_what, recipe, flags, message) => {
    const { mine, qemu } = both(recipe, flags);
    expect(qemu.status).toBe(1);
    expect(qemu.stderr).toContain(message);
    expect(mine.status).toBe(1);
    expect(mine.stderr).toContain(message);
    expect(mine.stderr.split('\n').length).toBe(2);
  });

  it('refuses a target that is not a qcow2 image, and -c, and leaves the target as it was', () => {
    const raw = platter(['convert', '-n', '-O', 'qcow2', 'top.qcow2', 'other.raw'], { cwd: tmp.dir });
    expect(raw.status).toBe(1);
    expect(raw.stderr).toMatch(/^platter: other\.raw: .*qcow2/);
    makeTarget('kept.qcow2', { create: ['8M'], io: ['write -P 5 0 8M'] });
    const compressed = platter(['convert', '-n', '-c', '-O', 'qcow2', 'top.qcow2', 'kept.qcow2'], { cwd: tmp.dir });
    expect(compressed.status).toBe(1);
    expect(compressed.stderr).toMatch(/^platter: -c is not supported with -n/);
    expect(shStatus(tmp.dir, 'qemu-io', ['-c', 'read -P 5 0 8M', 'kept.qcow2']).stdout).not.toContain('failed');
  });
});
