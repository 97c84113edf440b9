/** Random qcow2 layouts for model tests: the create options and sizes a scenario runs on. */

import { execFile } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { expect } from 'vitest';

/** One image layout, with v3-only options off on v2 images as qemu requires. */
export interface Qcow2Layout {
  clusterBits: number;
  compat: '0.10' | '1.1';
  refcountBits: number;
  extendedL2: boolean;
  lazy: boolean;
  size: number;
  /** A backing file's size, or none. */
  backingSize: number | undefined;
}

/** Bounds for the layouts drawn. */
export interface LayoutBounds {
  /** Smallest refcount_order (0 = 1-bit refcounts). */
  minRefcountOrder: number;
  maxSectors: number;
  maxBackingSectors: number;
}

/** Layouts over cluster sizes 512 B..64 KiB, both versions, every refcount width allowed. */
export function qcow2Layout(bounds: LayoutBounds): fc.Arbitrary<Qcow2Layout> {
  return fc
    .record({
      clusterBits: fc.integer({ min: 9, max: 16 }),
      compat: fc.constantFrom('0.10' as const, '1.1' as const),
      refcountOrder: fc.integer({ min: bounds.minRefcountOrder, max: 6 }),
      extendedL2: fc.boolean(),
      lazy: fc.boolean(),
      sectors: fc.integer({ min: 1, max: bounds.maxSectors }),
      backingSectors: fc.option(fc.integer({ min: 1, max: bounds.maxBackingSectors }), { nil: undefined }),
    })
    .map((r) => {
      const v3 = r.compat === '1.1';
      return {
        clusterBits: r.clusterBits,
        compat: r.compat,
        refcountBits: v3 ? 2 ** r.refcountOrder : 16,
        // Extended L2 needs v3 and clusters of at least 16 KiB.
        extendedL2: v3 && r.extendedL2 && r.clusterBits >= 14,
        lazy: v3 && r.lazy,
        size: r.sectors * 512,
        backingSize: r.backingSectors === undefined ? undefined : r.backingSectors * 512,
      };
    });
}

/** The `create -o` options that make an image of `layout`. */
export function layoutCreateOptions(layout: Qcow2Layout): Record<string, string> {
  return {
    cluster_size: String(2 ** layout.clusterBits),
    compat: layout.compat,
    refcount_bits: String(layout.refcountBits),
    extended_l2: layout.extendedL2 ? 'on' : 'off',
    lazy_refcounts: layout.lazy ? 'on' : 'off',
  };
}

/** Bytes that depend on position and seed, never zero (so a lost write cannot read as "unwritten"). */
export function modelPattern(length: number, seed: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) out[i] = (seed * 31 + i * 7 + (i >> 9)) & 0xff || 1;
  return out;
}

/** Runs qemu-img in `cwd`; resolves with its status and output, never rejects. */
export function runQemuImg(cwd: string, args: string[]): Promise<{ status: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile('qemu-img', args, { cwd, maxBuffer: 1 << 24 }, (error, stdout, stderr) => {
      resolve({ status: error ? Number((error as { code?: number }).code ?? -1) : 0, stdout, stderr });
    });
  });
}

/** Runs `check` over every item, `workers` at a time (qemu-img runs beside each other on the test machine). */
export async function checkAll<T>(items: readonly T[], workers: number, check: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await check(items[next++]!);
  };
  await Promise.all(Array.from({ length: workers }, worker));
}

/** Writes one model sequence's image as `image.qcow2` (and its backing file as `backingName`) into a directory of its own. */
export function writeSequenceDir(root: string, index: number, file: Uint8Array, backing: Uint8Array | undefined, backingName: string): string {
  const dir = join(root, `s${index}`);
  mkdirSync(dir, { recursive: true });
  if (backing) writeFileSync(join(dir, backingName), backing);
  writeFileSync(join(dir, 'image.qcow2'), file);
  return dir;
}

/** qemu-img check --output=json on `image.qcow2` in `dir`: exit status 0, no leaks, no corruptions. */
export async function expectQemuCheckClean(dir: string, label: string): Promise<void> {
  const check = await runQemuImg(dir, ['check', '--output=json', 'image.qcow2']);
  expect(check.status, `${check.stdout}${check.stderr}\n${label}`).toBe(0);
  const report = JSON.parse(check.stdout) as Record<string, number>;
  expect(report['leaks'] ?? 0, label).toBe(0);
  expect(report['corruptions'] ?? 0, label).toBe(0);
}
