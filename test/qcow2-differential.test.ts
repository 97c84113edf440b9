/**
 * qcow2 images made by qemu-img/qemu-io, read through platter: every byte of the
 * virtual disk equals `qemu-img convert -O raw`, and `platter info --output=json`
 * equals `qemu-img info --output=json`.
 */

import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSnapshotView, Qcow2Image } from '../formats/qcow2/index.js';
import { openImageFile } from '../src/node/open.js';
import { QCOW2_CASES } from './helpers/qcow2-cases.js';
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

const CLI = resolve('dist/cli.cjs');
const haveQemu = qcow2ToolAvailable('qemu-img') && qcow2ToolAvailable('qemu-io');

function platterJson(cwd: string, args: string[]): unknown {
  const result = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
  if (result.status !== 0) throw new Error(`platter ${args.join(' ')} failed: ${result.stderr}`);
  return JSON.parse(result.stdout);
}

function qemuJson(cwd: string, args: string[]): unknown {
  return JSON.parse(sh(cwd, 'qemu-img', args));
}

describe.skipIf(!haveQemu)('qcow2 differential matrix', () => {
  const temp = qcow2TempDir();
  afterAll(() => temp.cleanup());

  QCOW2_CASES.forEach((testCase, index) => {
    describe(testCase.name, () => {
      let cwd = '';
      let image = '';
      let expected: Uint8Array = new Uint8Array(0);
      beforeAll(() => {
        const dir = join(temp.dir, `case-${index}`);
        mkdirSync(dir);
        ({ cwd, image } = testCase.build(dir));
        expected = qemuRawBytes(cwd, image);
      });

      it('reads every byte as qemu-img convert does', async () => {
        const opened = await openImageFile(resolve(cwd, image));
        try {
          expect(opened.format).toBe('qcow2');
          // An odd chunk size makes reads straddle clusters and L2 tables.
          const actual = await readWholeImage(opened, 777_777);
          expect(actual.length).toBe(expected.length);
          expect(firstDifference(actual, expected)).toBe(-1);
        } finally {
          await opened.close();
        }
      });

      it('block status covers the disk and agrees with the data', async () => {
        const warnings: string[] = [];
        const opened = await openImageFile(resolve(cwd, image), { warn: (w) => warnings.push(w) });
        try {
          const extents = await opened.blockStatus(0, opened.size);
          testCase.check?.(opened, extents, warnings);
          let at = 0;
          for (const extent of extents) {
            expect(extent.start).toBe(at);
            at += extent.length;
            if (extent.kind !== 'data') {
              // Zero and unallocated runs must read as zeros: never report data as absent.
              expect(expected.subarray(extent.start, extent.start + extent.length).some((b) => b !== 0)).toBe(false);
            }
          }
          expect(at).toBe(opened.size);
        } finally {
          await opened.close();
        }
      });

      it.skipIf(testCase.mapDiffers !== undefined)('block status equals qemu-img map', async () => {
        const opened = await openImageFile(resolve(cwd, image));
        try {
          expect(extentsAsQemuMap(await opened.blockStatus(0, opened.size))).toEqual(qemuMap(cwd, image));
        } finally {
          await opened.close();
        }
      });

      for (const snapshot of testCase.snapshots ?? []) {
        it(`reads snapshot ${snapshot} as qemu-img convert -l does`, async () => {
          const expected = qemuRawBytes(cwd, image, snapshot);
          const opened = await openImageFile(resolve(cwd, image));
          try {
            const view = await openSnapshotView(opened as Qcow2Image, snapshot);
            const actual = await readWholeImage(view, 1 << 20);
            await view.close();
            expect(firstDifference(actual, expected)).toBe(-1);
          } finally {
            await opened.close();
          }
        });
      }

      it('info --output=json equals qemu-img info, to the byte', () => {
        expect(platterJson(cwd, ['info', '--output=json', image])).toEqual(qemuJson(cwd, ['info', '--output=json', image]));
        const text = spawnSync(process.execPath, [CLI, 'info', '--output=json', image], { cwd, encoding: 'utf8', timeout: 120_000 }).stdout;
        expect(text).toBe(sh(cwd, 'qemu-img', ['info', '--output=json', image]));
      });

      it('info text equals qemu-img info', () => {
        const args = ['info', ...(testCase.backingChain ? ['--backing-chain'] : []), image];
        const result = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
        expect(result.stdout).toBe(sh(cwd, 'qemu-img', args));
      });

      // The human table stops at a compressed cluster in both tools, with the same exit status.
      it.skipIf(testCase.mapDiffers !== undefined)('map text and JSON equal qemu-img map', () => {
        for (const args of [['map', image], ['map', '--output=json', image]]) {
          const result = spawnSync(process.execPath, [CLI, ...args], { cwd, encoding: 'utf8', timeout: 120_000 });
          const qemu = shStatus(cwd, 'qemu-img', args);
          expect(result.stdout).toBe(qemu.stdout);
          expect(result.status).toBe(qemu.status);
        }
      });

      if (testCase.backingChain) {
        it('info --backing-chain --output=json equals qemu-img info', () => {
          const args = ['info', '--backing-chain', '--output=json', image];
          expect(platterJson(cwd, args)).toEqual(qemuJson(cwd, args));
        });
      }
    });
  });
});
