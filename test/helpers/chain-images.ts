/**
 * Backing chains for the chain tests, built with qemu-img and qemu-io so the
 * oracle and platter start from the same bytes.
 */

import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { run } from './tools.js';

/** Runs qemu-io write commands (`write -P 1 0 64k`, ...) on an image. */
export function chainWrite(dir: string, image: string, commands: string[]): void {
  run('qemu-io', [...commands.flatMap((command) => ['-c', command]), image], { cwd: dir });
}

/** Creates a qcow2 image; with `backing`, an overlay on it (qcow2 unless `backingFormat`). */
export function chainCreate(dir: string, image: string, options: { size?: string; backing?: string; backingFormat?: string; unsafe?: boolean } = {}): void {
  const args = ['create', '-q', '-f', 'qcow2'];
  if (options.backing !== undefined) args.push('-b', options.backing, '-F', options.backingFormat ?? 'qcow2');
  if (options.unsafe) args.push('-u');
  args.push(image);
  if (options.size !== undefined) args.push(options.size);
  run('qemu-img', args, { cwd: dir });
}

/**
 * base.qcow2 ← mid.qcow2 ← top.qcow2 (4 MiB) in `dir`, with data at every
 * layer, overlapping writes, zero clusters in the top (one over data, one over
 * nothing in any layer), and other.qcow2 (a standalone image partly like base)
 * to rebase onto.
 */
export function buildChain(dir: string): void {
  chainCreate(dir, 'base.qcow2', { size: '4M' });
  chainWrite(dir, 'base.qcow2', ['write -P 1 0 1M', 'write -P 2 2M 512k', 'write -P 5 3584k 512k']);
  chainCreate(dir, 'mid.qcow2', { backing: 'base.qcow2' });
  chainWrite(dir, 'mid.qcow2', ['write -P 3 512k 1M', 'write -z 3584k 64k']);
  chainCreate(dir, 'top.qcow2', { backing: 'mid.qcow2' });
  chainWrite(dir, 'top.qcow2', ['write -P 4 3M 64k', 'write -z 0 64k', 'write -P 6 100k 3k', 'write -z 1536k 64k']);
  chainCreate(dir, 'other.qcow2', { size: '4M' });
  chainWrite(dir, 'other.qcow2', ['write -P 1 0 256k', 'write -P 9 256k 256k', 'write -P 2 2M 128k']);
}

/** Copies the named files of `from` into a new directory `to`. */
export function copyChain(from: string, to: string, names: string[]): void {
  mkdirSync(to, { recursive: true });
  for (const name of names) copyFileSync(join(from, name), join(to, name));
}

/** qemu-img check's verdict and allocated data clusters. */
export function chainCheck(dir: string, image: string): { clean: boolean; allocated: number } {
  let out: string;
  try {
    out = run('qemu-img', ['check', '--output=json', image], { cwd: dir });
  } catch {
    return { clean: false, allocated: -1 };
  }
  const json = JSON.parse(out) as { 'allocated-clusters': number; corruptions?: number; leaks?: number; 'check-errors': number };
  const clean = (json.corruptions ?? 0) === 0 && (json.leaks ?? 0) === 0 && json['check-errors'] === 0;
  return { clean, allocated: json['allocated-clusters'] ?? 0 };
}

/** True when qemu-img compare finds the guest contents equal. */
export function chainSame(dir: string, a: string, b: string): boolean {
  try {
    run('qemu-img', ['compare', '-q', a, b], { cwd: dir });
    return true;
  } catch {
    return false;
  }
}

/** qemu-img info's backing file name and format. */
export function chainBacking(dir: string, image: string): { name?: string; format?: string } {
  const json = JSON.parse(run('qemu-img', ['info', '--output=json', image], { cwd: dir })) as Record<string, string>;
  return { name: json['backing-filename'], format: json['backing-filename-format'] };
}
