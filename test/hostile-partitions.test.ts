/**
 * Hostile partition tables through `platter partitions --output=json`: EBR
 * chains that loop, go backwards or run on; GPTs with bad CRCs, entry counts
 * of 2^32 − 1 and absurd sizes. Each answers like sfdisk-style tools do — a
 * warning and the partitions that can still be trusted — or with a specific
 * error; within 2 s, under 200 MiB, without changing the file.
 */

import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectInTime, runCliMeasured, MAX_RSS_BYTES, type CliMeasured } from './helpers/hostile-child.js';
import {
  DISK_SECTORS,
  GPT,
  blankDisk,
  gptDisk,
  mbrWithExtended,
  pokeGpt,
  saveDisk,
  writeEbr,
  writeTable,
} from './helpers/hostile-partitions.js';
import { tempDir } from './helpers/tools.js';

interface PartitionCase {
  name: string;
  disk: () => Uint8Array;
  /** A warning that must be printed. */
  warning?: RegExp;
  /** Start sectors of the partitions listed, in order. */
  starts?: number[];
  /** Or a specific error. */
  error?: { code: string; message: RegExp };
}

const LAST = DISK_SECTORS - 1;

function mbrCases(): PartitionCase[] {
  const ext = 1000;
  const withChain = (build: (disk: Uint8Array) => void, extStart = ext, extSize = 1000) => () => {
    const disk = mbrWithExtended(extStart, extSize);
    build(disk);
    return disk;
  };
  return [
    { name: 'EBR linking to itself', disk: withChain((d) => writeEbr(d, ext, { type: 0x83, lbaStart: 2, sectors: 10 }, 0)), warning: /EBR at sector 1000 links to sector 1000, an EBR already read \(a cycle\); chain ends there/, starts: [1, 1000, 1002] },
    {
      name: 'EBR cycle of two',
      disk: withChain((d) => (writeEbr(d, ext, { type: 0x83, lbaStart: 2, sectors: 10 }, 100), writeEbr(d, ext + 100, { type: 0x83, lbaStart: 2, sectors: 10 }, 0))),
      warning: /EBR at sector 1100 links to sector 1000, an EBR already read \(a cycle\)/,
      starts: [1, 1000, 1002, 1102],
    },
    {
      name: 'EBR linking backwards',
      disk: withChain((d) => (writeEbr(d, ext, { type: 0x83, lbaStart: 2, sectors: 10 }, 200), writeEbr(d, ext + 200, { type: 0x83, lbaStart: 2, sectors: 10 }, 100))),
      // A backward link is followed (sfdisk writes them); this one leads to a sector with no EBR.
      warning: /EBR at sector 1100 \(byte 563200\) has no 55AA signature; chain ends there/,
      starts: [1, 1000, 1002, 1202],
    },
    { name: 'EBR linking past the extended partition', disk: withChain((d) => writeEbr(d, ext, { type: 0x83, lbaStart: 2, sectors: 10 }, 5000)), warning: /links to sector 6000, outside the extended partition/, starts: [1, 1000, 1002] },
    {
      name: 'EBR chain of 300 entries',
      disk: withChain((d) => {
        for (let index = 0; index < 300; index++) writeEbr(d, ext + index * 3, { type: 0x83, lbaStart: 1, sectors: 1 }, (index + 1) * 3);
      }),
      warning: /EBR chain is longer than 256 entries; stopped at EBR 1768/,
      starts: [1, 1000, ...Array.from({ length: 256 }, (_, index) => ext + index * 3 + 1)],
    },
    { name: 'EBR without a signature', disk: withChain((d) => writeTable(d, ext, [{ type: 0x83, lbaStart: 2, sectors: 10 }], false)), warning: /EBR at sector 1000 \(byte 512000\) has no 55AA signature; chain ends there/, starts: [1, 1000] },
    { name: 'logical partition outside the extended one', disk: withChain((d) => writeEbr(d, ext, { type: 0x83, lbaStart: 5000, sectors: 10 })), warning: /logical partition in EBR at sector 1000 \(start 6000, 10 sectors\) lies outside the extended partition; ignored/, starts: [1, 1000] },
    { name: 'extended type in an EBR data entry', disk: withChain((d) => writeEbr(d, ext, { type: 0x05, lbaStart: 2, sectors: 10 })), warning: /EBR at sector 1000 has an extended type in its data entry; ignored/, starts: [1, 1000] },
    {
      name: 'primary partition past the end of the disk',
      disk: () => (((d) => (writeTable(d, 0, [{ type: 0x83, lbaStart: 1900, sectors: 1000 }]), d))(blankDisk())),
      warning: /partition 1 \(start 1900, 1000 sectors\) ends past the end of the disk \(2048 sectors\): only its first 148 sectors are in the image/,
      starts: [1900],
    },
    {
      name: 'primary partition of 2^32-1 sectors',
      disk: () => (((d) => (writeTable(d, 0, [{ type: 0x83, lbaStart: 1, sectors: 0xffffffff }, { type: 0x83, lbaStart: 100, sectors: 10 }]), d))(blankDisk())),
      warning: /partition 1 \(start 1, 4294967295 sectors\) ends past the end of the disk/,
      starts: [1, 100],
    },
    {
      name: 'two extended partitions',
      disk: () => (((d) => (writeTable(d, 0, [{ type: 0x05, lbaStart: 100, sectors: 100 }, { type: 0x0f, lbaStart: 300, sectors: 100 }]), d))(blankDisk())),
      warning: /partition 2 is a second extended partition; only partition 1's chain is followed/,
    },
    {
      name: 'extended partition at sector 0 (the MBR itself: no logical partitions, as sfdisk)',
      disk: () => (((d) => (writeTable(d, 0, [{ type: 0x83, lbaStart: 1, sectors: 900 }, { type: 0x05, lbaStart: 0, sectors: 2000 }]), d))(blankDisk())),
      warning: /Bad offset in primary extended partition\./,
    },
  ];
}

