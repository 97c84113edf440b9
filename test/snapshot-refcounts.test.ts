/**
 * Deleting every snapshot gives the image back its refcounts: every cluster in
 * use has refcount 1 again (COPIED everywhere, as check verifies), and clusters
 * freed by deletes are reused by later writes, so repeated
 * snapshot / overwrite / delete rounds stop growing the file.
 */

import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { MemoryDevice } from '../src/core/device.js';
import { checkQcow2 } from '../formats/qcow2/check.js';
import { readMetadata } from '../formats/qcow2/metadata.js';
import type { Qcow2Image } from '../formats/qcow2/image.js';
import { nodeCodecs } from '../src/node/codecs.js';
import { snapshot } from '../src/ops/snapshot.js';
import { firstDifference, qcow2TempDir, qcow2ToolAvailable, sh } from './helpers/qcow2-oracle.js';
import { createQcow2InMemory, openWritable } from './helpers/qcow2-writer.js';

const haveQemu = qcow2ToolAvailable('qemu-img');
const temp = qcow2TempDir();
afterAll(() => temp.cleanup());

const CASES: { label: string; options: Record<string, string>; size: number }[] = [
  { label: 'v2, 64 KiB clusters', options: { compat: '0.10' }, size: 4 << 20 },
  { label: 'v3, 512-byte clusters, 4-bit refcounts', options: { cluster_size: '512', refcount_bits: '4' }, size: 256 << 10 },
  { label: 'v3, extended L2, 16 KiB clusters', options: { cluster_size: '16384', extended_l2: 'on' }, size: 2 << 20 },
];

function fill(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 13 + (i >> 8)) & 0xff || 1;
  return out;
}

/** Every refcount of the file, by cluster index. */
async function allRefcounts(image: Qcow2Image): Promise<number[]> {
  const { refcounts } = image.writer!.host.allocator;
  const values: number[] = [];
  for (let cluster = 0; cluster < refcounts.endCluster; cluster++) values.push(await refcounts.get(cluster));
  return values;
}

async function expectCheckClean(device: MemoryDevice): Promise<void> {
  const report = await checkQcow2(device, await readMetadata(device));
  expect(report.messages.join('\n')).toBe('');
  expect([report.corruptions, report.leaks, report.checkErrors]).toEqual([0, 0, 0]);
}

describe('deleting snapshots returns refcounts to 1 and frees clusters for reuse', () => {
  for (const { label, options, size } of CASES) {
    it(label, async () => {
      const device = await createQcow2InMemory(size, options);
      const image = await openWritable(device);
      const { clusterSize } = image.metadata;
      // Two compressed clusters, then plain data around them.
      for (const cluster of [0, 1]) {
        const stream = await nodeCodecs.deflateRaw!(new Uint8Array(clusterSize).fill(7 + cluster));
        await image.writer!.writeCompressed(cluster * clusterSize, stream);
      }
      await image.write(2 * clusterSize, fill(size / 2, 1));
      await snapshot(image, { kind: 'create', name: 'a' });
      await image.write(clusterSize, fill(size / 4, 2));
      await snapshot(image, { kind: 'create', name: 'b' });
      await snapshot(image, { kind: 'create', name: 'c' });
      await image.write(size / 2, fill(size / 2, 3));
      expect(Math.max(...(await allRefcounts(image)))).toBeGreaterThan(1);
      for (const name of ['b', 'a', 'c']) await snapshot(image, { kind: 'delete', snapshot: name });
      const counts = await allRefcounts(image);
      expect(counts.filter((count) => count > 1)).toEqual([]);
      await expectCheckClean(device);

      // Rounds of snapshot, full overwrite, delete: freed clusters are taken again, the file stops growing.
      const before = device.size;
      const sizes: number[] = [];
      for (let round = 0; round < 4; round++) {
        await snapshot(image, { kind: 'create', name: `round${round}` });
        await image.write(0, fill(size, 10 + round));
        await snapshot(image, { kind: 'delete', snapshot: `round${round}` });
        sizes.push(device.size);
      }
      // A full overwrite needs a disk's worth of clusters: without reuse the file would grow by that much.
      expect(sizes[0]! - before).toBeLessThan(size);
      expect(sizes[3]).toBe(sizes[1]);
      expect(sizes[2]).toBe(sizes[1]);
      expect((await allRefcounts(image)).filter((count) => count > 1)).toEqual([]);
      await image.close();
      await expectCheckClean(device);
      if (haveQemu) {
        const path = join(temp.dir, `refcounts-${CASES.findIndex((c) => c.label === label)}.qcow2`);
        writeFileSync(path, device.contents());
        const report = JSON.parse(sh(temp.dir, 'qemu-img', ['check', '--output=json', path])) as Record<string, number>;
        expect([report['corruptions'] ?? 0, report['leaks'] ?? 0]).toEqual([0, 0]);
      }
    });
  }
});

describe('narrow refcounts', () => {
  it('a snapshot that would overflow a refcount is refused before anything is written', async () => {
    const device = await createQcow2InMemory(256 << 10, { cluster_size: '4096', refcount_bits: '2' });
    const image = await openWritable(device);
    await image.write(0, fill(64 << 10, 5));
    // 2-bit refcounts hold 3: the active state and two snapshots.
    await snapshot(image, { kind: 'create', name: 'one' });
    await snapshot(image, { kind: 'create', name: 'two' });
    const before = device.contents().slice();
    await expect(snapshot(image, { kind: 'create', name: 'three' })).rejects.toMatchObject({ code: 'ELIMIT' });
    expect(firstDifference(device.contents(), before)).toBe(-1);
    await expect(snapshot(image, { kind: 'apply', snapshot: 'one' })).rejects.toMatchObject({ code: 'ELIMIT' });
    await snapshot(image, { kind: 'delete', snapshot: 'one' });
    await snapshot(image, { kind: 'create', name: 'three' });
    expect(image.metadata.snapshots.map((s) => s.name)).toEqual(['two', 'three']);
    await image.close();
    await expectCheckClean(device);
  });
});
