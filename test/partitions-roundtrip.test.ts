/**
 * Properties: random MBR and GPT tables round-trip through platter's writer and
 * parser; sfdisk scripts round-trip through print and parse; random byte pokes
 * never crash a reader (only PlatterErrors or warnings, quickly).
 */

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { PlatterError } from '../src/core/errors.js';
import { encodeMbr, parseMbr } from '../formats/mbr/index.js';
import { encodeGpt, gptGeometry, parseGpt } from '../formats/gpt/index.js';
import type { PartitionRecord, PartitionTable } from '../formats/partition-table/model.js';
import { readPartitionTable } from '../src/engine/partition-table.js';
import { layoutScript } from '../src/engine/partition-layout.js';
import { parseScript } from '../src/engine/sfdisk-script.js';
import { sfdiskScript, type ListedPartition } from '../src/ops/partitions.js';
import { mountOffsets } from '../src/ops/mount-offset.js';
import { RawImage } from '../formats/raw/index.js';

function apply(device: MemoryDevice, table: PartitionTable, totalSectors: number): void {
  const writes = table.label === 'gpt' ? encodeGpt(table, totalSectors) : encodeMbr(table);
  for (const write of writes) device.contents().set(write.data, write.offset);
}

const hexGuid = fc.uuid().map((text) => text.toUpperCase());
const nonNilGuid = hexGuid.filter((text) => text !== '00000000-0000-0000-0000-000000000000');
const gptName = fc.array(fc.integer({ min: 0x20, max: 0xd7ff }).map((code) => String.fromCharCode(code)), { maxLength: 36 }).map((chars) => chars.join(''));

/** A GPT with 0–12 partitions in entry slots 1–128, back to back with random gaps. */
const gptArbitrary = fc
  .record({
    sectorSize: fc.constantFrom(512, 4096),
    id: hexGuid,
    entries: fc.array(
      fc.record({ gap: fc.integer({ min: 0, max: 100 }), size: fc.integer({ min: 1, max: 300 }), type: nonNilGuid, uuid: hexGuid, name: gptName, attributes: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }) }),
      { maxLength: 12 },
    ),
    slots: fc.shuffledSubarray(Array.from({ length: 128 }, (_, index) => index + 1), { minLength: 12, maxLength: 12 }),
  })
  .map(({ sectorSize, id, entries, slots }) => {
    const firstUsable = gptGeometry(0, sectorSize).firstUsable;
    let position = firstUsable;
    const partitions: PartitionRecord[] = entries.map((entry, index) => {
      const start = position + entry.gap;
      position = start + entry.size;
      const partition: PartitionRecord = { number: slots[index]!, start, size: entry.size, type: entry.type, uuid: entry.uuid, attributes: entry.attributes };
      if (entry.name !== '') partition.name = entry.name;
      return partition;
    });
    const totalSectors = position + 64 + 2 * gptGeometry(0, sectorSize).arraySectors;
    const geometry = gptGeometry(totalSectors, sectorSize);
    const table: PartitionTable = { label: 'gpt', id, sectorSize, firstLba: geometry.firstUsable, lastLba: geometry.lastUsable, entryCount: 128, partitions: partitions.sort((a, b) => a.number - b.number), warnings: [] };
    return { table, totalSectors };
  });

/** An MBR: up to 3 primaries then an extended partition with up to 30 logicals. */
const mbrArbitrary = fc
  .record({
    id: fc.integer({ min: 0, max: 0xffffffff }),
    primaries: fc.array(fc.record({ size: fc.integer({ min: 1, max: 500 }), type: fc.integer({ min: 1, max: 255 }).filter((t) => ![5, 0xf, 0x85, 0xee].includes(t)), bootable: fc.boolean() }), { maxLength: 3 }),
    logicals: fc.array(fc.record({ gap: fc.integer({ min: 1, max: 50 }), size: fc.integer({ min: 1, max: 200 }), type: fc.constantFrom(0x83, 0x82, 0x8e, 0x7), bootable: fc.boolean() }), { maxLength: 30 }),
    extendedType: fc.constantFrom(5, 0xf, 0x85),
  })
  .map(({ id, primaries, logicals, extendedType }) => {
    let position = 1;
    const partitions: PartitionRecord[] = primaries.map((primary, index) => {
      const partition: PartitionRecord = { number: index + 1, start: position, size: primary.size, type: primary.type.toString(16) };
      if (primary.bootable) partition.bootable = true;
      position += primary.size;
      return partition;
    });
    const extendedStart = position;
    const logicalRecords = logicals.map((logical, index) => {
      const start = position + logical.gap;
      position = start + logical.size;
      const partition: PartitionRecord = { number: 5 + index, start, size: logical.size, type: logical.type.toString(16) };
      if (logical.bootable) partition.bootable = true;
      return partition;
    });
    partitions.push({ number: primaries.length + 1, start: extendedStart, size: position - extendedStart + 1, type: extendedType.toString(16) }, ...logicalRecords);
    const table: PartitionTable = { label: 'dos', id: `0x${id.toString(16).padStart(8, '0')}`, sectorSize: 512, partitions, warnings: [] };
    return { table, totalSectors: position + 10 };
  });

