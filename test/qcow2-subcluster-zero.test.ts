/**
 * Zero writes to part of an extended-L2 cluster, against qemu-io write -z -u
 * (zeroing that may free whole clusters, as platter zeroes) on a
 * copy of the same image: the subclusters a range covers whole get their zero
 * bit and the edges are written as zeros, so qemu-img map (without host
 * offsets) lists the same zero and data runs, qemu-img compare finds the
 * images equal, and qemu-img check finds them clean. Clusters before the
 * zeroing hold data, holes, or a compressed stream (which has no bitmap).
 */

import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import type { Qcow2Image } from '../formats/qcow2/image.js';
import { openImageFile } from '../src/node/open.js';
import { qcow2TempDir, qcow2ToolAvailable, qemuDataRuns, qemuIoOn, sh, shStatus } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const CLUSTER = 64 * 1024;
const SIZE = 8 * CLUSTER;
const SECTOR = 512;

describe.skipIf(!haveQemu)('zeroing part of an extended-L2 cluster', () => {
  const temp = qcow2TempDir();
  afterAll(() => temp.cleanup());
  const io = (image: string, commands: string[]) => qemuIoOn(temp.dir, image, commands);
  /**
   * Runs of data and zeros: host offsets may differ, and so may whether a
   * zeroed whole cluster keeps an L2 entry (qemu marks an unallocated one
   * zero, platter leaves it unallocated; both read zeros).
   */
  const layout = (image: string) => qemuDataRuns(temp.dir, image);

  it('gives the same map, contents and clean check as qemu-io write -z -u', async () => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `extended_l2=on,cluster_size=${CLUSTER}`, 'base.qcow2', String(SIZE)]);
    // Data in clusters 0-2 and 5, cluster 3 half written (subclusters allocated and not), 4 and 6-7 holes.
    io('base.qcow2', ['write -P 0x11 0 192k', `write -P 0x22 ${3 * CLUSTER} 32k`, `write -P 0x44 ${5 * CLUSTER} 64k`]);
    let run = 0;
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.record({ start: fc.integer({ min: 0, max: SIZE / SECTOR - 1 }), sectors: fc.integer({ min: 1, max: (3 * CLUSTER) / SECTOR }) }), {
          minLength: 1,
          maxLength: 3,
        }),
        async (zeros) => {
          const ranges = zeros.map(({ start, sectors }) => ({ offset: start * SECTOR, length: Math.min(sectors * SECTOR, SIZE - start * SECTOR) }));
          const [q, p] = [`q${run}.qcow2`, `p${run}.qcow2`];
          run++;
          copyFileSync(join(temp.dir, 'base.qcow2'), join(temp.dir, q));
          copyFileSync(join(temp.dir, 'base.qcow2'), join(temp.dir, p));
          io(q, ranges.map(({ offset, length }) => `write -z -u ${offset} ${length}`));
          const image = (await openImageFile(join(temp.dir, p), { writable: true })) as Qcow2Image;
          for (const { offset, length } of ranges) await image.writeZeroes(offset, length);
          await image.close();
          expect(layout(p)).toEqual(layout(q));
          expect(shStatus(temp.dir, 'qemu-img', ['compare', p, q]).status).toBe(0);
          expect(shStatus(temp.dir, 'qemu-img', ['check', p]).status).toBe(0);
        },
      ),
      { numRuns: 40 },
    );
  });
});
