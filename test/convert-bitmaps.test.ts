/**
 * convert --bitmaps against qemu-img convert --bitmaps 7.2. Sources get
 * persistent bitmaps from qemu-img bitmap (granularities from 512 bytes to
 * 1 MiB, enabled and disabled) and dirty bits from qemu-io writes. A new
 * output (plain, compressed, other cluster sizes, a size that ends mid-bitmap
 * cluster) is the same file, byte for byte; into an existing image (-n) and
 * onto a backing file (-B) the bitmaps read the same through qemu-nbd. The
 * refusals are qemu-img's, in its words, and leave an existing output as it
 * was; a malformed bitmap table fails with a message, not a stack trace.
 */

import { copyFileSync, existsSync, readFileSync } from 'node:fs';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { EXT_BITMAPS } from '../formats/qcow2/extensions.js';
import { MemoryDevice } from '../src/core/device.js';
import { PlatterError } from '../src/core/errors.js';
import { openImage } from '../src/engine/open.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { bitmapsToCopy } from '../src/ops/bitmaps.js';
import { convertToQcow2 } from '../src/ops/convert-qcow2.js';
import { findExtension, pokeFile } from './helpers/qcow2-cases.js';
import { hasTool, platter, run, tempDir } from './helpers/tools.js';
import { dirtyMap as dirtyMapIn } from './helpers/bitmap-oracle.js';

const haveTools = hasTool('qemu-img') && hasTool('qemu-io') && hasTool('qemu-nbd');

