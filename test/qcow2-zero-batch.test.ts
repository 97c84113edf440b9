/**
 * Zero writes over many whole clusters (which platter batches: one write of
 * the changed L2 entries, then one refcount release per run of host
 * clusters), against qemu-io write -z -u on a copy of the same image. The
 * images hold data, holes, zero clusters and compressed streams (which may
 * share a host cluster), sometimes a snapshot that shares their clusters, and
 * sometimes a backing file (shorter than the image) full of data.
 * Afterwards qemu-img compare finds the two equal, qemu-img check finds
 * platter's clean (no leak, no refcount off by one), a snapshot still reads as
 * it did, and on version 3 images the runs of data and zeros are qemu's.
 */

import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { Qcow2Image } from '../formats/qcow2/image.js';
import { openImageFile } from '../src/node/open.js';
import { qcow2TempDir, qcow2ToolAvailable, qemuDataRuns, qemuIoOn, sh, shStatus } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const SECTOR = 512;

const layoutArb = fc.record({
  clusterSize: fc.constantFrom(512, 4096, 65536),
  compat: fc.constantFrom('0.10', '1.1'),
  extendedL2: fc.boolean(),
  snapshot: fc.boolean(),
  /** A backing file full of data under the image. */
  backing: fc.boolean(),
});

/** What the image holds before zeroing: pieces in clusters (data, compressed, zero). */
const pieceArb = fc.record({
  kind: fc.constantFrom('data', 'data', 'compressed', 'zero'),
  cluster: fc.integer({ min: 0, max: 63 }),
  clusters: fc.integer({ min: 1, max: 8 }),
});

/** Zero writes in sectors, mostly long ones. */
const zeroArb = fc.record({ sector: fc.integer({ min: 0, max: 1023 }), sectors: fc.integer({ min: 1, max: 4096 }) });

describe.skipIf(!haveQemu)('zeroing many whole clusters', () => {
  const temp = qcow2TempDir();
  afterAll(() => temp.cleanup());
  const io = (image: string, commands: string[]) => qemuIoOn(temp.dir, image, commands);
  const dataRuns = (image: string) => qemuDataRuns(temp.dir, image);
  const snapshotBytes = (image: string) => {
    sh(temp.dir, 'qemu-img', ['convert', '-l', 'kept', '-O', 'raw', image, `${image}.snap`]);
    return readFileSync(join(temp.dir, `${image}.snap`));
  };

  it('reads, checks and maps as after qemu-io write -z -u', async () => {
    let run = 0;
    await fc.assert(
      fc.asyncProperty(layoutArb, fc.array(pieceArb, { minLength: 1, maxLength: 6 }), fc.array(zeroArb, { minLength: 1, maxLength: 3 }), async (layout, pieces, zeros) => {
        const { clusterSize, compat } = layout;
        const extendedL2 = layout.extendedL2 && compat === '1.1' && clusterSize >= 16384;
        const size = 64 * clusterSize;
        const base = `b${run}.qcow2`;
        const [q, p] = [`q${run}.qcow2`, `p${run}.qcow2`];
        run++;
        const backing = layout.backing ? ['-b', `under${run - 1}.qcow2`, '-F', 'qcow2'] : [];
        if (layout.backing) {
          // Shorter than the image, so some clusters read zeros past its end.
          sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', `under${run - 1}.qcow2`, String(size - 8 * clusterSize)]);
          io(`under${run - 1}.qcow2`, [`write -P 0x77 0 ${size - 8 * clusterSize}`]);
        }
        sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${clusterSize},compat=${compat},extended_l2=${extendedL2 ? 'on' : 'off'}`, ...backing, base, String(size)]);
        // Compressed writes first, each cluster once: qemu-io compresses only into clusters that hold nothing.
        const compressed = new Set<number>();
        for (const { kind, cluster, clusters } of pieces) {
          if (kind !== 'compressed') continue;
          for (let at = cluster; at < Math.min(64, cluster + clusters); at++) compressed.add(at);
        }
        const fills = [...compressed].map((cluster) => `write -c -P ${(cluster % 200) + 1} ${cluster * clusterSize} ${clusterSize}`);
        pieces.forEach(({ kind, cluster, clusters }, index) => {
          const offset = cluster * clusterSize;
          const length = Math.min(clusters, 64 - cluster) * clusterSize;
          if (kind === 'zero') fills.push(`write -z ${offset} ${length}`);
          else if (kind === 'data') fills.push(`write -P ${index + 1} ${offset} ${length}`);
        });
        io(base, fills);
        if (layout.snapshot) sh(temp.dir, 'qemu-img', ['snapshot', '-c', 'kept', base]);
        copyFileSync(join(temp.dir, base), join(temp.dir, q));
        copyFileSync(join(temp.dir, base), join(temp.dir, p));
        const sectors = size / SECTOR;
        const ranges = zeros.map(({ sector, sectors: count }) => {
          const start = Math.min(sector, sectors - 1);
          return { offset: start * SECTOR, length: Math.min(count, sectors - start) * SECTOR };
        });
        io(q, ranges.map(({ offset, length }) => `write -z -u ${offset} ${length}`));
        const image = (await openImageFile(join(temp.dir, p), { writable: true })) as Qcow2Image;
        for (const { offset, length } of ranges) await image.writeZeroes(offset, length);
        await image.close();
        expect(shStatus(temp.dir, 'qemu-img', ['compare', p, q]).status).toBe(0);
        const check = shStatus(temp.dir, 'qemu-img', ['check', p]);
        expect(check.status, check.stdout + check.stderr).toBe(0);
        // With extended L2 entries the metadata may differ where the bytes do not: a request that also
        // touches part of a compressed cluster makes qemu write zeros over all of it (its fallback), and
        // part of a cluster a snapshot shares keeps zero bits in qemu's copy where platter stores zeros.
        // qcow2-subcluster-zero.test.ts compares extended-L2 layouts on cases without those two.
        if (compat === '1.1' && !extendedL2) expect(dataRuns(p)).toEqual(dataRuns(q));
        if (layout.snapshot) expect(snapshotBytes(p).equals(snapshotBytes(q))).toBe(true);
      }),
      { numRuns: 40 },
    );
  });
});
