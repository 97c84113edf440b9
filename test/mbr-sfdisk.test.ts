/**
 * MBR layouts against sfdisk: random layouts written by sfdisk must parse to
 * exactly `sfdisk --json`; the same layouts written by platter must read back
 * identically in sfdisk and pass `sfdisk --verify`.
 */

import { truncate, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listPartitions, sfdiskJson, writePartitions } from '../src/ops/partitions.js';
import { MbrEntry, encodeChs } from '../formats/mbr/index.js';
import { renderPartitions } from '../src/cli/render/partitions.js';
import { mapLimited, mustRun, requireTools, tempDir } from './helpers/partition-tools.js';
import { withImage } from './helpers/partition-images.js';

interface LayoutPartition {
  slot: number;
  start: number;
  size: number;
  type: string;
  bootable: boolean;
}

interface Layout {
  id: string;
  sectors: number;
  partitions: LayoutPartition[];
}

/** Any type byte but empty, extended (5, f, 85) and GPT protective (ee): named and unnamed ones alike. */
const TYPES = Array.from({ length: 255 }, (_, index) => (index + 1).toString(16)).filter((type) => !['5', 'f', '85', 'ee'].includes(type));
const EXTENDED = ['5', 'f', '85'];

/** A layout: primaries, maybe an extended partition with 0–20 logicals, 63- or 2048-sector gaps. */
const layoutArbitrary = fc
  .record({
    id: fc.integer({ min: 0, max: 0xffffffff }),
    gap: fc.constantFrom(63, 2048),
    primaries: fc.array(fc.record({ size: fc.integer({ min: 1, max: 4000 }), type: fc.constantFrom(...TYPES), bootable: fc.boolean(), extraGap: fc.integer({ min: 0, max: 3 }) }), { maxLength: 4 }),
    extended: fc.option(
      fc.record({
        type: fc.constantFrom(...EXTENDED),
        logicals: fc.array(fc.record({ size: fc.integer({ min: 1, max: 3000 }), type: fc.constantFrom(...TYPES), bootable: fc.boolean(), extraGap: fc.integer({ min: 0, max: 2 }) }), { maxLength: 20 }),
        tail: fc.integer({ min: 0, max: 4000 }),
      }),
      { nil: undefined },
    ),
    slots: fc.shuffledSubarray([1, 2, 3, 4], { minLength: 4, maxLength: 4 }),
  })
  .map(({ id, gap, primaries, extended, slots }): Layout => {
    const count = Math.min(primaries.length, extended ? 3 : 4);
    const partitions: LayoutPartition[] = [];
    let position = gap;
    for (let index = 0; index < count; index++) {
      const primary = primaries[index]!;
      partitions.push({ slot: slots[index]!, start: position, size: primary.size, type: primary.type, bootable: primary.bootable });
      position += primary.size + gap * (1 + primary.extraGap);
    }
    if (extended) {
      const extendedStart = position;
      let logicalPosition = extendedStart + gap;
      let number = 5;
      const logicals: LayoutPartition[] = [];
      for (const logical of extended.logicals) {
        logicals.push({ slot: number++, start: logicalPosition, size: logical.size, type: logical.type, bootable: logical.bootable });
        logicalPosition += logical.size + gap * (1 + logical.extraGap);
      }
      const extendedSize = logicalPosition - extendedStart + extended.tail;
      partitions.push({ slot: slots[count]!, start: extendedStart, size: extendedSize, type: extended.type, bootable: false });
      partitions.push(...logicals);
      position = extendedStart + extendedSize + gap;
    }
    return { id: `0x${id.toString(16).padStart(8, '0')}`, sectors: position + 2048, partitions };
  });

function scriptOf(layout: Layout, device: string): string {
  const lines = ['label: dos', `label-id: ${layout.id}`, 'unit: sectors', ''];
  for (const partition of layout.partitions) {
    const boot = partition.bootable ? ', bootable' : '';
    lines.push(`${device}${partition.slot} : start=${partition.start}, size=${partition.size}, type=${partition.type}${boot}`);
  }
  return lines.join('\n') + '\n';
}

