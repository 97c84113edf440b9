/**
 * A bounded LRU cache of L2 tables (qemu's qcow2-cache.c, read side). Lookups
 * for neighbouring guest offsets hit the same table, so a small cache makes
 * block status and reads walk each table once; the bound keeps memory flat
 * whatever the image size.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError } from '../../src/core/errors.js';
import { L2_CACHE_TABLES, MAX_L2_CACHE_BYTES } from './limits.js';

/** How many L2 tables of `clusterSize` bytes the cache holds. */
export function l2CacheCapacity(clusterSize: number): number {
  return Math.max(1, Math.min(L2_CACHE_TABLES, Math.floor(MAX_L2_CACHE_BYTES / clusterSize)));
}

/** L2 tables by host offset, least recently used evicted first. */
export class L2Cache {
  /** Insertion order of a Map is its recency order: a hit moves the entry to the end. */
  private readonly tables = new Map<number, Promise<DataView>>();
  readonly capacity: number;

  constructor(
    private readonly device: BlockDevice,
    private readonly clusterSize: number,
    capacity = l2CacheCapacity(clusterSize),
  ) {
    this.capacity = capacity;
  }

  /** The L2 table at `offset` (cluster-aligned, inside the file), loading it on a miss. */
  get(offset: number): Promise<DataView> {
    const cached = this.tables.get(offset);
    if (cached) {
      this.tables.delete(offset);
      this.tables.set(offset, cached);
      return cached;
    }
    const loading = this.load(offset);
    this.remember(offset, loading);
    // A failed load must not stay cached: the next lookup retries and reports again.
    loading.catch(() => {
      if (this.tables.get(offset) === loading) this.tables.delete(offset);
    });
    return loading;
  }

  /**
   * Starts loading the table at `offset` unless it is held already (and
   * leaves its place in the recency order alone then). A failed load is
   * forgotten; the get that needs the table loads it again and reports.
   */
  prefetch(offset: number): void {
    if (!this.tables.has(offset)) void this.get(offset).catch(() => {});
  }

  /** Replaces a cached table after a writer changed it on disk. */
  put(offset: number, table: DataView): void {
    this.tables.delete(offset);
    this.remember(offset, Promise.resolve(table));
  }

  /** Forgets one table, or all of them. */
  invalidate(offset?: number): void {
    if (offset === undefined) this.tables.clear();
    else this.tables.delete(offset);
  }

  /** Number of tables held now. */
  get size(): number {
    return this.tables.size;
  }

  private remember(offset: number, table: Promise<DataView>): void {
    this.tables.set(offset, table);
    while (this.tables.size > this.capacity) {
      const oldest = this.tables.keys().next().value as number;
      this.tables.delete(oldest);
    }
  }

  private async load(offset: number): Promise<DataView> {
    if (offset > this.device.size || this.clusterSize > this.device.size - offset) {
      throw new CorruptImageError(`L2 table at ${offset} lies past the end of the file (${this.device.size} bytes)`, offset);
    }
    const bytes = await this.device.read(offset, this.clusterSize);
    return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
}
