/**
 * GPT against sgdisk and sfdisk: tables sgdisk makes (names, attributes, a hybrid
 * MBR, 4096-byte sectors) parse to sfdisk's JSON; tables platter writes pass
 * `sgdisk -v`; attribute bits no script can name survive a rewrite.
 */

import { readFile, writeFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { listPartitions, sfdiskJson, sfdiskScript, writePartitions } from '../src/ops/partitions.js';
import { readPartitionTable } from '../src/engine/partition-table.js';
import { renderPartitions } from '../src/cli/render/partitions.js';
import { GptEntry, GptHeader } from '../formats/gpt/index.js';
import { crc32 } from '../src/core/crc32.js';
import { mapLimited, mustRun, requireTools, runTool, tempDir } from './helpers/partition-tools.js';
import { withImage } from './helpers/partition-images.js';

async function platterJson(path: string, device = path): Promise<unknown> {
  return withImage(path, async (image) => sfdiskJson(await listPartitions(image, { device, probe: false })));
}

describe('GPT structs and CRC', () => {
  it('header is 92 bytes, entry 128', () => {
    expect(GptHeader.size).toBe(92);
    expect(GptEntry.size).toBe(128);
  });
  it('CRC-32 matches the standard check value', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
  });
});

describe('GPT against sgdisk and sfdisk', () => {
  let available = false;
  let dir = '';
  let cleanup = async () => {};
  beforeAll(async () => {
    available = await requireTools('sgdisk', 'sfdisk', 'truncate');
    ({ dir, cleanup } = await tempDir('gpt'));
  });
  afterAll(() => cleanup());

  async function sgdiskImage(name: string, args: string[]): Promise<string> {
    const path = join(dir, name);
    await mustRun('truncate', ['-s', '16M', path]);
    await mustRun('sgdisk', [...args, path]);
    return path;
  }

  it('names, attributes and types parse to sfdisk --json and list as sfdisk -l -uS', async () => {
    if (!available) return;
    const path = await sgdiskImage('named.img', [
      '-n1:2048:+4M', '-t1:EF00', '-c1:EFI system', '-A1:set:0', '-A1:set:48', '-A1:set:50',
      '-n2:0:+2M', '-t2:8300', '-c2:root fs', '-A2:set:2', '-A2:set:60', '-A2:set:10',
      '-n5:0:+1M', '-t5:8200', '-c5:café ❯ "q" \\', '-n6:0:+1M', '-t6:A504', '-n7:0:+1M', '-t7:0700', '-n8:0:+1M', '-t8:FD00',
      // A type sfdisk has no name for ("unknown"), and an attribute bit no name covers (attrs="").
      '-n9:0:+1M', '-t9:12345678-1234-1234-1234-123456789ABC', '-A9:set:5',
      '-n3:0:0', '-t3:8E00', '-c3:lvm',
    ]);
    expect(await platterJson(path)).toEqual(JSON.parse(await mustRun('sfdisk', ['--json', path])));
    const listed = await withImage(path, async (image) => renderPartitions(await listPartitions(image, { device: path, probe: false })));
    expect(listed).toBe(await mustRun('sfdisk', ['-l', '-uS', path]));
    // sfdisk -d writes each byte of a name outside printable ASCII as \xNN; platter reads that back as sfdisk does.
    const dumped = await withImage(path, async (image) => sfdiskScript(await listPartitions(image, { device: path, probe: false })));
    expect(dumped).toBe(await mustRun('sfdisk', ['-d', path]));
    const rewritten = join(dir, 'named-rewritten.img');
    const bySfdisk = join(dir, 'named-sfdisk.img');
    await mustRun('truncate', ['-s', '16M', rewritten, bySfdisk]);
    await withImage(rewritten, (image) => writePartitions(image, dumped!), true);
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', bySfdisk], dumped);
    expect((await mustRun('sfdisk', ['-d', rewritten])).split(rewritten).join('DISK')).toBe((await mustRun('sfdisk', ['-d', bySfdisk])).split(bySfdisk).join('DISK'));
    // A table without partitions dumps without a blank line after its header.
    const empty = await sgdiskImage('empty.img', ['-o']);
    expect(await withImage(empty, async (image) => sfdiskScript(await listPartitions(image, { device: empty, probe: false })))).toBe(await mustRun('sfdisk', ['-d', empty]));
    if (!(await requireTools('qemu-img'))) return;
    const qcow2 = join(dir, 'named.qcow2');
    await mustRun('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', path, qcow2]);
    expect(await platterJson(qcow2, path)).toEqual(await platterJson(path));
  });

  it('a small GPT with 64 entries (grain and table-length keys) reads as sfdisk reads it, and platter writes it the same', async () => {
    if (!available) return;
    const script = 'label: gpt\nlabel-id: 3675BFE5-FD21-4D49-911B-D98519023011\ntable-length: 64\nsize=1M, type=L, uuid=02636364-F081-414D-A881-445FAD7759AE\n';
    const bySfdisk = join(dir, 'small.img');
    const byPlatter = join(dir, 'small-p.img');
    await mustRun('truncate', ['-s', '3M', bySfdisk, byPlatter]);
    await mustRun('sfdisk', ['-q', '--no-reread', '--no-tell-kernel', bySfdisk], script);
    expect(await platterJson(bySfdisk)).toEqual(JSON.parse(await mustRun('sfdisk', ['--json', bySfdisk])));
    const dumped = await withImage(bySfdisk, async (image) => sfdiskScript(await listPartitions(image, { device: bySfdisk, probe: false })));
    expect(dumped).toBe(await mustRun('sfdisk', ['-d', bySfdisk]));
    await withImage(byPlatter, (image) => writePartitions(image, dumped!), true);
    expect((await mustRun('sfdisk', ['-d', byPlatter])).split(byPlatter).join(bySfdisk)).toBe(dumped);
  });

  it('a hybrid MBR still reads as the GPT', async () => {
    if (!available) return;
    const path = await sgdiskImage('hybrid.img', ['-n1:2048:+4M', '-t1:0700', '-c1:data', '-n2:0:+4M', '-t2:8300', '-h', '1:2']);
    const sector0 = (await readFile(path)).subarray(0x1be, 0x1fe);
    expect([...sector0].filter((_, index) => index % 16 === 4).filter((type) => type !== 0).length).toBeGreaterThan(1);
    expect(await platterJson(path)).toEqual(JSON.parse(await mustRun('sfdisk', ['--json', path])));
  });

  it('sector 0 decides as in libfdisk: a 0xEE entry behind a FAT boot sector or of size 0 finds the GPT; no 55AA, no GPT', async () => {
    if (!(available && (await requireTools('mkfs.vfat')))) return;
    const listings = async (path: string) => {
      const ours = await withImage(path, async (image) => renderPartitions(await listPartitions(image, { device: path, probe: false })));
      return { ours, theirs: await mustRun('sfdisk', ['-l', '-uS', path]) };
    };
    // sgdisk keeps the boot code of sector 0, here a FAT boot sector left by mkfs.vfat.
    const fat = join(dir, 'fat-pmbr.img');
    await mustRun('truncate', ['-s', '16M', fat]);
    await mustRun('mkfs.vfat', [fat]);
    await mustRun('sgdisk', ['-g', '-o', '-n1:0:+4M', '-n2:0:0', fat]);
    const fatListing = await listings(fat);
    expect(fatListing.theirs).toMatch(/Disklabel type: gpt/);
    expect(fatListing.ours).toBe(fatListing.theirs);
    const plain = await sgdiskImage('sector0.img', ['-n1:2048:+4M', '-t1:8300', '-n2:0:+2M']);
    const bytes = await readFile(plain);
    bytes.fill(0, 0x1be + 12, 0x1be + 16); // the protective entry's size: 0
    await writeFile(join(dir, 'ee-size0.img'), bytes);
    bytes[510] = 0; // no 55AA: sfdisk sees no partition table at all
    await writeFile(join(dir, 'no-55aa.img'), bytes);
    const sizeZero = await listings(join(dir, 'ee-size0.img'));
    expect(sizeZero.theirs).toMatch(/Disklabel type: gpt/);
    expect(sizeZero.ours).toBe(sizeZero.theirs.replace(/^GPT PMBR size mismatch.*\n/, ''));
    const unsigned = await listings(join(dir, 'no-55aa.img'));
    expect(unsigned.theirs).not.toMatch(/Disklabel type/);
    expect(await withImage(join(dir, 'no-55aa.img'), (image) => readPartitionTable(image))).toBeUndefined();
  });

  it('headers are checked as libfdisk checks them: a usable range out of order or past the disk fails, and the backup is only looked for at the end', async () => {
    if (!available) return;
    const path = await sgdiskImage('sane.img', ['-n1:2048:+4M', '-t1:8300', '-n2:0:+2M']);
    const bytes = await readFile(path);
    const labelOf = async (name: string, data: Uint8Array) => {
      const copy = join(dir, name);
      await writeFile(copy, data);
      const theirs = JSON.parse(await mustRun('sfdisk', ['--json', copy])) as { partitiontable: { label: string; firstlba?: number } };
      const ours = await withImage(copy, (image) => readPartitionTable(image));
      return { ours: [ours?.label, ours?.firstLba], theirs: [theirs.partitiontable.label, theirs.partitiontable.firstlba] };
    };
    // A primary whose first usable LBA lies after its last (CRC made good again): the backup is used.
    const unordered = Uint8Array.from(bytes);
    const header = new DataView(unordered.buffer, 512, 92);
    header.setBigUint64(40, 30000n, true);
    header.setBigUint64(48, 20000n, true);
    header.setUint32(16, 0, true);
    header.setUint32(16, crc32(unordered.subarray(512, 512 + 92)), true);
    const fromBackup = await labelOf('unordered.img', unordered);
    expect(fromBackup.theirs).toEqual(['gpt', 34]);
    expect(fromBackup.ours).toEqual(fromBackup.theirs);
    // Cut short: the primary's usable range runs past the end and the backup is gone, so sfdisk sees only the MBR.
    const cut = await labelOf('cut.img', bytes.subarray(0, 8 * 1024 * 1024));
    expect(cut.theirs[0]).toBe('dos');
    expect(cut.ours[0]).toBe('dos');
    // Grown, with the primary's entries damaged: the backup its header names is not at the end, so neither tool finds it.
    const grown = new Uint8Array(32 * 1024 * 1024);
    grown.set(bytes);
    grown[1024 + 40] = grown[1024 + 40]! ^ 0xff;
    const lost = await labelOf('grown.img', grown);
    expect(lost.theirs[0]).toBe('dos');
    expect(lost.ours[0]).toBe('dos');
    // A damaged backup: both tools keep the primary and say so.
    const badBackup = Uint8Array.from(bytes);
    badBackup[bytes.length - 512 + 40] = badBackup[bytes.length - 512 + 40]! ^ 0xff;
    const damaged = join(dir, 'bad-backup.img');
    await writeFile(damaged, badBackup);
    expect((await runTool('sfdisk', ['-l', damaged])).stderr).toMatch(/backup GPT table is corrupt/);
    expect((await withImage(damaged, (image) => readPartitionTable(image)))?.warnings).toEqual([`the backup GPT at LBA ${bytes.length / 512 - 1} is corrupt; the primary is used`]);
  });

  it('4096-byte sectors (sgdisk fixture) parse to sfdisk --json', async () => {
    const path = join(dir, 'gpt-4k.img');
    await writeFile(path, gunzipSync(await readFile(new URL('../fixtures/gpt-4k.img.gz', import.meta.url))));
    const expected = JSON.parse((await readFile(new URL('../fixtures/gpt-4k.json', import.meta.url), 'utf8')).replace(/DEVICE/g, 'disk0'));
    expect(await platterJson(path, 'disk0')).toEqual(expected);
  });

  it('a corrupt primary header falls back to the backup', async () => {
    if (!available) return;
    const path = await sgdiskImage('backup.img', ['-n1:2048:+4M', '-t1:8300', '-c1:one', '-n2:0:+2M', '-t2:8200']);
    const expected = await platterJson(path);
    const bytes = await readFile(path);
    bytes.fill(0, 512, 1024);
    await writeFile(path, bytes);
    const table = await withImage(path, (image) => readPartitionTable(image));
    expect(table?.warnings.join('\n')).toMatch(/primary GPT header is corrupt; using the backup/);
    const { warnings: _ignored, ...rest } = ((await platterJson(path)) as { partitiontable: Record<string, unknown> }).partitiontable;
    expect({ partitiontable: rest }).toEqual(expected);
  });

  it('a GPT written by platter passes sgdisk -v and reads back in sfdisk', async () => {
    if (!available) return;
    const path = join(dir, 'written.img');
    await mustRun('truncate', ['-s', '16M', path]);
    const script = [
      'label: gpt',
      'label-id: 11111111-2222-4333-8444-555555555555',
      ',4M,U',
      'size=2M, type=L, name="root fs", attrs="LegacyBIOSBootable GUID:60"',
      'size=1M, type=S, uuid=AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE',
      ',,V',
      '',
    ].join('\n');
    await withImage(path, (image) => writePartitions(image, script), true);
    const verify = await mustRun('sgdisk', ['-v', path]);
    expect(verify).toMatch(/No problems found/);
    expect(await platterJson(path)).toEqual(JSON.parse(await mustRun('sfdisk', ['--json', path])));
    const parsed = JSON.parse(await mustRun('sfdisk', ['--json', path])).partitiontable;
    expect(parsed.partitions.map((partition: { name?: string }) => partition.name)).toEqual(['', 'root fs', '', ''].map((name) => name || undefined));
    expect(parsed.partitions[2].uuid).toBe('AAAAAAAA-BBBB-4CCC-8DDD-EEEEEEEEEEEE');
  });

  it('attribute bits no script can name survive a rewrite', async () => {
    if (!available) return;
    const path = await sgdiskImage('attrs.img', ['-n1:2048:+4M', '-t1:8300', '-A1:set:10', '-A1:set:33', '-A1:set:49']);
    const before = await withImage(path, (image) => readPartitionTable(image));
    const script = await withImage(path, async (image) => sfdiskScript(await listPartitions(image, { device: path })));
    await withImage(path, (image) => writePartitions(image, script!), true);
    const after = await withImage(path, (image) => readPartitionTable(image));
    expect(before?.partitions[0]?.attributes).toBe((1n << 10n) | (1n << 33n) | (1n << 49n));
    expect(after?.partitions[0]?.attributes).toBe(before?.partitions[0]?.attributes);
    expect(await mustRun('sgdisk', ['-v', path])).toMatch(/No problems found/);
  });

  it('100 random GPT layouts written by platter: sfdisk reads them as platter does, sgdisk -v finds no problems', async () => {
    if (!available) return;
    const types = ['L', 'S', 'U', 'V', 'R', 'H', 'EBD0A0A2-B9E5-4433-87C0-68B6B72699C7', '21686148-6449-6E6F-744E-656564454649'];
    const layout = fc.record({
      id: fc.uuid(),
      parts: fc.array(
        fc.record({
          gap: fc.integer({ min: 0, max: 4096 }),
          size: fc.integer({ min: 1, max: 8192 }),
          type: fc.constantFrom(...types),
          uuid: fc.uuid(),
          name: fc.stringMatching(/^[A-Za-z0-9 _.-]{0,36}$/),
          attrs: fc.subarray(['RequiredPartition', 'NoBlockIOProtocol', 'LegacyBIOSBootable', 'GUID:48', 'GUID:55', 'GUID:63']),
        }),
        { maxLength: 16 },
      ),
    });
    const seed = Date.now() % 0x7fffffff;
    const layouts = fc.sample(layout, { numRuns: 100, seed });
    const problems = await mapLimited(layouts, 4, async ({ id, parts }, index) => {
      const path = join(dir, `random-${index}.img`);
      let position = 2048;
      const lines = ['label: gpt', `label-id: ${id}`, 'unit: sectors'];
      for (const part of parts) {
        position += part.gap;
        const fields = [`start=${position}`, `size=${part.size}`, `type=${part.type}`, `uuid=${part.uuid}`, `name="${part.name}"`];
        if (part.attrs.length > 0) fields.push(`attrs="${part.attrs.join(' ')}"`);
        lines.push(fields.join(', '));
        position += part.size;
      }
      await mustRun('truncate', ['-s', String((position + 2048) * 512), path]);
      await withImage(path, (image) => writePartitions(image, lines.join('\n') + '\n'), true);
      const ours = JSON.stringify(await platterJson(path));
      const theirs = JSON.stringify(JSON.parse(await mustRun('sfdisk', ['--json', path])));
      if (ours !== theirs) return `${lines.join('\n')}\n${ours}\n${theirs}`;
      const verify = await mustRun('sgdisk', ['-v', path]);
      return /No problems found/.test(verify) ? undefined : `${lines.join('\n')}\n${verify}`;
    });
    expect(problems.filter(Boolean), `seed ${seed}`).toEqual([]);
  }, 120_000);

  it('a GPT with 4096-byte sectors written by platter passes sgdisk -v on a 4K loop device (root only, else skipped)', async () => {
    if (!available) return;
    const path = join(dir, 'written-4k.img');
    await mustRun('truncate', ['-s', '16M', path]);
    const script = 'label: gpt\nsector-size: 4096\nlabel-id: 0E1B4C6A-2D4F-4B8E-9F3A-5C6D7E8F9A0B\n,1M,L\nsize=2M, type=U, name="esp"\n,,V\n';
    const written = await withImage(path, (image) => writePartitions(image, script), true);
    const reread = await withImage(path, (image) => readPartitionTable(image));
    expect(reread).toEqual({ ...written, warnings: [] });
    expect(reread?.sectorSize).toBe(4096);
    if (process.getuid?.() !== 0) {
      console.warn('SKIPPED: checking a 4K GPT with sgdisk needs root and a loop device');
      return;
    }
    const loop = await runTool('losetup', ['-f', '--show', '-b', '4096', path]);
    if (loop.code !== 0) {
      console.warn(`SKIPPED: no 4K loop device here: ${loop.stderr.trim()}`);
      return;
    }
    const device = loop.stdout.trim();
    try {
      expect(await mustRun('sgdisk', ['-v', device])).toMatch(/No problems found/);
      const theirs = JSON.parse(await mustRun('sfdisk', ['--json', device]));
      expect(await platterJson(path, device)).toEqual(theirs);
    } finally {
      await runTool('losetup', ['-d', device]);
    }
  });
});
