/**
 * convert with several sources, copied end to end into one output as qemu-img
 * concatenates them. Each source takes whole 512-byte sectors, so one of an
 * odd size is followed by zeros. Properties over scripted images (runs of
 * data, zeros and unallocated bytes of any length): the whole reads as the
 * sources laid end to end, block status covers exactly what was asked, and a
 * raw convert never reads a zero run and writes the same bytes. Against
 * qemu-img: raw and qcow2 outputs of raw (odd-sized), qcow2 and
 * zstd-compressed sources are the same bytes at the same size, with the same
 * qcow2 map; the refusals qemu-img makes with several sources, in its words.
 */

import { readFileSync, statSync, writeFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { alignUp } from '../src/core/bytes.js';
import { MemoryDevice } from '../src/core/device.js';
import { concatImages } from '../src/ops/concat.js';
import { convertToRaw } from '../src/ops/convert.js';
import { ScriptedImage, type ScriptedRun } from './helpers/convert-fake-image.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';

const runArb: fc.Arbitrary<ScriptedRun> = fc.record({
  kind: fc.constantFrom('data', 'zero', 'unallocated') as fc.Arbitrary<ScriptedRun['kind']>,
  length: fc.integer({ min: 1, max: 3000 }),
  fill: fc.integer({ min: 1, max: 255 }),
});
const partsArb = fc.array(fc.array(runArb, { minLength: 1, maxLength: 5 }), { minLength: 1, maxLength: 4 });

/** The bytes the parts make laid end to end, each padded with zeros to whole sectors. */
function expectedBytes(parts: ScriptedImage[]): Uint8Array {
  const whole = new Uint8Array(parts.reduce((sum, part) => sum + alignUp(part.size, 512), 0));
  let at = 0;
  for (const part of parts) {
    whole.set(part.bytes, at);
    at += alignUp(part.size, 512);
  }
  return whole;
}

describe('several images read as one', () => {
  it('size, block status and reads are the sources end to end, each in whole sectors', async () => {
    await fc.assert(
      fc.asyncProperty(partsArb, fc.double({ min: 0, max: 1, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), async (runs, a, b) => {
        const parts = runs.map((partRuns, index) => new ScriptedImage(partRuns, `part${index}`));
        const whole = concatImages(parts);
        const expected = expectedBytes(parts);
        expect(whole.size).toBe(expected.length);
        const offset = Math.floor(Math.min(a, b) * whole.size);
        const length = Math.floor(Math.max(a, b) * whole.size) - offset;
        const extents = await whole.blockStatus(offset, length);
        let at = offset;
        for (const extent of extents) {
          expect(extent.start).toBe(at);
          expect(extent.length).toBeGreaterThan(0);
          const bytes = expected.subarray(extent.start, extent.start + extent.length);
          // Only data is read (a scripted image throws on reading anything else).
          if (extent.kind === 'data') expect(Buffer.from(await whole.read(extent.start, extent.length)).equals(Buffer.from(bytes))).toBe(true);
          else expect(bytes.every((byte) => byte === 0)).toBe(true);
          at += extent.length;
        }
        expect(at).toBe(offset + length);
      }),
      { numRuns: 200 },
    );
  });

  it('a read that fails in one source reports it only once the other sources are done with the buffer', async () => {
    const failing = new ScriptedImage([{ kind: 'zero', length: 512 }], 'failing');
    const slow = new ScriptedImage([{ kind: 'data', length: 512, fill: 3 }], 'slow');
    let landed = false;
    slow.readInto = async (offset, target) => {
      await new Promise((resolve) => setTimeout(resolve, 30));
      target.set(slow.bytes.subarray(offset, offset + target.length));
      landed = true;
    };
    // The scripted image refuses reads of its zero run: the first source's read fails at once.
    await expect(concatImages([failing, slow]).readInto!(0, new Uint8Array(1024))).rejects.toThrow(/touches a zero extent/);
    expect(landed).toBe(true);
  });

  it('a raw convert of them writes the same bytes and never reads a zero or unallocated run', async () => {
    await fc.assert(
      fc.asyncProperty(partsArb, fc.constantFrom(512, 4096), async (runs, ioSize) => {
        const parts = runs.map((partRuns, index) => new ScriptedImage(partRuns, `part${index}`));
        const target = new MemoryDevice(0);
        await convertToRaw(concatImages(parts), target, { ioSize });
        expect(Buffer.from(target.contents()).equals(Buffer.from(expectedBytes(parts)))).toBe(true);
      }),
      { numRuns: 100 },
    );
  });
});

describe.skipIf(!hasTool('qemu-img') || !hasTool('qemu-io'))('convert with several sources, against qemu-img', () => {
  const tmp = tempDir('platter-concat-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const qemuIo = (image: string, command: string) => run('qemu-io', ['-f', 'qcow2', '-c', command, image]);

  // An odd-sized raw file with a zero stretch, a qcow2 image with data, zero and unallocated clusters, and a zstd-compressed one.
  const odd = new Uint8Array(70_001).map((_, index) => (index % 9 === 0 ? 0 : (index * 31) & 0xff));
  odd.fill(0, 10_000, 40_000);
  writeFileSync(at('odd.raw'), odd);
  run('qemu-img', ['create', '-q', '-f', 'qcow2', at('mixed.qcow2'), '3M']);
  qemuIo(at('mixed.qcow2'), 'write -P 0x5a 65536 200k');
  qemuIo(at('mixed.qcow2'), 'write -z 1M 128k');
  qemuIo(at('mixed.qcow2'), 'write -P 0x17 2000k 1k');
  run('qemu-img', ['convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'compression_type=zstd', at('odd.raw'), at('zstd.qcow2')]);
  const sources = [at('odd.raw'), at('mixed.qcow2'), at('zstd.qcow2'), at('odd.raw')];

  it.each([
    ['raw', []],
    ['qcow2', []],
    ['qcow2', ['-c']],
    ['raw', ['-S', '0']],
  ])('-O %s %j: the same bytes, size and qcow2 map as qemu-img', (format, flags) => {
    const ours = at(`ours-${format}-${flags.join('')}`);
    const theirs = at(`theirs-${format}-${flags.join('')}`);
    run('qemu-img', ['convert', ...flags, '-O', format, ...sources, theirs]);
    const result = platter(['convert', ...flags, '-O', format, ...sources, ours]);
    expect(result.stderr).toBe('');
    expect(result.status).toBe(0);
    expect(run('qemu-img', ['compare', '-f', format, '-F', format, theirs, ours])).toContain('Images are identical');
    if (format === 'raw') expect(statSync(ours).size).toBe(statSync(theirs).size);
    else {
      const map = (image: string) => run('qemu-img', ['map', '--output=json', image]);
      const info = (image: string) => JSON.parse(run('qemu-img', ['info', '--output=json', image]))['virtual-size'];
      expect(info(ours)).toBe(info(theirs));
      if (flags.length === 0) expect(map(ours)).toBe(map(theirs));
    }
  });

  it('-n into an existing raw file of the whole size, and into one too small', () => {
    const total = sources.reduce((sum, source) => sum + alignUp(Number(JSON.parse(run('qemu-img', ['info', '--output=json', source]))['virtual-size']), 512), 0);
    // Longer than the whole, full of 0xee: both tools overwrite the whole and leave the rest.
    for (const name of ['ours.raw', 'theirs.raw']) writeFileSync(at(name), new Uint8Array(total + 4096).fill(0xee));
    run('qemu-img', ['convert', '-n', '-O', 'raw', ...sources, at('theirs.raw')]);
    expect(platter(['convert', '-n', '-O', 'raw', ...sources, at('ours.raw')]).status).toBe(0);
    expect(readFileSync(at('ours.raw')).equals(readFileSync(at('theirs.raw')))).toBe(true);
    expect(readFileSync(at('ours.raw')).subarray(total).every((byte) => byte === 0xee)).toBe(true);
    writeFileSync(at('small.raw'), new Uint8Array(total - 512));
    expect(platter(['convert', '-n', '-O', 'raw', ...sources, at('small.raw')]).stderr).toBe(`platter: ${at('small.raw')}: output file is smaller than input file\n`);
  });

  it.each([
    [['-l', 'snap'], 'No support for concatenating multiple snapshot'],
    [['-O', 'qcow2', '-B', 'mixed.qcow2', '-F', 'qcow2'], 'Having a backing file for the target makes no sense when concatenating multiple input images'],
    [['-O', 'qcow2', '--delta-from', 'mixed.qcow2'], 'Having a backing file for the target makes no sense when concatenating multiple input images'],
    [['-O', 'qcow2', '-o', 'backing_file=mixed.qcow2,backing_fmt=qcow2'], 'Having a backing file for the target makes no sense when concatenating multiple input images'],
  ])('%j with two sources: refused with qemu-img words', (flags, message) => {
    const result = platter(['convert', ...flags, 'mixed.qcow2', 'odd.raw', 'out.img'], { cwd: tmp.dir });
    expect(result.stderr).toBe(`platter: ${message}\n`);
    expect(result.status).toBe(1);
  });

  it('an output that is any of the sources is refused, the last as well as the first', () => {
    for (const target of ['odd.raw', 'zstd.qcow2']) {
      const result = platter(['convert', '-O', 'raw', 'odd.raw', 'mixed.qcow2', 'zstd.qcow2', target], { cwd: tmp.dir });
      expect(result.stderr).toBe(`platter: ${target}: refusing to convert onto the source image ${target}\n`);
    }
  });
});