describe('round trips', () => {
  it('GPT: write then parse gives the same table, all 64 attribute bits kept', async () => {
    await fc.assert(
      fc.asyncProperty(gptArbitrary, async ({ table, totalSectors }) => {
        const device = new MemoryDevice(totalSectors * table.sectorSize);
        apply(device, table, totalSectors);
        expect(await parseGpt(device)).toEqual(table);
      }),
      { numRuns: 100 },
    );
  });

  it('MBR: write then parse gives the same table', async () => {
    await fc.assert(
      fc.asyncProperty(mbrArbitrary, async ({ table, totalSectors }) => {
        const device = new MemoryDevice(totalSectors * 512);
        apply(device, table, totalSectors);
        expect(await parseMbr(device, await device.read(0, 512))).toEqual(table);
      }),
      { numRuns: 150 },
    );
  });

  it('sfdisk scripts: print then parse and lay out gives the same table', async () => {
    const either = fc.oneof(mbrArbitrary, gptArbitrary.filter(({ table }) => table.sectorSize === 512));
    await fc.assert(
      fc.property(either, ({ table, totalSectors }) => {
        const partitions = table.partitions.map((p): ListedPartition => ({ ...p, node: `disk${p.number}`, offset: 0, bytes: 0 }));
        const script = sfdiskScript({ device: 'disk', diskSize: totalSectors * 512, table, partitions, warnings: [] })!;
        const again = layoutScript(parseScript(script), totalSectors * 512, table);
        expect(again).toEqual({ ...table, warnings: [] });
      }),
      { numRuns: Number(process.env.ROUNDTRIP_RUNS ?? 150) },
    );
  });
});

async function neverCrashes(device: MemoryDevice): Promise<void> {
  try {
    await readPartitionTable(device);
    await mountOffsets(new RawImage(device));
  } catch (error) {
    if (!(error instanceof PlatterError)) throw error;
  }
}