async function platterJson(path: string): Promise<unknown> {
  return withImage(path, async (image) => sfdiskJson(await listPartitions(image, { device: path, probe: false })));
}

const SEPARATOR = '@@@platter-test@@@';

/**
 * Runs several sfdisk commands in one shell (fewer process spawns per case) and
 * splits their outputs. `steps` are argument lists; `input` feeds the first one.
 */
async function sfdiskBatch(steps: string[][], input?: string): Promise<string[]> {
  const quote = (arg: string) => `'${arg.replace(/'/g, `'\\''`)}'`;
  const commands = steps.map((args, index) => `sfdisk ${args.map(quote).join(' ')}${index === 0 && input !== undefined ? '' : ' </dev/null'}`);
  const script = commands.join(` && echo ${SEPARATOR} && `);
  return (await mustRun('sh', ['-c', script], input)).split(`${SEPARATOR}\n`);
}

/** Checks one layout; returns a description of the first difference, or undefined. */
async function checkLayout(dir: string, layout: Layout, index: number): Promise<string | undefined> {
  const bySfdisk = join(dir, `s${index}.img`);
  const byPlatter = join(dir, `p${index}.img`);
  const size = layout.sectors * 512;
  await writeFile(bySfdisk, '');
  await writeFile(byPlatter, '');
  await truncate(bySfdisk, size);
  await truncate(byPlatter, size);
  const [, json = '', listing = ''] = await sfdiskBatch(
    [['-q', '--no-reread', '--no-tell-kernel', bySfdisk], ['--json', bySfdisk], ['-l', '-uS', bySfdisk]],
    scriptOf(layout, bySfdisk),
  );
  const expected = JSON.stringify(JSON.parse(json));
  const parsed = JSON.stringify(await platterJson(bySfdisk));
  if (parsed !== expected) return `platter parse differs:\n${parsed}\n${expected}`;
  const listed = await withImage(bySfdisk, async (image) => renderPartitions(await listPartitions(image, { device: bySfdisk, probe: false })));
  if (listed !== listing) return `listing differs from sfdisk -l -uS:\n${listed}\n${listing}`;
  await withImage(byPlatter, (image) => writePartitions(image, scriptOf(layout, byPlatter)), true);
  const [readBack = '', verify = ''] = await sfdiskBatch([['--json', byPlatter], ['--verify', byPlatter]]);
  const normalized = JSON.stringify(JSON.parse(readBack)).split(byPlatter).join(bySfdisk);
  if (normalized !== expected) return `sfdisk reads platter's table differently:\n${normalized}\n${expected}`;
  if (!/No errors detected/.test(verify)) return `sfdisk --verify: ${verify}`;
  return undefined;
}

