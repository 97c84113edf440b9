/**
 * Data writes to part of an unallocated extended-L2 cluster, against qemu-io
 * write on a copy of the same image: the cluster is allocated, but only the
 * subclusters written are stored and marked (an unaligned edge is filled from
 * what the guest read there), so the two files come out byte for byte the
 * same: the same bitmaps, host offsets and file length. With a backing file
 * the subclusters left out go on reading it.
 */

import { copyFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openImageFile } from '../src/node/open.js';
import { qcow2TempDir, qcow2ToolAvailable, sh, shStatus } from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const CLUSTER = 64 * 1024;
const SIZE = 8 * CLUSTER;
const SECTOR = 512;

describe.skipIf(!haveQemu)('writing part of an unallocated extended-L2 cluster', () => {
  const temp = qcow2TempDir();
  afterAll(() => temp.cleanup());
  const at = (name: string) => join(temp.dir, name);

  beforeAll(() => {
    sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'raw', 'backing.raw', String(SIZE)]);
    sh(temp.dir, 'qemu-io', ['-f', 'raw', '-c', `write -P 0x77 0 ${SIZE}`, 'backing.raw']);
    for (const [name, backing] of [['plain.qcow2', []], ['overlay.qcow2', ['-b', 'backing.raw', '-F', 'raw']]] as const) {
      sh(temp.dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', `extended_l2=on,cluster_size=${CLUSTER}`, ...backing, name, String(SIZE)]);
      // Cluster 2 holds data already, cluster 5 is partly zeroed (zero bits, no allocation).
      sh(temp.dir, 'qemu-io', ['-f', 'qcow2', '-c', `write -P 0x11 ${2 * CLUSTER} 64k`, '-c', `write -z ${5 * CLUSTER + 8192} 8k`, name]);
    }
  });

  for (const base of ['plain.qcow2', 'overlay.qcow2']) {
    it(`${base}: the same file as qemu-io write leaves`, async () => {
      let run = 0;
      await fc.assert(
        fc.asyncProperty(
          fc.array(fc.record({ start: fc.integer({ min: 0, max: SIZE / SECTOR - 1 }), sectors: fc.integer({ min: 1, max: (2 * CLUSTER) / SECTOR }) }), {
            minLength: 1,
            maxLength: 3,
          }),
          async (writes) => {
            const ranges = writes.map(({ start, sectors }, index) => ({
              offset: start * SECTOR,
              length: Math.min(sectors * SECTOR, SIZE - start * SECTOR),
              pattern: 0x21 + index,
            }));
            const [q, p] = [`${base}-q${run}`, `${base}-p${run}`];
            run++;
            copyFileSync(at(base), at(q));
            copyFileSync(at(base), at(p));
            sh(temp.dir, 'qemu-io', ['-f', 'qcow2', ...ranges.flatMap(({ offset, length, pattern }) => ['-c', `write -P ${pattern} ${offset} ${length}`]), q]);
            const image = await openImageFile(at(p), { writable: true });
            for (const { offset, length, pattern } of ranges) await image.write!(offset, new Uint8Array(length).fill(pattern));
            await image.close();
            expect(readFileSync(at(p)).equals(readFileSync(at(q))), JSON.stringify(ranges)).toBe(true);
            expect(shStatus(temp.dir, 'qemu-img', ['check', p]).status).toBe(0);
          },
        ),
        { numRuns: 30 },
      );
    });
  }
});
