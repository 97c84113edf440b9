/**
 * Reference counting over a whole L1 table (qemu's
 * qcow2_update_snapshot_refcount): add or drop one reference to every L2 table
 * and host cluster an L1 table reaches, and set the COPIED flags of the tables
 * walked to match the refcounts afterwards.
 *
 * A refcount counts the L1 tables (active and snapshots) through which a
 * cluster is reached: an L2 table shared by two L1 tables counts its data
 * clusters twice. COPIED means "refcount is exactly 1", so a writer may change
 * the cluster in place.
 */

import { COPIED_HI, clusterType, compressedDescriptor, l1EntryL2Offset, l2EntryHostOffset, l2EntryPosition } from './entries.js';
import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { maxRefcount, refcountBits } from './refcount.js';
import type { WriterHost } from './write.js';

/** +1 (a new snapshot), -1 (a snapshot or old active table going away), 0 (only fix COPIED flags). */
export type RefcountAddend = -1 | 0 | 1;

/** An L1 table in memory, with where it lives in the file. */
export interface L1Walk {
  l1: DataView;
  /** Byte offset of the table in the file (for error messages and write-back). */
  offset: number;
  /** Write the changed L1 entries back to `offset` (false for a table that no longer lives there). */
  writeBack: boolean;
}

/** Sets or clears the COPIED bit of the 8-byte entry at `at`; true when it changed. */
function setCopied(view: DataView, at: number, copied: boolean): boolean {
  const hi = view.getUint32(at);
  const next = (copied ? hi | COPIED_HI : hi & ~COPIED_HI) >>> 0;
  if (next === hi) return false;
  view.setUint32(at, next);
  return true;
}

/** The clusters [first, first+count) an L2 entry holds references to, or undefined. */
function entryClusters(host: WriterHost, table: DataView, index: number, tableOffset: number): { first: number; count: number; compressed: boolean } | undefined {
  const { extendedL2, clusterBits, clusterSize } = host.metadata.geometry;
  const type = clusterType(table, index, extendedL2, false);
  if (type === 'compressed') {
    const descriptor = compressedDescriptor(table, index, clusterBits, extendedL2, tableOffset);
    const first = Math.floor(descriptor.hostOffset / clusterSize);
    const last = Math.floor((descriptor.hostOffset + descriptor.length - 1) / clusterSize);
    return { first, count: last - first + 1, compressed: true };
  }
  const hostOffset = l2EntryHostOffset(table, index, extendedL2, tableOffset);
  return hostOffset === 0 ? undefined : { first: hostOffset / clusterSize, count: 1, compressed: false };
}

/** Adds `addend` to the refcount of `count` clusters from `first`; returns the refcount of the last one afterwards. */
async function adjustClusters(host: WriterHost, first: number, count: number, addend: RefcountAddend): Promise<number> {
  const { allocator, metadata } = host;
  for (let cluster = first; cluster < first + count; cluster++) {
    if (addend > 0) await allocator.retain(cluster * metadata.clusterSize);
    else if (addend < 0) await allocator.release(cluster * metadata.clusterSize, metadata.clusterSize);
  }
  return allocator.refcounts.get(first + count - 1);
}

/** Writes a whole L2 table back to the file. */
async function writeTable(host: WriterHost, tableOffset: number, table: DataView): Promise<void> {
  await host.device.write!(tableOffset, new Uint8Array(table.buffer, table.byteOffset, table.byteLength).slice());
}

/**
 * Walks one L2 table: adjusts its clusters' refcounts and rewrites its COPIED
 * flags. Flags are cleared before references are added and set only after
 * references are dropped, so at no instant (a crash included) does COPIED sit
 * on a cluster whose refcount is above one. The table is written back before
 * the caller adjusts the table's own refcount, so a table about to be freed
 * is never written after it was freed.
 */
async function walkL2(host: WriterHost, tableOffset: number, addend: RefcountAddend): Promise<void> {
  const { extendedL2, l2Entries } = host.metadata.geometry;
  const table = await host.l2Cache.get(tableOffset);
  let changed = false;
  if (addend > 0) {
    // Every cluster reached gets a second reference: none keeps COPIED.
    for (let index = 0; index < l2Entries; index++) {
      if (entryClusters(host, table, index, tableOffset)) changed = setCopied(table, l2EntryPosition(index, extendedL2), false) || changed;
    }
    if (changed) await writeTable(host, tableOffset, table);
    changed = false;
  }
  for (let index = 0; index < l2Entries; index++) {
    const clusters = entryClusters(host, table, index, tableOffset);
    if (!clusters) continue;
    const refcount = await adjustClusters(host, clusters.first, clusters.count, addend);
    // Compressed clusters never carry COPIED: they are always rewritten elsewhere.
    if (!clusters.compressed) changed = setCopied(table, l2EntryPosition(index, extendedL2), refcount === 1) || changed;
  }
  if (changed) await writeTable(host, tableOffset, table);
}