describe.skipIf(!haveTools)('convert --bitmaps, against qemu-img', () => {
  const tmp = tempDir('platter-bitmaps-');
  afterAll(() => tmp.cleanup());
  const at = tmp.path;
  const dirtyMap = (image: string, bitmap: string) => dirtyMapIn(tmp.dir, image, bitmap);
  const qemuImg = (...args: string[]) => run('qemu-img', args, { cwd: tmp.dir });
  const qemuIo = (image: string, ...commands: string[]) => run('qemu-io', ['-f', 'qcow2', ...commands.flatMap((command) => ['-c', command]), at(image)]);
  const bitmapNames = (image: string) =>
    ((JSON.parse(qemuImg('info', '--output=json', at(image)))['format-specific']?.data?.bitmaps ?? []) as { name: string }[]).map((bitmap) => bitmap.name);

  /** A source with bitmaps of three granularities (one disabled), each with some dirty bits. */
  function makeSource(name: string, size = '64M'): void {
    qemuImg('create', '-q', '-f', 'qcow2', at(name), size);
    qemuImg('bitmap', '--add', at(name), 'fine', '-g', '512');
    qemuImg('bitmap', '--add', at(name), 'default');
    qemuImg('bitmap', '--add', at(name), 'coarse', '-g', '1M');
    qemuIo(name, 'write -P 1 0 1M', 'write -P 2 10M 64k', 'write -P 3 20000k 3k');
    qemuImg('bitmap', '--disable', at(name), 'coarse');
    qemuIo(name, 'write -P 4 40M 512');
  }

  makeSource('source.qcow2');

  it.each([[[]], [['-c']], [['-o', 'cluster_size=4k']], [['-o', 'cluster_size=2M']], [['-o', 'compat=1.1,refcount_bits=1']]])(
    '%j: the same file as qemu-img writes',
    (flags) => {
      const name = flags.join('').replace(/[^a-z0-9]/gi, '');
      qemuImg('convert', '--bitmaps', ...flags, '-O', 'qcow2', at('source.qcow2'), at(`theirs-${name}.qcow2`));
      const result = platter(['convert', '--bitmaps', ...flags, '-O', 'qcow2', at('source.qcow2'), at(`ours-${name}.qcow2`)]);
      expect(result.stderr).toBe('');
      expect(result.status).toBe(0);
      expect(readFileSync(at(`ours-${name}.qcow2`)).equals(readFileSync(at(`theirs-${name}.qcow2`)))).toBe(true);
    },
  );

  it('any size, granularity and dirty writes: the same file as qemu-img writes', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 96 }).map((sectors) => sectors * 64 * 1024 + 512 * (sectors % 3)),
        fc.integer({ min: 9, max: 21 }),
        fc.constantFrom('512', '4k', '64k'),
        fc.array(fc.record({ at: fc.nat(), sectors: fc.integer({ min: 1, max: 300 }) }), { maxLength: 4 }),
        (size, granularityBits, clusterSize, writes) => {
          qemuImg('create', '-q', '-f', 'qcow2', at('random.qcow2'), String(size));
          qemuImg('bitmap', '--add', at('random.qcow2'), 'b', '-g', String(2 ** granularityBits));
          const commands = writes.map(({ at: start, sectors }) => {
            const offset = (start % (size / 512)) * 512;
            return `write -P 7 ${offset} ${Math.min(sectors * 512, size - offset)}`;
          });
          if (commands.length > 0) qemuIo('random.qcow2', ...commands);
          qemuImg('convert', '--bitmaps', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, at('random.qcow2'), at('random-theirs.qcow2'));
          const result = platter(['convert', '--bitmaps', '-O', 'qcow2', '-o', `cluster_size=${clusterSize}`, at('random.qcow2'), at('random-ours.qcow2')]);
          expect(result.stderr).toBe('');
          expect(readFileSync(at('random-ours.qcow2')).equals(readFileSync(at('random-theirs.qcow2')))).toBe(true);
        },
      ),
      { numRuns: 8 },
    );
  });

  it('-n into an image made beforehand and -B onto a backing file: the bitmaps read the same through qemu-nbd, and check is clean', async () => {
    for (const owner of ['ours', 'theirs']) qemuImg('create', '-q', '-f', 'qcow2', at(`into-${owner}.qcow2`), '64M');
    qemuImg('convert', '--bitmaps', '-n', '-O', 'qcow2', at('source.qcow2'), at('into-theirs.qcow2'));
    expect(platter(['convert', '--bitmaps', '-n', '-O', 'qcow2', at('source.qcow2'), at('into-ours.qcow2')]).status).toBe(0);
    qemuImg('create', '-q', '-f', 'qcow2', at('backing.qcow2'), '64M');
    qemuIo('backing.qcow2', 'write -P 1 0 512k');
    qemuImg('convert', '--bitmaps', '-B', 'backing.qcow2', '-F', 'qcow2', '-O', 'qcow2', at('source.qcow2'), at('over-theirs.qcow2'));
    expect(platter(['convert', '--bitmaps', '-B', 'backing.qcow2', '-F', 'qcow2', '-O', 'qcow2', at('source.qcow2'), at('over-ours.qcow2')]).status).toBe(0);
    for (const kind of ['into', 'over']) {
      expect(bitmapNames(`${kind}-ours.qcow2`)).toEqual(['fine', 'default', 'coarse']);
      expect(qemuImg('info', at(`${kind}-ours.qcow2`)).split('bitmaps:')[1]).toBe(qemuImg('info', at(`${kind}-theirs.qcow2`)).split('bitmaps:')[1]);
      expect(qemuImg('check', at(`${kind}-ours.qcow2`))).toContain('No errors were found on the image.');
      for (const bitmap of ['fine', 'default', 'coarse']) {
        expect(await dirtyMap(`${kind}-ours.qcow2`, bitmap)).toBe(await dirtyMap(`${kind}-theirs.qcow2`, bitmap));
      }
    }
  });

  it('an inconsistent bitmap is refused, or left out with --skip-broken-bitmaps, as qemu-img does', () => {
    copyFileSync(at('source.qcow2'), at('in-use.qcow2'));
    // The flags of the first directory entry (offset 12 into it) get the in-use bit.
    const directory = bitmapDirectory(at('in-use.qcow2'));
    const flags = readFileSync(at('in-use.qcow2')).readUInt32BE(directory + 12);
    pokeFile(at('in-use.qcow2'), directory + 12, [0, 0, 0, flags | 1]);
    const refused = platter(['convert', '--bitmaps', '-O', 'qcow2', at('in-use.qcow2'), at('in-use-out.qcow2')]);
    expect(refused.stderr).toBe("platter: Cannot copy inconsistent bitmap 'fine'\nTry --skip-broken-bitmaps, or remove the bitmap\n");
    expect(refused.status).toBe(1);
    qemuImg('convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', at('in-use.qcow2'), at('skipped-theirs.qcow2'));
    const skipped = platter(['convert', '--bitmaps', '--skip-broken-bitmaps', '-O', 'qcow2', at('in-use.qcow2'), at('skipped-ours.qcow2')]);
    expect(skipped.stderr).toBe("platter: warning: Skipping inconsistent bitmap 'fine'\n");
    expect(readFileSync(at('skipped-ours.qcow2')).equals(readFileSync(at('skipped-theirs.qcow2')))).toBe(true);
  });

  it.each([
    [['--skip-broken-bitmaps', '-O', 'qcow2', 'source.qcow2', 'x.qcow2'], 'Use of --skip-broken-bitmaps requires --bitmaps'],
    [['--bitmaps', '-O', 'qcow2', 'source.qcow2', 'source.qcow2', 'x.qcow2'], 'Copying bitmaps only possible with single source'],
    [['--bitmaps', '-O', 'raw', 'source.qcow2', 'x.raw'], "Format driver 'raw' does not support bitmaps"],
    [['--bitmaps', '-f', 'raw', '-O', 'qcow2', 'source.qcow2', 'x.qcow2'], 'Source lacks bitmap support'],
    [['--bitmaps', '-O', 'qcow2', '-o', 'compat=0.10', 'source.qcow2', 'x.qcow2'], "Format driver 'qcow2' does not support bitmaps"],
  ])('%j: refused with qemu-img words', (args, message) => {
    const result = platter(['convert', ...args], { cwd: tmp.dir });
    expect(result.stderr).toBe(`platter: ${message}\n`);
    expect(result.status).toBe(1);
  });

  it('-n into a version 2 image, one of another size, or one with a bitmap of the same name: refused before anything is written', () => {
    qemuImg('create', '-q', '-f', 'qcow2', at('larger.qcow2'), '128M');
    qemuImg('create', '-q', '-f', 'qcow2', at('named.qcow2'), '64M');
    qemuImg('bitmap', '--add', at('named.qcow2'), 'default');
    qemuImg('create', '-q', '-f', 'qcow2', '-o', 'compat=0.10', at('version2.qcow2'), '64M');
    const cases = [
      ['version2.qcow2', "Format driver 'qcow2' does not support bitmaps"],
      ['larger.qcow2', "Failed to populate bitmap coarse: Bitmaps are of different sizes (destination size is 134217728, source size is 67108864) and can't be merged"],
      ['named.qcow2', 'Failed to create bitmap default: Bitmap already exists: default'],
    ];
    for (const [target, message] of cases) {
      const before = readFileSync(at(target!));
      const result = platter(['convert', '--bitmaps', '-n', '-O', 'qcow2', at('source.qcow2'), at(target!)]);
      expect(result.stderr).toBe(`platter: ${message}\n`);
      expect(result.status).toBe(1);
      expect(readFileSync(at(target!)).equals(before)).toBe(true);
    }
  });

  it('damaged bitmap directories and tables: a copy succeeds or fails with a PlatterError, never otherwise', async () => {
    const clean = new Uint8Array(readFileSync(at('ours-.qcow2')));
    const directory = bitmapDirectory(at('ours-.qcow2'));
    const view = new DataView(clean.buffer);
    // The directory and the first bitmap's table: where a damaged image goes wrong.
    const targets = [directory, Number(view.getBigUint64(directory))];
    const host = { codecs: nodeCodecs, warn: () => {} };
    const outcomes = { copied: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...targets),
        fc.array(fc.record({ at: fc.nat({ max: 63 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 6 }),
        async (base, pokes) => {
          const bytes = clean.slice();
          for (const poke of pokes) bytes[base + poke.at] = poke.value;
          try {
            const image = await openImage(new MemoryDevice(bytes, { writable: false, name: 'damaged.qcow2' }), { host });
            try {
              const copy = await bitmapsToCopy(image, true, () => {});
              await convertToQcow2(image, new MemoryDevice(0), { options: new Map(), compress: false, host, bitmaps: copy });
              outcomes.copied++;
            } finally {
              await image.close();
            }
          } catch (error) {
            if (!(error instanceof PlatterError)) throw error;
            outcomes.refused++;
          }
        },
      ),
      { numRuns: 300 },
    );
    // Both ways were taken: the damage reached the reader, and not every poke made the image unreadable.
    expect(outcomes.copied).toBeGreaterThan(0);
    expect(outcomes.refused).toBeGreaterThan(0);
  });

  it('a malformed bitmap table entry: a message naming the bitmap and the entry, no output', () => {
    copyFileSync(at('ours-.qcow2'), at('bad-table.qcow2'));
    const table = Number(readFileSync(at('bad-table.qcow2')).readBigUInt64BE(bitmapDirectory(at('bad-table.qcow2'))));
    // A reserved bit in the first entry of the first bitmap's table.
    pokeFile(at('bad-table.qcow2'), table, [0x80]);
    const result = platter(['convert', '--bitmaps', '-O', 'qcow2', at('bad-table.qcow2'), at('bad-out.qcow2')]);
    expect(result.stderr).toMatch(/^platter: .*bad-table\.qcow2: bitmap 'fine': table entry 0 is malformed/);
    expect(result.stderr).not.toMatch(/\n\s+at /);
    expect(result.status).not.toBe(0);
    expect(existsSync(at('bad-out.qcow2'))).toBe(false);
  });
});

/** Where the bitmap directory of the qcow2 image at `path` starts (from its bitmaps extension). */
function bitmapDirectory(path: string): number {
  const extension = findExtension(path, EXT_BITMAPS);
  return Number(readFileSync(path).readBigUInt64BE(extension + 8 + 16));
}
