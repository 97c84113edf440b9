/**
 * Oracle helpers for qcow2 differential tests: run qemu-img/qemu-io in a temp
 * directory, and read images through platter for comparison.
 */

import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Extent, Image } from '../../src/core/image.js';

/**
 * True when `tool` runs here. Missing locally: a visible warning and the caller
 * skips. Missing in CI (CI=true): an error, so the suite fails instead.
 */
export function qcow2ToolAvailable(tool: string): boolean {
  const probe = spawnSync(tool, ['--version'], { stdio: 'ignore' });
  if (!probe.error && probe.status === 0) return true;
  if (process.env.CI === 'true') throw new Error(`${tool} is required in CI but is not installed`);
  console.warn(`WARNING: ${tool} not found; skipping qcow2 differential tests`);
  return false;
}

/** Runs a command in `cwd`; returns stdout; throws with stderr on failure. */
export function sh(cwd: string, command: string, args: string[]): string {
  return execFileSync(command, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** Runs a command and returns its status and output without throwing. */
export function shStatus(cwd: string, command: string, args: string[]): { status: number; stdout: string; stderr: string } {
  const result = spawnSync(command, args, { cwd, encoding: 'utf8' });
  return { status: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** A fresh temporary directory, and a function that removes it. */
export function qcow2TempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'platter-qcow2-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** qemu-img convert -O raw of `image` (optionally a snapshot), read back. */
export function qemuRawBytes(dir: string, image: string, snapshot?: string): Uint8Array {
  const out = join(dir, `oracle-${Math.random().toString(36).slice(2)}.raw`);
  const args = ['convert', '-O', 'raw', ...(snapshot ? ['-l', snapshot] : []), image, out];
  sh(dir, 'qemu-img', args);
  const bytes = new Uint8Array(readFileSync(out));
  rmSync(out);
  return bytes;
}

/** Reads the whole virtual disk through platter in `chunk`-byte reads. */
export async function readWholeImage(image: Image, chunk = 1 << 20): Promise<Uint8Array> {
  const out = new Uint8Array(image.size);
  for (let at = 0; at < image.size; at += chunk) {
    out.set(await image.read(at, Math.min(chunk, image.size - at)), at);
  }
  return out;
}

/** Index of the first differing byte, or -1 (a readable failure message instead of a giant diff). */
export function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** One entry of `qemu-img map --output=json`, the fields compared. */
export interface QemuMapEntry {
  start: number;
  length: number;
  depth: number;
  present: boolean;
  zero: boolean;
  data: boolean;
  offset?: number;
}

/** Reads `qemu-img map --output=json`, keeping the compared fields. */
export function qemuMap(cwd: string, image: string): QemuMapEntry[] {
  const entries = JSON.parse(sh(cwd, 'qemu-img', ['map', '--output=json', image])) as QemuMapEntry[];
  return entries.map(({ start, length, depth, present, zero, data, offset }) =>
    offset === undefined ? { start, length, depth, present, zero, data } : { start, length, depth, present, zero, data, offset },
  );
}

/**
 * qemu-img map as runs of stored data and of zeros, host offsets aside: what
 * two tools that place clusters differently (and may or may not keep an L2
 * entry for a zeroed cluster) must still agree on.
 */
export function qemuDataRuns(cwd: string, image: string): { start: number; length: number; data: boolean }[] {
  const runs: { start: number; length: number; data: boolean }[] = [];
  for (const { start, length, data } of qemuMap(cwd, image)) {
    const last = runs[runs.length - 1];
    if (last && last.data === data) last.length += length;
    else runs.push({ start, length, data });
  }
  return runs;
}

/** Runs qemu-io commands on a qcow2 image in `cwd`. */
export function qemuIoOn(cwd: string, image: string, commands: string[]): string {
  return sh(cwd, 'qemu-io', ['-f', 'qcow2', ...commands.flatMap((command) => ['-c', command]), image]);
}

/**
 * platter extents in qemu-img map's terms: unallocated runs count the layers
 * searched (qemu counts from 0), and qemu merges runs its fields cannot tell apart.
 */
export function extentsAsQemuMap(extents: Extent[]): QemuMapEntry[] {
  const out: QemuMapEntry[] = [];
  for (const e of extents) {
    const entry: QemuMapEntry = {
      start: e.start,
      length: e.length,
      depth: e.kind === 'unallocated' ? e.depth - 1 : e.depth,
      present: e.kind !== 'unallocated',
      zero: e.kind !== 'data',
      data: e.kind === 'data',
    };
    if (e.hostOffset !== undefined) entry.offset = e.hostOffset;
    const last = out[out.length - 1];
    const continues =
      last &&
      last.depth === entry.depth &&
      last.present === entry.present &&
      last.zero === entry.zero &&
      last.data === entry.data &&
      (last.offset === undefined ? entry.offset === undefined : entry.offset === last.offset + last.length);
    if (continues) last.length += entry.length;
    else out.push(entry);
  }
  return out;
}
