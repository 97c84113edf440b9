/**
 * A file sized from empty gets its first block written, as qemu's file driver
 * writes it: new raw images, convert's raw outputs, raw data files and an
 * empty raw image resized all occupy the same disk space (st_blocks) as the
 * files qemu-img makes with the same command, and read the same.
 */

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

/** Runs the same qemu-img command line through both tools; `{}` in an argument is replaced by each tool's own name. */
function both(args: string[]): { qemu: (name: string) => string; platter: (name: string) => string } {
  const named = (tool: string) => (name: string) => tmp.path(`${tool}-${name}`);
  const qemu = named('qemu');
  const ours = named('platter');
  run('qemu-img', args.map((arg) => arg.replaceAll('{}', qemu('').slice(0, -1))));
  const result = platter(args.map((arg) => arg.replaceAll('{}', ours('').slice(0, -1))));
  expect(result.stderr).toBe('');
  expect(result.status).toBe(0);
  return { qemu, platter: ours };
}

/** Size, occupied blocks and contents of one file made by each tool. */
function expectSameFiles(files: ReturnType<typeof both>, name: string): void {
  const [theirs, ours] = [statSync(files.qemu(name)), statSync(files.platter(name))];
  expect({ size: ours.size, blocks: ours.blocks }).toEqual({ size: theirs.size, blocks: theirs.blocks });
  expect(readFileSync(files.platter(name)).equals(readFileSync(files.qemu(name)))).toBe(true);
}

describe.skipIf(!hasTool('qemu-img'))('the first block of a file sized from empty', () => {
  it.each(['512', '1000', '4096', '1M', '64M'])('create -f raw %s', (size) => {
    expectSameFiles(both(['create', '-q', '-f', 'raw', '{}-disk.raw', size]), 'disk.raw');
  });

  it('convert -O raw: a source that is zero at the start, and one with data there', () => {
    const source = tmp.path('source.qcow2');
    run('qemu-img', ['create', '-q', '-f', 'qcow2', source, '8M']);
    run('qemu-io', ['-c', 'write -P 7 1M 64k', source]);
    expectSameFiles(both(['convert', '-O', 'raw', source, '{}-zero-start.raw']), 'zero-start.raw');
    run('qemu-io', ['-c', 'write -P 9 0 1k', source]);
    expectSameFiles(both(['convert', '-O', 'raw', source, '{}-data-start.raw']), 'data-start.raw');
  });

  it('resize of an empty raw image', () => {
    for (const tool of ['qemu', 'platter']) writeFileSync(tmp.path(`${tool}-empty.raw`), '');
    expectSameFiles(both(['resize', '-q', '-f', 'raw', '{}-empty.raw', '2M']), 'empty.raw');
  });

  it('create -f qcow2 with a raw data file', () => {
    const files = both(['create', '-q', '-f', 'qcow2', '-o', 'data_file={}-data.raw,data_file_raw=on', '{}-image.qcow2', '4M']);
    expectSameFiles(files, 'data.raw');
  });
});
