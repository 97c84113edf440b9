/**
 * LVM2 inside a partition (a PV made by lvm2's tools, fixtures/make-lvm.sh):
 * the linear LV's offset finds its ext4 filesystem; the scattered LV is reported
 * as not mountable by offset. Plus the metadata parser on its own, whole-disk
 * PVs, and volume groups over two PVs built in memory (test/helpers/lvm-images.ts).
 */

import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import { mountOffsets, selectTarget } from '../src/ops/mount-offset.js';
import { formatPvUuid, lvPlacement, parseConfig, readPhysicalVolume, volumeGroupOf } from '../formats/lvm/index.js';
import { LVM_INITIAL_CRC } from '../formats/lvm/label.js';
import { crc32Update } from '../src/core/crc32.js';
import { writePartitions } from '../src/ops/partitions.js';
import { mustRun, requireTools, tempDir } from './helpers/partition-tools.js';
import { memoryDisk, withImage } from './helpers/partition-images.js';
import { PE_START_BYTES, physicalVolume } from './helpers/lvm-images.js';

const MiB = 1024 * 1024;

async function fixture(): Promise<Buffer> {
  return gunzipSync(await readFile(new URL('../fixtures/lvm-in-mbr.img.gz', import.meta.url)));
}

describe('LVM2 logical volumes', () => {
  let dir = '';
  let cleanup = async () => {};
  let image = '';
  beforeAll(async () => {
    ({ dir, cleanup } = await tempDir('lvm'));
    image = join(dir, 'lvm.img');
    await writeFile(image, await fixture());
  });
  afterAll(() => cleanup());

  it('the linear LV has one offset, and the filesystem is there', async () => {
    const offsets = await withImage(image, (disk) => mountOffsets(disk));
    const linear = selectTarget(offsets, 'vgfix/linear');
    // partition at 1 MiB + pe_start 2048 sectors + extent 0; three 1 MiB extents
    expect(linear).toMatchObject({ kind: 'lv', partition: 1, contiguous: true, offset: 2 * MiB, sizelimit: 3 * MiB });
    expect(linear.filesystem).toMatchObject({ type: 'ext4', label: 'lvdata', uuid: '7d3c9b1a-5e2f-4a6b-8c0d-1e2f3a4b5c6d' });
    expect(selectTarget(offsets, 'LABEL=lvdata').name).toBe('vgfix/linear');
  });

  it('the scattered LV is reported as not mountable by offset', async () => {
    const offsets = await withImage(image, (disk) => mountOffsets(disk));
    const scattered = selectTarget(offsets, 'vgfix/scattered');
    expect(scattered.contiguous).toBe(false);
    expect(scattered.offset).toBeUndefined();
    expect(scattered.sizelimit).toBeUndefined();
    expect(scattered.reason).toMatch(/not contiguous/);
  });

  it('debugfs reads the known file from the linear LV slice; blkid agrees on the PV', async () => {
    if (!(await requireTools('debugfs', 'blkid'))) return;
    const offsets = await withImage(image, (disk) => mountOffsets(disk));
    const linear = selectTarget(offsets, 'vgfix/linear');
    const bytes = await readFile(image);
    const slice = join(dir, 'lv.slice');
    await writeFile(slice, bytes.subarray(linear.offset!, linear.offset! + linear.sizelimit!));
    expect(await mustRun('debugfs', ['-R', 'cat /hello.txt', slice])).toBe('hello from a logical volume\n');
    const pv = selectTarget(offsets, '1');
    const blkid = await mustRun('blkid', ['-p', '-o', 'export', '-O', String(pv.offset), '-S', String(pv.sizelimit), image]);
    expect(blkid).toContain(`UUID=${pv.filesystem?.uuid}`);
    expect(blkid).toContain('TYPE=LVM2_member');
  });

  it('a PV on the whole disk (no partition table) gives the disk and its LVs', async () => {
    const whole = join(dir, 'whole-pv.img');
    await writeFile(whole, (await fixture()).subarray(MiB));
    const offsets = await withImage(whole, (disk) => mountOffsets(disk));
    expect(offsets.targets[0]).toMatchObject({ name: 'disk', offset: 0, filesystem: { type: 'LVM2_member' } });
    expect(selectTarget(offsets, 'vgfix/linear')).toMatchObject({ offset: MiB, sizelimit: 3 * MiB });
  });

  it('reads the PV label and metadata', async () => {
    const bytes = await fixture();
    const pv = await readPhysicalVolume(new MemoryDevice(new Uint8Array(bytes.subarray(MiB)), { writable: false }));
    expect(pv?.uuid).toBe('ABCDEF-ghij-klmn-opqr-stuv-wxyz-012345');
    expect(pv?.volumeGroup?.name).toBe('vgfix');
    expect(pv?.volumeGroup?.extentSize).toBe(2048);
    expect(pv?.volumeGroup?.logicalVolumes.map((lv) => lv.name).sort()).toEqual(['linear', 'scattered']);
  });

  it('a corrupt metadata checksum is a warning, not a crash', async () => {
    const bytes = await fixture();
    // Every copy in the ring buffer, so the current one is hit too.
    for (let at = bytes.indexOf('vgfix {'); at >= 0; at = bytes.indexOf('vgfix {', at + 1)) bytes[at + 2] = bytes[at + 2]! ^ 0xff;
    const corrupt = join(dir, 'corrupt.img');
    await writeFile(corrupt, bytes);
    const offsets = await withImage(corrupt, (disk) => mountOffsets(disk));
    expect(offsets.warnings.join('\n')).toMatch(/checksum does not match/);
    expect(offsets.targets.map((target) => target.name)).toEqual(['1']);
  });
});