const ENTRIES_AT = 2 * 512;

/** Flips the low bit of one byte: enough to break a CRC. */
function flip(disk: Uint8Array, at: number): void {
  disk[at] = (disk[at] ?? 0) ^ 1;
}

function gptCases(): PartitionCase[] {
  const gpt = (build: (disk: Uint8Array) => void) => () => {
    const disk = gptDisk();
    build(disk);
    return disk;
  };
  const backup = (what: 'header' | 'entry array') => new RegExp(`the primary GPT ${what} is corrupt; using the backup at LBA ${LAST}`);
  /** Rewrites entry 1's LBAs in both copies with correct CRCs. */
  const entryLbas = (first: bigint, last: bigint) => (disk: Uint8Array) => {
    for (const [headerLba, entriesLba] of [[1, 2], [LAST, LAST - 32]] as const) {
      const view = new DataView(disk.buffer, entriesLba * 512);
      view.setBigUint64(32, first, true);
      view.setBigUint64(40, last, true);
      pokeGpt(disk, headerLba, GPT.entriesCrc, crc32(disk.subarray(entriesLba * 512, entriesLba * 512 + 128 * 128)));
    }
  };
  return [
    { name: 'GPT primary header with a bad CRC', disk: gpt((d) => (flip(d, 512 + GPT.headerCrc))), warning: backup('header'), starts: [40] },
    { name: 'GPT primary entry array with a bad CRC', disk: gpt((d) => (flip(d, ENTRIES_AT + 128 * 5))), warning: backup('entry array'), starts: [40] },
    {
      name: 'GPT with bad CRCs in both copies',
      disk: gpt((d) => ((flip(d, 512 + GPT.headerCrc)), (flip(d, LAST * 512 + GPT.headerCrc)))),
      warning: /the MBR has a GPT protective entry but no valid GPT was found/,
      starts: [1],
    },
    { name: 'GPT primary entry count 2^32-1', disk: gpt((d) => pokeGpt(d, 1, GPT.entryCount, 0xffffffff)), warning: backup('header'), starts: [40] },
    {
      name: 'GPT entry count 2^32-1 in both copies',
      disk: gpt((d) => (pokeGpt(d, 1, GPT.entryCount, 0xffffffff), pokeGpt(d, LAST, GPT.entryCount, 0xffffffff))),
      warning: /no valid GPT was found/,
      starts: [1],
    },
    { name: 'GPT primary entry size 0', disk: gpt((d) => pokeGpt(d, 1, GPT.entrySize, 0)), warning: backup('header'), starts: [40] },
    { name: 'GPT primary entry size 2^31', disk: gpt((d) => pokeGpt(d, 1, GPT.entrySize, 0x80000000)), warning: backup('header'), starts: [40] },
    { name: 'GPT primary entry array past the end of the disk', disk: gpt((d) => pokeGpt(d, 1, GPT.entriesLba, 2n ** 40n, 8)), warning: backup('header'), starts: [40] },
    { name: 'GPT primary header size 2^32-1', disk: gpt((d) => pokeGpt(d, 1, GPT.headerSize, 0xffffffff)), warning: backup('header'), starts: [40] },
    { name: 'GPT primary MyLBA pointing elsewhere', disk: gpt((d) => pokeGpt(d, 1, GPT.myLba, 5n, 8)), warning: backup('header'), starts: [40] },
    { name: 'GPT primary AlternateLBA above 2^53', disk: gpt((d) => pokeGpt(d, 1, GPT.alternateLba, 2n ** 62n, 8)), warning: backup('header'), starts: [40] },
    { name: 'GPT primary entry array LBA above 2^53', disk: gpt((d) => pokeGpt(d, 1, GPT.entriesLba, 2n ** 62n, 8)), warning: backup('header'), starts: [40] },
    { name: 'GPT entry ending past the disk', disk: gpt(entryLbas(40n, 5000n)), warning: /GPT partition 1 \(LBA 40–5000\) ends past the end of the disk/, starts: [40] },
    { name: 'GPT entry ending before it starts', disk: gpt(entryLbas(99n, 40n)), warning: /GPT partition 1 \(LBA 99–40\) ends before it starts or past any disk; ignored/, starts: [] },
    { name: 'GPT entry LBA above 2^53', disk: gpt(entryLbas(40n, 2n ** 60n)), warning: /GPT partition 1 \(LBA 40–1152921504606846976\) ends before it starts or past any disk; ignored/, starts: [] },
  ];
}