describe('MBR layouts against sfdisk', () => {
  let available = false;
  let dir = '';
  let cleanup = async () => {};
  beforeAll(async () => {
    available = await requireTools('sfdisk', 'truncate');
    ({ dir, cleanup } = await tempDir('mbr', true));
  });
  afterAll(() => cleanup());

  it('200 random layouts: sfdisk-written parse to sfdisk --json and list as sfdisk -l -uS; platter-written read back equal and verify', async () => {
    if (!available) return;
    const seed = Date.now() % 0x7fffffff;
    const layouts = fc.sample(layoutArbitrary, { numRuns: 200, seed });
    const problems = await mapLimited(layouts, 4, (layout, index) => checkLayout(dir, layout, index));
    const failures = problems.map((problem, index) => (problem ? { layout: layouts[index], problem } : undefined)).filter(Boolean);
    expect(failures, `seed ${seed}`).toEqual([]);
    expect(layouts.some((layout) => layout.partitions.filter((p) => p.slot > 4).length >= 10)).toBe(true);
  }, 120_000);

  it('a chain whose links go back (logical partitions out of disk order, as sfdisk writes them) is read whole, as sfdisk reads it', async () => {
    if (!available) return;
    const path = join(dir, 'backward.img');
    await mustRun('truncate', ['-s', String(100 * 1024 * 1024), path]);
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], 'label: dos\n,,E\nstart=40000,size=1M\nstart=60000,size=1M\nstart=20000,size=1M\n,1M\n');
    const [json = '', listing = ''] = await sfdiskBatch([['--json', path], ['-l', '-uS', path]]);
    expect(JSON.stringify(await platterJson(path))).toBe(JSON.stringify(JSON.parse(json)));
    const listed = await withImage(path, async (image) => renderPartitions(await listPartitions(image, { device: path, probe: false })));
    expect(listed).toBe(listing);
    expect(JSON.parse(json).partitiontable.partitions.map((partition: { start: number }) => partition.start)).toEqual([2048, 40000, 60000, 20000, 4096]);
  });

  it('an image cut short lists every partition as sfdisk does; mount offsets cover what the image holds', async () => {
    if (!available) return;
    const path = join(dir, 'cut.img');
    await mustRun('truncate', ['-s', String(100 * 1024 * 1024), path]);
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], 'label: dos\n,20M\n,30M\n,,\n');
    // Cut inside partition 2: partition 3 starts past the new end.
    await truncate(path, 40 * 1024 * 1024);
    const [json = '', listing = ''] = await sfdiskBatch([['--json', path], ['-l', '-uS', path]]);
    const { warnings, ...ours } = ((await platterJson(path)) as { partitiontable: { warnings?: string[] } }).partitiontable;
    expect({ partitiontable: ours }).toEqual(JSON.parse(json));
    expect(await withImage(path, async (image) => renderPartitions(await listPartitions(image, { device: path, probe: false })))).toBe(listing);
    expect(warnings).toEqual([
      'partition 2 (start 43008, 61440 sectors) ends past the end of the disk (81920 sectors): only its first 38912 sectors are in the image',
      'partition 3 (start 104448, 100352 sectors) ends past the end of the disk (81920 sectors): none of it is in the image',
    ]);
    const { mountOffsets, selectTarget } = await import('../src/ops/mount-offset.js');
    const offsets = await withImage(path, (image) => mountOffsets(image));
    expect(selectTarget(offsets, '2')).toMatchObject({ offset: 43008 * 512, sizelimit: 38912 * 512 });
    expect(selectTarget(offsets, '3')).toMatchObject({ contiguous: false, reason: 'it starts past the end of the image' });
  });

  it('the classic layout gives offset 92413440 for partition 5', async () => {
    if (!available) return;
    const path = join(dir, 'classic.img');
    await mustRun('truncate', ['-s', String(400000 * 512), path]);
    const script = 'label: dos\nunit: sectors\n\nstart=63, size=180369, type=83, bootable\nstart=180432, size=200000, type=5\nstart=180495, size=1000, type=83\n';
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', path], script);
    const { mountOffsets, selectTarget } = await import('../src/ops/mount-offset.js');
    const target = await withImage(path, async (image) => selectTarget(await mountOffsets(image), '5'));
    expect(target.offset).toBe(180495 * 512);
    expect(target.offset).toBe(92413440);
    expect(target.sizelimit).toBe(1000 * 512);
  });
});

describe('MBR struct', () => {
  it('an entry is 16 bytes', () => {
    expect(MbrEntry.size).toBe(16);
  });
  it('CHS uses 255/63 geometry and clamps past cylinder 1023', () => {
    expect([...encodeChs(63)]).toEqual([1, 1, 0]);
    expect([...encodeChs(180431)]).toEqual([0x3a, 0x3f, 0x0b]);
    expect([...encodeChs(1024 * 255 * 63)]).toEqual([0xfe, 0xff, 0xff]);
  });
});