describe('LVM metadata text', () => {
  const text = `
# a comment
vg0 {
  id = "abc"
  extent_size = 8192   # 4 MiB
  physical_volumes { pv0 { id = "P-1" pe_start = 2048 pe_count = 100 } pv1 { id = "P-2" pe_start = 2048 pe_count = 100 } }
  logical_volumes {
    home { segment_count = 1 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv0", 13] } }
    split { segment_count = 2
      segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv0", 20] }
      segment2 { start_extent = 1 extent_count = 1 type = "striped" stripe_count = 1 stripes = ["pv1", 21] } }
    follow { segment_count = 2
      segment2 { start_extent = 3 extent_count = 2 type = "striped" stripe_count = 1 stripes = ["pv1", 33] }
      segment1 { start_extent = 0 extent_count = 3 type = "striped" stripe_count = 1 stripes = ["pv1", 30] } }
    striped { segment1 { start_extent = 0 extent_count = 4 type = "striped" stripe_count = 2 stripes = ["pv0", 40, "pv1", 40] } }
    thin { segment1 { start_extent = 0 extent_count = 4 type = "thin" } }
  }
}
contents = "Text Format Volume Group"
version = 1
`;
  const vg = volumeGroupOf(parseConfig(text));
  const place = (name: string) => lvPlacement(vg, vg.logicalVolumes.find((lv) => lv.name === name)!);

  it('a linear LV: pe_start + extent × extent_size, in 512-byte sectors', () => {
    expect(place('home')).toEqual({ contiguous: true, pv: 'P-1', offset: (2048 + 13 * 8192) * 512, size: 2 * 8192 * 512 });
  });
  it('segments that follow each other on one PV are one range', () => {
    expect(place('follow')).toEqual({ contiguous: true, pv: 'P-2', offset: (2048 + 30 * 8192) * 512, size: 5 * 8192 * 512 });
  });
  it('two PVs, stripes and thin volumes are not one range', () => {
    expect(place('split')).toMatchObject({ contiguous: false, reason: expect.stringMatching(/more than one physical volume/) });
    expect(place('striped')).toMatchObject({ contiguous: false, reason: expect.stringMatching(/not linear/) });
    expect(place('thin')).toMatchObject({ contiguous: false, reason: expect.stringMatching(/thin/) });
  });
  it('hostile text fails with a corruption or limit error', () => {
    expect(() => parseConfig('vg { a = ')).toThrow(/LVM metadata/);
    expect(() => parseConfig('vg { a = "unterminated }')).toThrow(/not closed/);
    expect(() => parseConfig('a { '.repeat(100))).toThrow(/deeper than/);
    expect(() => parseConfig('x = ' + '['.repeat(100))).toThrow(/deeper than/);
  });
});