const cases = [...mbrCases(), ...gptCases()];
const tmp = tempDir('platter-hostile-parts-');
const runs = new Map<string, { run: CliMeasured; unchanged: boolean }>();

beforeAll(async () => {
  const prepared = cases.map((entry, index) => {
    const dir = join(tmp.dir, `case${index}`);
    mkdirSync(dir);
    const path = saveDisk(dir, entry.disk());
    return { entry, path, hash: hashOf(path) };
  });
  for (let index = 0; index < prepared.length; index += 2) {
    const pair = prepared.slice(index, index + 2);
    const results = await Promise.all(pair.map(({ path }) => runCliMeasured(['partitions', '--output=json', path])));
    pair.forEach(({ entry, path, hash }, at) => runs.set(entry.name, { run: results[at]!, unchanged: hashOf(path) === hash }));
  }
}, 120_000);

afterAll(() => tmp.cleanup());

function hashOf(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

describe('hostile partition tables', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', (name, entry) => {
    const { run, unchanged } = runs.get(name)!;
    expect(run.stderr).not.toMatch(/internal error|\n\s+at /);
    expectInTime(run);
    expect(run.maxRssBytes).toBeLessThan(MAX_RSS_BYTES);
    expect(unchanged, 'the file was modified').toBe(true);
    if (entry.error) {
      expect(run.status).not.toBe(0);
      expect(JSON.parse(run.stdout).error.code).toBe(entry.error.code);
      expect(run.stderr).toMatch(/^platter: \/.*disk\.img: /);
      expect(run.stderr).toMatch(entry.error.message);
      return;
    }
    expect(run.status, run.stderr).toBe(0);
    if (entry.warning) expect(run.stderr).toMatch(entry.warning);
    if (entry.starts) {
      const listed = (JSON.parse(run.stdout).partitiontable.partitions ?? []) as Array<{ start: number }>;
      expect(listed.map((p) => p.start)).toEqual(entry.starts);
    }
  });
});
