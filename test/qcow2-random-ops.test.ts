/**
 * Random sequences of qemu-io writes, zero writes, discards and compressed
 * writes on random qcow2 layouts: platter reads every byte as qemu-img
 * convert does, and block status equals qemu-img map.
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { openImageFile } from '../src/node/open.js';
import { qcow2SourceData } from './helpers/qcow2-cases.js';
import {
  extentsAsQemuMap,
  firstDifference,
  qcow2TempDir,
  qcow2ToolAvailable,
  qemuMap,
  qemuRawBytes,
  readWholeImage,
  sh,
  shStatus,
} from './helpers/qcow2-oracle.js';

const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');
const SIZE = 2 << 20;
/** Runs per test; raise QCOW2_RANDOM_RUNS locally to search harder. */
const RUNS = Number(process.env.QCOW2_RANDOM_RUNS ?? 25);

const layoutArb = fc.record({
  clusterSize: fc.constantFrom(512, 4096, 32768, 65536, 2097152),
  /** Virtual size in sectors: not always a whole number of clusters. */
  sectors: fc.integer({ min: 1, max: SIZE / 512 }),
  compat: fc.constantFrom('0.10', '1.1'),
  extendedL2: fc.boolean(),
  compression: fc.constantFrom('zlib', 'zstd'),
  backing: fc.boolean(),
});

const opArb = fc.record({
  kind: fc.constantFrom('write', 'zero', 'discard', 'compressed'),
  start: fc.integer({ min: 0, max: SIZE - 1 }),
  length: fc.integer({ min: 1, max: 300_000 }),
  pattern: fc.integer({ min: 1, max: 255 }),
});

type Layout = { clusterSize: number; sectors: number; compat: string; extendedL2: boolean; compression: string; backing: boolean };
type Op = { kind: string; start: number; length: number; pattern: number };

function createOptions(layout: Layout): string {
  const options = [`cluster_size=${layout.clusterSize}`, `compat=${layout.compat}`];
  if (layout.compat === '1.1') {
    options.push(`compression_type=${layout.compression}`);
    if (layout.extendedL2 && layout.clusterSize >= 16384) options.push('extended_l2=on');
  }
  return options.join(',');
}

/** The qemu-io command for an op, aligned where qemu requires it (sectors; whole clusters when compressed). */
function ioCommand(op: Op, clusterSize: number, size: number): string {
  const align = op.kind === 'compressed' ? clusterSize : 512;
  const start = Math.floor((op.start % size) / align) * align;
  const length = Math.max(512, Math.min(Math.ceil(op.length / align) * align, size - start));
  switch (op.kind) {
    case 'write':
      return `write -P ${op.pattern} ${start} ${length}`;
    case 'zero':
      return `write -z ${start} ${length}`;
    case 'discard':
      return `discard ${start} ${length}`;
    default:
      return `write -c -P ${op.pattern} ${start} ${length}`;
  }
}

describe.skipIf(!haveQemu)('qcow2 random operations', () => {
  const temp = qcow2TempDir();
  afterAll(() => temp.cleanup());
  let run = 0;

  it('reads and maps like qemu after any sequence of operations', async () => {
    await fc.assert(
      fc.asyncProperty(layoutArb, fc.array(opArb, { minLength: 1, maxLength: 8 }), async (layout, ops) => {
        const dir = join(temp.dir, `run-${run++}`);
        mkdirSync(dir);
        const size = layout.sectors * 512;
        const backingArgs: string[] = [];
        if (layout.backing) {
          // A whole number of sectors: qemu rounds a raw file's length up to 512 bytes and
          // reports the padding as zeros at the raw layer, which platter's raw format does not.
          writeFileSync(join(dir, 'base.raw'), qcow2SourceData(SIZE - 300_032, run));
          backingArgs.push('-b', 'base.raw', '-F', 'raw');
        }
        sh(dir, 'qemu-img', ['create', '-q', '-f', 'qcow2', '-o', createOptions(layout), ...backingArgs, 'img.qcow2', String(size)]);
        const commands = ops.flatMap((op) => ['-c', ioCommand(op, layout.clusterSize, size)]);
        // qemu-io refuses some operations (a compressed write over allocated clusters) and
        // goes on with the next; the image it leaves is what gets compared.
        shStatus(dir, 'qemu-io', ['-f', 'qcow2', ...commands, 'img.qcow2']);

        let expected: Uint8Array;
        try {
          expected = qemuRawBytes(dir, 'img.qcow2');
        } catch {
          // qemu-io can damage the image itself (seen: a compressed write over two 512-byte
          // clusters, one of them allocated, fails half done); qemu-img then cannot read it either.
          return;
        }
        const image = await openImageFile(join(dir, 'img.qcow2'));
        try {
          expect(firstDifference(await readWholeImage(image, 100_000), expected)).toBe(-1);
          expect(extentsAsQemuMap(await image.blockStatus(0, image.size))).toEqual(qemuMap(dir, 'img.qcow2'));
        } finally {
          await image.close();
        }
      }),
      { numRuns: RUNS },
    );
  }, 60_000 + RUNS * 2_000);
});
