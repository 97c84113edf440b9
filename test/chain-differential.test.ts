/**
 * Backing chains against qemu-img on the same files: info --backing-chain,
 * safe and unsafe rebase, and commit with and without -b and -d.
 */

import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildChain, chainBacking, chainCheck, chainSame, copyChain } from './helpers/chain-images.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const enabled = hasTool('qemu-img') && hasTool('qemu-io');
const CHAIN = ['base.qcow2', 'mid.qcow2', 'top.qcow2', 'other.qcow2'];

describe.skipIf(!enabled)('backing chains against qemu-img', () => {
  const temp = tempDir('platter-chain-');
  const source = join(temp.dir, 'source');
  let caseNumber = 0;
  /** Two copies of the chain: one for qemu-img, one for platter. */
  const twoCopies = () => {
    const name = `case${caseNumber++}`;
    const qemu = join(temp.dir, name, 'qemu');
    const ours = join(temp.dir, name, 'platter');
    copyChain(source, qemu, CHAIN);
    copyChain(source, ours, CHAIN);
    return { qemu, ours };
  };

  beforeAll(() => {
    copyChain(temp.dir, source, []);
    buildChain(source);
  });
  afterAll(() => temp.cleanup());

  it('info --backing-chain prints what qemu-img prints, as JSON and as text', () => {
    for (const output of ['json', 'human']) {
      const expected = run('qemu-img', ['info', '--backing-chain', `--output=${output}`, 'top.qcow2'], { cwd: source });
      const result = platter(['info', '--backing-chain', `--output=${output}`, 'top.qcow2'], { cwd: source });
      expect(result.stderr).toBe('');
      if (output === 'json') {
        const ours = JSON.parse(result.stdout) as Array<Record<string, unknown>>;
        const theirs = JSON.parse(expected) as Array<Record<string, unknown>>;
        expect(ours.length).toBe(3);
        for (const [index, layer] of theirs.entries()) {
          for (const key of Object.keys(layer)) expect({ key, value: ours[index]![key] }).toEqual({ key, value: layer[key] });
        }
      } else {
        expect(result.stdout).toBe(expected);
      }
    }
  });

  it('create -b -F makes the same overlay as qemu-img create, sized from its backing file', () => {
    const { qemu, ours } = twoCopies();
    run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'new.qcow2'], { cwd: qemu });
    const result = platter(['create', '-f', 'qcow2', '-b', 'mid.qcow2', '-F', 'qcow2', 'new.qcow2'], { cwd: ours });
    expect(result.status).toBe(0);
    expect(readFileSync(join(ours, 'new.qcow2'))).toEqual(readFileSync(join(qemu, 'new.qcow2')));
    expect(chainSame(temp.dir, join(ours, 'new.qcow2'), join(source, 'mid.qcow2'))).toBe(true);
  });

  it('map shows the layer each run comes from, as qemu-img map does', () => {
    for (const output of ['json', 'human']) {
      const args = ['map', `--output=${output}`, 'top.qcow2'];
      expect(platter(args, { cwd: source }).stdout).toBe(run('qemu-img', args, { cwd: source }));
    }
  });

  it('compare reads through both chains, with qemu-img compare\'s verdicts', () => {
    const pairs = [['top.qcow2', 'mid.qcow2'], ['mid.qcow2', 'base.qcow2'], ['top.qcow2', 'top.qcow2'], ['other.qcow2', 'top.qcow2']];
    // Strict mode: a run that a backing file answers has that file's block status.
    const flat = join(temp.dir, 'flat-top.qcow2');
    run('qemu-img', ['convert', '-O', 'qcow2', 'top.qcow2', flat], { cwd: source });
    const strictPairs = [['top.qcow2', flat], ['top.qcow2', 'top.qcow2'], ['mid.qcow2', 'base.qcow2']];
    for (const [flags, [a, b]] of [...pairs.map((pair) => [[], pair] as const), ...strictPairs.map((pair) => [['-s'], pair] as const)]) {
      const theirs = spawnSync('qemu-img', ['compare', ...flags, a!, b!], { cwd: source, encoding: 'utf8' });
      const ours = platter(['compare', ...flags, a!, b!], { cwd: source });
      expect({ flags, a, b, status: ours.status, stdout: ours.stdout }).toEqual({ flags, a, b, status: theirs.status, stdout: theirs.stdout });
    }
  });

  const rebaseCases: Array<{ title: string; args: string[] }> = [
    { title: 'onto another image', args: ['-b', 'other.qcow2', '-F', 'qcow2'] },
    { title: 'onto the base, skipping the middle layer', args: ['-b', 'base.qcow2', '-F', 'qcow2'] },
    { title: 'onto nothing (-b "")', args: ['-b', ''] },
  ];
  for (const { title, args } of rebaseCases) {
    it(`safe rebase ${title} keeps the guest data, as qemu-img rebase does`, () => {
      const { qemu, ours } = twoCopies();
      run('qemu-img', ['rebase', ...args, 'top.qcow2'], { cwd: qemu });
      const result = platter(['rebase', ...args, 'top.qcow2'], { cwd: ours });
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(chainSame(temp.dir, join(qemu, 'top.qcow2'), join(ours, 'top.qcow2'))).toBe(true);
      expect(chainSame(temp.dir, join(source, 'top.qcow2'), join(ours, 'top.qcow2'))).toBe(true);
      const ourCheck = chainCheck(ours, 'top.qcow2');
      expect(ourCheck.clean).toBe(true);
      expect(ourCheck.allocated).toBeLessThanOrEqual(chainCheck(qemu, 'top.qcow2').allocated);
      expect(chainBacking(ours, 'top.qcow2')).toEqual(chainBacking(qemu, 'top.qcow2'));
    });
  }

  it('unsafe rebase only renames the backing file, as qemu-img rebase -u does', () => {
    const { qemu, ours } = twoCopies();
    const before = chainCheck(ours, 'top.qcow2').allocated;
    run('qemu-img', ['rebase', '-u', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'], { cwd: qemu });
    const result = platter(['rebase', '-u', '-b', 'other.qcow2', '-F', 'qcow2', 'top.qcow2'], { cwd: ours });
    expect(result.status).toBe(0);
    expect(chainSame(temp.dir, join(qemu, 'top.qcow2'), join(ours, 'top.qcow2'))).toBe(true);
    expect(chainCheck(ours, 'top.qcow2')).toEqual({ clean: true, allocated: before });
    expect(chainBacking(ours, 'top.qcow2')).toEqual({ name: 'other.qcow2', format: 'qcow2' });
  });

  const commitCases: Array<{ title: string; image: string; args: string[] }> = [
    { title: 'into the backing file, emptying the image', image: 'top.qcow2', args: [] },
    { title: 'with -d, keeping the image', image: 'top.qcow2', args: ['-d'] },
    { title: 'with -b into the base two layers down', image: 'top.qcow2', args: ['-b', 'base.qcow2'] },
    { title: 'of the middle layer', image: 'mid.qcow2', args: [] },
  ];
  for (const { title, image, args } of commitCases) {
    it(`commit ${title} gives qemu-img commit's guest data`, () => {
      const { qemu, ours } = twoCopies();
      run('qemu-img', ['commit', '-q', ...args, image], { cwd: qemu });
      const result = platter(['commit', ...args, image], { cwd: ours });
      expect(result.stderr).toBe('');
      expect(result.stdout).toBe('Image committed.\n');
      for (const layer of ['base.qcow2', 'mid.qcow2', 'top.qcow2']) {
        expect({ layer, same: chainSame(temp.dir, join(qemu, layer), join(ours, layer)) }).toEqual({ layer, same: true });
        expect({ layer, check: chainCheck(ours, layer).clean }).toEqual({ layer, check: true });
        expect(chainCheck(ours, layer).allocated).toBe(chainCheck(qemu, layer).allocated);
        // What each layer stores, run by run: zero clusters where qemu-img commit leaves them.
        const stored = (dir: string) =>
          (JSON.parse(run('qemu-img', ['map', '--output=json', layer], { cwd: dir })) as Array<Record<string, unknown>>).map(
            (entry) => ({ ...entry, offset: entry.offset !== undefined }),
          );
        expect({ layer, map: stored(ours) }).toEqual({ layer, map: stored(qemu) });
      }
      // An emptied version 3 image is cut back to an empty one, byte for byte as qemu-img leaves it.
      if (!args.includes('-d') && !args.includes('-b')) {
        expect(readFileSync(join(ours, image)).equals(readFileSync(join(qemu, image)))).toBe(true);
      }
    });
  }
});
