/** `platter info` on raw images equals `qemu-img info` on every key qemu-img prints. */

import { copyFileSync, writeFileSync, truncateSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const tmp = tempDir();
afterAll(() => tmp.cleanup());

function randomBytes(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed;
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = x >>> 24;
  }
  return out;
}

/** Raw images of awkward sizes and allocations, plus the committed fixture. */
function makeRawImages(): string[] {
  const images: [string, (path: string) => void][] = [
    ['empty.raw', (p) => writeFileSync(p, '')],
    ['one-byte.raw', (p) => writeFileSync(p, 'x')],
    ['odd.raw', (p) => writeFileSync(p, randomBytes(5000, 1))],
    ['data.raw', (p) => writeFileSync(p, randomBytes(5120, 2))],
    ['sparse-64M.raw', (p) => { writeFileSync(p, ''); truncateSync(p, 64 << 20); }],
    ['mixed.raw', (p) => { writeFileSync(p, randomBytes(1 << 20, 3)); truncateSync(p, 3 << 20); }],
    ['fixture.raw', (p) => copyFileSync(fileURLToPath(new URL('../fixtures/mbr-small.raw', import.meta.url)), p)],
  ];
  return images.map(([name, make]) => {
    const path = tmp.path(name);
    make(path);
    return path;
  });
}

describe.skipIf(!hasTool('qemu-img'))('info on raw images', () => {
  const images = makeRawImages();

  it.each(images)('%s: JSON equals qemu-img info --output=json', (path) => {
    const expected = JSON.parse(run('qemu-img', ['info', '--output=json', path]));
    const result = platter(['info', '--output=json', path]);
    expect(result.stderr).toBe('');
    expect(JSON.parse(result.stdout)).toEqual(expected);
  });

  it.each(images)('%s: text equals qemu-img info', (path) => {
    expect(platter(['info', path]).stdout).toBe(run('qemu-img', ['info', path]));
  });

  it('with -f raw, from another working directory', () => {
    const expected = JSON.parse(run('qemu-img', ['info', '-f', 'raw', '--output=json', 'data.raw'], { cwd: tmp.dir }));
    expect(JSON.parse(platter(['info', '-f', 'raw', '--output=json', 'data.raw'], { cwd: tmp.dir }).stdout)).toEqual(expected);
  });
});

describe.skipIf(!hasTool('qemu-img'))('map of a raw file that ends inside a sector', () => {
  it.each([1000, 5000, 4096 + 1])('%d bytes: data, then the rest of the last sector as zeros, as qemu-img map says', (size) => {
    const path = tmp.path(`tail-${size}.raw`);
    writeFileSync(path, new Uint8Array(size).fill(0x5a));
    for (const output of ['json', 'human']) {
      const theirs = run('qemu-img', ['map', `--output=${output}`, '-f', 'raw', path]);
      const ours = platter(['map', `--output=${output}`, '-f', 'raw', path]);
      expect(ours.stdout, output).toBe(theirs);
    }
  });
});
