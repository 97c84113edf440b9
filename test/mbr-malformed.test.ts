/**
 * Hostile EBR chains: each defect ends the chain (or skips the entry) with a
 * warning, keeps every good partition, and returns quickly.
 */

import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { encodeMbr, parseMbr, MAX_EBR_CHAIN } from '../formats/mbr/index.js';
import type { PartitionRecord, PartitionTable } from '../formats/partition-table/model.js';
import { readPartitionTable } from '../src/engine/partition-table.js';

const SECTOR = 512;
const DISK_SECTORS = 20000;

function part(number: number, start: number, size: number, type = '83'): PartitionRecord {
  return { number, start, size, type };
}

/** A disk with primary 1, extended 2 (1000–9999) and logicals 5, 6, 7. */
function chainDisk(extra: PartitionRecord[] = []): MemoryDevice {
  const table: PartitionTable = {
    label: 'dos',
    id: '0x01020304',
    sectorSize: SECTOR,
    warnings: [],
    partitions: [part(1, 63, 900), part(2, 1000, 9000, '5'), part(5, 1063, 100), part(6, 2000, 100), part(7, 3000, 100), ...extra],
  };
  const device = new MemoryDevice(DISK_SECTORS * SECTOR);
  const contents = device.contents();
  for (const write of encodeMbr(table)) contents.set(write.data, write.offset);
  return device;
}

/** Sets the link entry (second entry) of the EBR at `ebrLba` to start `relative` (to the extended start). */
function setLink(device: MemoryDevice, ebrLba: number, relative: number, size = 200): void {
  const view = new DataView(device.contents().buffer);
  const entry = ebrLba * SECTOR + 0x1be + 16;
  view.setUint8(entry + 4, 0x05);
  view.setUint32(entry + 8, relative, true);
  view.setUint32(entry + 12, size, true);
}

async function parse(device: MemoryDevice): Promise<PartitionTable> {
  const table = await parseMbr(device, await device.read(0, SECTOR));
  if (!table) throw new Error('no table');
  return table;
}

const numbers = (table: PartitionTable) => table.partitions.map((partition) => partition.number);

describe('malformed MBR and EBR chains', { timeout: 1000 }, () => {
  it('a well-formed chain parses without warnings', async () => {
    const table = await parse(chainDisk());
    expect(table.warnings).toEqual([]);
    expect(numbers(table)).toEqual([1, 2, 5, 6, 7]);
    expect(table.partitions.map((partition) => partition.start)).toEqual([63, 1000, 1063, 2000, 3000]);
  });

  it('a cycle back to an EBR already read', async () => {
    const device = chainDisk();
    setLink(device, 2999, 0); // the last EBR links back to the first
    const table = await parse(device);
    expect(numbers(table)).toEqual([1, 2, 5, 6, 7]);
    expect(table.warnings.join('\n')).toMatch(/already read \(a cycle\)/);
  });

  it('a link back to an EBR already read is a cycle', async () => {
    const device = chainDisk();
    setLink(device, 2999, 1999 - 1000); // back to EBR 6
    const table = await parse(device);
    expect(numbers(table)).toEqual([1, 2, 5, 6, 7]);
    expect(table.warnings.join('\n')).toMatch(/already read \(a cycle\)/);
  });

  it('an extended partition starting at sector 0 (the MBR itself): no logical partitions, as sfdisk', async () => {
    const device = chainDisk();
    // The start LBA of MBR entry 2 (the extended partition) set to 0.
    new DataView(device.contents().buffer).setUint32(0x1be + 16 + 8, 0, true);
    const table = await parse(device);
    expect(numbers(table)).toEqual([1, 2]);
    expect(table.warnings).toEqual(['Bad offset in primary extended partition.']);
  });

  it('a link outside the extended partition', async () => {
    const device = chainDisk();
    setLink(device, 1999, 15000); // EBR of 6 links past the extended end
    const table = await parse(device);
    expect(numbers(table)).toEqual([1, 2, 5, 6]);
    expect(table.warnings.join('\n')).toMatch(/outside the extended partition/);
  });

  it('entries past the end of the disk', async () => {
    const device = chainDisk();
    const view = new DataView(device.contents().buffer);
    view.setUint8(0x1be + 2 * 16 + 4, 0x83); // slot 3
    view.setUint32(0x1be + 2 * 16 + 8, 19000, true);
    view.setUint32(0x1be + 2 * 16 + 12, 5000, true);
    const logicalEntry = 2999 * SECTOR + 0x1be; // logical 7's data entry runs past the extended end
    view.setUint32(logicalEntry + 12, 0xfffffff0, true);
    const table = await parse(device);
    // Kept, as sfdisk lists it, with a warning: the image holds only its start.
    expect(numbers(table)).toEqual([1, 2, 3, 5, 6]);
    expect(table.warnings.join('\n')).toMatch(/partition 3 .* past the end of the disk \(\d+ sectors\): only its first \d+ sectors are in the image/);
    expect(table.warnings.join('\n')).toMatch(/outside the extended partition/);
  });

  it('two extended entries: the first chain is followed, the second listed', async () => {
    const device = chainDisk();
    const view = new DataView(device.contents().buffer);
    view.setUint8(0x1be + 3 * 16 + 4, 0x0f); // slot 4, a second extended
    view.setUint32(0x1be + 3 * 16 + 8, 12000, true);
    view.setUint32(0x1be + 3 * 16 + 12, 1000, true);
    const table = await parse(device);
    expect(numbers(table)).toEqual([1, 2, 4, 5, 6, 7]);
    expect(table.warnings.join('\n')).toMatch(/second extended partition/);
  });

  it('an EBR without 55AA ends the chain', async () => {
    const device = chainDisk();
    device.contents()[2999 * SECTOR + 0x1fe] = 0;
    const table = await parse(device);
    expect(numbers(table)).toEqual([1, 2, 5, 6]);
    expect(table.warnings.join('\n')).toMatch(/no 55AA signature/);
  });

  it('an MBR without 55AA is no partition table', async () => {
    const device = chainDisk();
    device.contents()[0x1ff] = 0;
    expect(await readPartitionTable(device)).toBeUndefined();
  });

  it(`a chain longer than ${MAX_EBR_CHAIN} EBRs stops at the limit`, async () => {
    const logicals = Array.from({ length: 400 }, (_, index) => part(5 + index, 1002 + index * 2, 1));
    const table: PartitionTable = { label: 'dos', id: '0x1', sectorSize: SECTOR, warnings: [], partitions: [part(1, 1000, 1000, '5'), ...logicals] };
    const device = new MemoryDevice(4000 * SECTOR);
    for (const write of encodeMbr(table)) device.contents().set(write.data, write.offset);
    const parsed = await parse(device);
    expect(parsed.partitions.length).toBe(1 + MAX_EBR_CHAIN);
    expect(parsed.warnings.join('\n')).toMatch(/longer than 256/);
  });
});