/** Clears COPIED in every L1 entry and writes the table back (before its L2 tables gain references). */
async function clearL1Copied(host: WriterHost, walk: L1Walk): Promise<void> {
  let changed = false;
  for (let l1Index = 0; l1Index < walk.l1.byteLength / 8; l1Index++) changed = setCopied(walk.l1, l1Index * 8, false) || changed;
  if (changed && walk.writeBack) {
    await host.device.write!(walk.offset, new Uint8Array(walk.l1.buffer, walk.l1.byteOffset, walk.l1.byteLength).slice());
  }
}

/**
 * The L2 tables an L1 table reaches, as [l1Index, tableOffset] pairs, after
 * the checks qemu makes: cluster-aligned, and no table reached twice from one
 * L1 table (the refcounts would not add up).
 */
export function l2Tables(l1: DataView, l1Offset: number, clusterSize: number): [number, number][] {
  const tables: [number, number][] = [];
  const seen = new Set<number>();
  for (let l1Index = 0; l1Index < l1.byteLength / 8; l1Index++) {
    const tableOffset = l1EntryL2Offset(l1, l1Index, l1Offset);
    if (tableOffset === 0) continue;
    if (tableOffset % clusterSize !== 0) {
      throw new CorruptImageError(`L2 table offset ${tableOffset} is not cluster-aligned`, l1Offset + l1Index * 8);
    }
    if (seen.has(tableOffset)) throw new CorruptImageError(`L2 table at ${tableOffset} is referenced twice by one L1 table`, l1Offset + l1Index * 8);
    seen.add(tableOffset);
    tables.push([l1Index, tableOffset]);
  }
  return tables;
}

/**
 * Adds `addend` to the refcount of every L2 table and host cluster `walk.l1`
 * reaches and fixes the COPIED flags of its L1 and L2 entries. Tables whose
 * refcount drops to zero are forgotten by the L2 cache.
 */
export async function updateSnapshotRefcount(host: WriterHost, walk: L1Walk, addend: RefcountAddend): Promise<void> {
  const { clusterSize } = host.metadata;
  if (addend > 0) await clearL1Copied(host, walk);
  let l1Changed = false;
  for (const [l1Index, tableOffset] of l2Tables(walk.l1, walk.offset, clusterSize)) {
    await walkL2(host, tableOffset, addend);
    const refcount = await adjustClusters(host, tableOffset / clusterSize, 1, addend);
    if (refcount === 0) host.l2Cache.invalidate(tableOffset);
    l1Changed = setCopied(walk.l1, l1Index * 8, refcount === 1) || l1Changed;
  }
  if (l1Changed && walk.writeBack) {
    await host.device.write!(walk.offset, new Uint8Array(walk.l1.buffer, walk.l1.byteOffset, walk.l1.byteLength).slice());
  }
  await host.device.flush?.();
}

/** Throws unless the refcount of `cluster` can change by `delta` references. */
async function checkRoom(host: WriterHost, cluster: number, delta: number): Promise<void> {
  const { refcounts } = host.allocator;
  const limit = maxRefcount(refcounts.order);
  const refcount = await refcounts.get(cluster);
  if (refcount + delta > limit) {
    throw new LimitExceededError(
      `cluster ${cluster} would need a refcount above ${limit}, the largest ${refcountBits(refcounts.order)}-bit entries hold; ` +
        `no further snapshot can share it (qemu-img amend -o refcount_bits=16 widens the entries)`,
    );
  }
  if (refcount + delta < 0) {
    throw new CorruptImageError(`cluster ${cluster} has refcount ${refcount} but is referenced more often`, cluster * host.metadata.clusterSize);
  }
}

/**
 * Checks, before anything is written, that a walk of `l1` with `addend` can
 * finish: its tables are well formed and inside the file, and every cluster it
 * reaches can take the change (no overflow, no drop below zero). A walk that
 * failed halfway would leave part of the image counted (qemu fails that way,
 * and leaks). Only host clusters packed with several compressed streams are
 * reached more than once, so only those are tallied.
 */
export async function preflightSnapshotRefcount(host: WriterHost, l1: DataView, l1Offset: number, addend: 1 | -1): Promise<void> {
  const { clusterSize, geometry } = host.metadata;
  const packed = new Map<number, number>();
  for (const [, tableOffset] of l2Tables(l1, l1Offset, clusterSize)) {
    await checkRoom(host, tableOffset / clusterSize, addend);
    const table = await host.l2Cache.get(tableOffset);
    for (let index = 0; index < geometry.l2Entries; index++) {
      const clusters = entryClusters(host, table, index, tableOffset);
      if (!clusters) continue;
      for (let cluster = clusters.first; cluster < clusters.first + clusters.count; cluster++) {
        if (!clusters.compressed) await checkRoom(host, cluster, addend);
        else packed.set(cluster, (packed.get(cluster) ?? 0) + addend);
      }
    }
  }
  for (const [cluster, delta] of packed) await checkRoom(host, cluster, delta);
}