describe('volume groups as lvm2 reads them', () => {
  const uuids = ['PV1aaaAAAAbbbbccccddddeeeeffffff', 'PV2aaaAAAAbbbbccccddddeeeeffffff'];
  const linear = (name: string, pv: string, extent: number, count: number, status = '"READ", "WRITE", "VISIBLE"') =>
    `${name} { status = [${status}] segment1 { start_extent = 0 extent_count = ${count} type = "striped" stripe_count = 1 stripes = ["${pv}", ${extent}] } }`;
  const vgText = (seqno: number, lvs: string[], extentSize = 2048) => `vg0 {
  id = "VG0aaa-bbbb-cccc-dddd-eeee-ffff-gggggg"
  seqno = ${seqno}
  extent_size = ${extentSize}
  physical_volumes {
    pv0 { id = "${formatPvUuid(uuids[0]!)}" pe_start = 2048 pe_count = 19 }
    pv1 { id = "${formatPvUuid(uuids[1]!)}" pe_start = 2048 pe_count = 40 }
  }
  logical_volumes {
    ${lvs.join('\n    ')}
  }
}
contents = "Text Format Volume Group"
version = 1
`;
  const current = vgText(4, [
    linear('on1', 'pv0', 0, 3),
    linear('on2', 'pv1', 0, 4),
    linear('moved', 'pv0', 10, 2),
    linear('orig', 'pv0', 3, 2),
    linear('snap', 'pv0', 5, 1, '"READ", "WRITE"'),
    'snapshot0 { status = ["READ"] segment1 { start_extent = 0 extent_count = 2 type = "snapshot" chunk_size = 8 origin = "orig" cow_store = "snap" } }',
    linear('r_rimage_0', 'pv1', 8, 1, '"READ", "WRITE"'),
  ]);
  const stale = vgText(2, [linear('on1', 'pv0', 0, 3), linear('moved', 'pv0', 6, 2)]);

  /** A 64 MiB GPT disk whose partitions 1 (20 MiB at 1 MiB) and 2 (the rest) hold the given PVs. */
  async function twoPvDisk(first: Uint8Array, second: Uint8Array) {
    const { image, device } = memoryDisk(64 * MiB);
    await writePartitions(image, 'label: gpt\nstart=2048, size=40960, type=lvm\nstart=43008, type=lvm\n');
    await device.write(MiB, first);
    await device.write(21 * MiB, second);
    return mountOffsets(image);
  }

  it('one VG over two PVs of the image: each LV once, on the PV holding it, from the newest metadata copy; hidden LVs left out', async () => {
    const offsets = await twoPvDisk(
      physicalVolume(uuids[0]!, 20 * MiB, [{ text: stale }, { text: current }]),
      physicalVolume(uuids[1]!, 42 * MiB, [{ ignored: true }]),
    );
    expect(offsets.warnings).toEqual([]);
    expect(offsets.targets.map((target) => target.name)).toEqual(['1', 'vg0/on1', 'vg0/on2', 'vg0/moved', 'vg0/orig', 'vg0/snap', '2']);
    expect(selectTarget(offsets, 'vg0/on2')).toMatchObject({ partition: 2, offset: 21 * MiB + PE_START_BYTES, sizelimit: 4 * MiB });
    // seqno 4 (the second copy) moved the LV to extent 10; the first copy still says 6.
    expect(selectTarget(offsets, 'vg0/moved')).toMatchObject({ partition: 1, offset: MiB + PE_START_BYTES + 10 * MiB, sizelimit: 2 * MiB });
    expect(selectTarget(offsets, 'vg0/snap')).toMatchObject({ contiguous: false, reason: expect.stringMatching(/copy-on-write store of a snapshot of orig/) });
    expect(selectTarget(offsets, 'vg0/orig')).toMatchObject({ contiguous: true, offset: MiB + PE_START_BYTES + 3 * MiB });
  });

  it('a damaged metadata copy gives way to the other one, with a warning', async () => {
    const first = physicalVolume(uuids[0]!, 20 * MiB, [{ text: current }, { text: current }]);
    first[4096 + 600] = first[4096 + 600]! ^ 0xff; // inside the first copy's text
    const offsets = await twoPvDisk(first, physicalVolume(uuids[1]!, 42 * MiB, []));
    expect(offsets.warnings.join('\n')).toMatch(/a copy of the LVM metadata is unreadable \(LVM metadata text checksum does not match.*another copy is used/);
    expect(selectTarget(offsets, 'vg0/on2')).toMatchObject({ offset: 21 * MiB + PE_START_BYTES });
    // A header that says its area starts elsewhere (checksum made good) is not that area's, as lvm2 sees it.
    const moved = physicalVolume(uuids[0]!, 20 * MiB, [{ text: current }, { text: current }]);
    const header = new DataView(moved.buffer, 4096, 512);
    header.setBigUint64(24, 8192n, true);
    header.setUint32(0, crc32Update(LVM_INITIAL_CRC, moved.subarray(4096 + 4, 4096 + 512)), true);
    const fromSecond = await twoPvDisk(moved, physicalVolume(uuids[1]!, 42 * MiB, []));
    expect(fromSecond.warnings.join('\n')).toMatch(/header says it starts at byte 8192.*another copy is used/);
  });

  it('metadata lvm2 rejects is a warning or a reason, never a negative or unbounded offset', async () => {
    const cases: Array<[string, RegExp]> = [
      [vgText(1, [linear('bad', 'pv0', -4, 1)]), /starts a stripe at extent -4/],
      [vgText(1, [linear('bad', 'pv0', 0, 1)], 0), /extent size of 0/],
    ];
    for (const [text, message] of cases) {
      const offsets = await twoPvDisk(physicalVolume(uuids[0]!, 20 * MiB, [{ text }]), physicalVolume(uuids[1]!, 42 * MiB, []));
      expect(offsets.warnings.join('\n')).toMatch(message);
      expect(offsets.targets.map((target) => target.name)).toEqual(['1', '2']);
    }
    const unknown = await twoPvDisk(physicalVolume(uuids[0]!, 20 * MiB, [{ text: vgText(1, [linear('lost', 'pv9', 0, 1), linear('on1', 'pv0', 0, 1)]) }]), physicalVolume(uuids[1]!, 42 * MiB, []));
    expect(selectTarget(unknown, 'vg0/lost')).toMatchObject({ contiguous: false, reason: expect.stringMatching(/names pv9, which the metadata does not list/) });
    expect(selectTarget(unknown, 'vg0/on1')).toMatchObject({ contiguous: true });
  });
});