describe('hostile tables', { timeout: 30_000 }, () => {
  it('random byte pokes into a GPT never crash the reader', async () => {
    await fc.assert(
      fc.asyncProperty(gptArbitrary, fc.array(fc.record({ at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }), async ({ table, totalSectors }, pokes) => {
        const device = new MemoryDevice(totalSectors * table.sectorSize);
        apply(device, table, totalSectors);
        const headerEnd = 2 * table.sectorSize + 128 * 128;
        for (const poke of pokes) device.contents()[poke.at % headerEnd] = poke.value;
        await neverCrashes(device);
      }),
      { numRuns: 100 },
    );
  });

  it('random byte pokes into MBR and EBRs never crash the reader', async () => {
    await fc.assert(
      fc.asyncProperty(mbrArbitrary, fc.array(fc.record({ sector: fc.nat(), at: fc.integer({ min: 0x1be, max: 0x1ff }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 }), async ({ table, totalSectors }, pokes) => {
        const device = new MemoryDevice(totalSectors * 512);
        apply(device, table, totalSectors);
        const ebrs = [0, ...table.partitions.filter((p) => p.number > 4).map((p) => p.start - 1)];
        for (const poke of pokes) device.contents()[ebrs[poke.sector % ebrs.length]! * 512 + poke.at] = poke.value;
        await neverCrashes(device);
      }),
      { numRuns: 150 },
    );
  });

  it('a GPT entry with an LBA past 2^53 (CRCs fixed up) is a warning; a header with one falls back to the backup', async () => {
    const { headerCrc } = await import('../formats/gpt/index.js');
    const { crc32 } = await import('../src/core/crc32.js');
    const totalSectors = 4096;
    const device = new MemoryDevice(totalSectors * 512);
    const table: PartitionTable = {
      label: 'gpt',
      id: '11111111-2222-4333-8444-555555555555',
      sectorSize: 512,
      partitions: [
        { number: 1, start: 100, size: 10, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', uuid: '21111111-2222-4333-8444-555555555555', attributes: 0n },
        { number: 2, start: 200, size: 10, type: '0FC63DAF-8483-4772-8E79-3D69D8477DE4', uuid: '31111111-2222-4333-8444-555555555555', attributes: 0n },
      ],
      warnings: [],
    };
    apply(device, table, totalSectors);
    const bytes = device.contents();
    const view = new DataView(bytes.buffer);
    view.setBigUint64(2 * 512 + 128 + 40, 2n ** 60n, true); // entry 2's last LBA, primary array
    view.setUint32(512 + 88, crc32(bytes.subarray(1024, 1024 + 128 * 128)), true);
    view.setUint32(512 + 16, headerCrc(bytes.subarray(512, 1024), 92), true);
    const parsed = await parseGpt(device);
    expect(parsed?.partitions.map((p) => p.number)).toEqual([1]);
    expect(parsed?.warnings.join('\n')).toMatch(/partition 2 .* past any disk; ignored/);
    view.setBigUint64(512 + 40, 2n ** 60n, true); // primary FirstUsableLBA
    view.setUint32(512 + 16, headerCrc(bytes.subarray(512, 1024), 92), true);
    const fallback = await parseGpt(device);
    expect(fallback?.partitions.map((p) => p.number)).toEqual([1, 2]);
    expect(fallback?.warnings.join('\n')).toMatch(/using the backup/);
  });

  it('a GPT header claiming 2^32-1 entries is refused without a giant allocation', async () => {
    const totalSectors = 2048;
    const device = new MemoryDevice(totalSectors * 512);
    const table: PartitionTable = { label: 'gpt', id: '11111111-2222-4333-8444-555555555555', sectorSize: 512, partitions: [], warnings: [] };
    apply(device, table, totalSectors);
    const view = new DataView(device.contents().buffer);
    for (const lba of [1, totalSectors - 1]) {
      view.setUint32(lba * 512 + 80, 0xffffffff, true);
      const { headerCrc } = await import('../formats/gpt/index.js');
      view.setUint32(lba * 512 + 16, headerCrc(device.contents().subarray(lba * 512, lba * 512 + 512), 92), true);
    }
    expect(await parseGpt(device)).toBeUndefined();
  });
});

describe('hostile filesystem heads', () => {
  /** Signatures at their offsets, so each prober gets past its first check. */
  const SIGNATURES: [number, string][] = [
    [1080, '\x53\xef'],
    [0, 'XFSB'],
    [65536 + 0x40, '_BHRfS_M'],
    [0x36, 'FAT16   '],
    [0x52, 'FAT32   '],
    [3, 'EXFAT   '],
    [3, 'NTFS    '],
    [4086, 'SWAPSPACE2'],
    [0, 'LUKS\xba\xbe'],
    [512, 'LABELONE'],
    [32769, 'CD001'],
    [0, 'hsqs'],
  ];

  it('random bytes behind a real signature never crash the probe', async () => {
    const { probeFilesystem } = await import('../formats/fs-probe/index.js');
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...SIGNATURES),
        fc.array(fc.record({ at: fc.nat({ max: 70000 }), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 200 }),
        fc.integer({ min: 512, max: 200_000 }),
        fc.boolean(),
        async ([offset, magic], pokes, size, fatJump) => {
          const bytes = new Uint8Array(size);
          for (const poke of pokes) if (poke.at < size) bytes[poke.at] = poke.value;
          if (fatJump) bytes[0] = 0xeb;
          for (let index = 0; index < magic.length && offset + index < size; index++) bytes[offset + index] = magic.charCodeAt(index);
          try {
            await probeFilesystem(new MemoryDevice(bytes, { writable: false }));
          } catch (error) {
            if (!(error instanceof PlatterError)) throw error;
          }
        },
      ),
      { numRuns: 300 },
    );
  });
});
