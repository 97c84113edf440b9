/**
 * A bounded LRU cache of L2 tables (qemu's qcow2-cache.c, read side). Lookups
 * for neighbouring guest offsets hit the same table, so a small cache makes
 * block status and reads walk each table once; the bound keeps memory flat
 * whatever the image size.
 *
 * The bound holds for garbage too. A table stays cached long enough to outlive
 * the young generation, so an evicted one is freed only by a full collection,
 * which V8 starts late for memory outside its heap: a walk over 64 tables of
 * 2 MiB grew map's RSS by ~120 MiB where the cache held 32. Tables read through
 * `use` lend their buffer only for the length of a call, so once evicted the
 * buffer is read into again for the next table; tables handed out by `get`
 * (writers keep and change them) are never reused.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { readFully } from '../../src/core/device.js';
import { CorruptImageError } from '../../src/core/errors.js';
import { L2_CACHE_TABLES, L2_SPARE_BUFFERS, MAX_L2_CACHE_BYTES } from './limits.js';

/** How many L2 tables of `clusterSize` bytes the cache holds. */
export function l2CacheCapacity(clusterSize: number): number {
  return Math.max(1, Math.min(L2_CACHE_TABLES, Math.floor(MAX_L2_CACHE_BYTES / clusterSize)));
}

/** One cached table and who may still read its buffer. */
interface Entry {
  readonly table: Promise<DataView>;
  /** The buffer the table was read into, while it may be reused. */
  buffer?: Uint8Array;
  /** Calls of `use` running on the table now. */
  pins: number;
  /** Handed out by `get` or given by `put`: someone may keep it, so its buffer is never reused. */
  shared: boolean;
  /** The read finished (or failed): nothing writes into the buffer any more. */
  settled: boolean;
  /** No longer in the cache. */
  evicted: boolean;
}

/** L2 tables by host offset, least recently used evicted first. */
export class L2Cache {
  /** Insertion order of a Map is its recency order: a hit moves the entry to the end. */
  private readonly tables = new Map<number, Entry>();
  /** Buffers of evicted tables, read into again for the next tables loaded. */
  private readonly spare: Uint8Array[] = [];
  readonly capacity: number;

  constructor(
    private readonly device: BlockDevice,
    private readonly clusterSize: number,
    capacity = l2CacheCapacity(clusterSize),
  ) {
    this.capacity = capacity;
  }

  /** The L2 table at `offset` (cluster-aligned, inside the file), loading it on a miss; the caller may keep it. */
  get(offset: number): Promise<DataView> {
    const entry = this.entry(offset);
    entry.shared = true;
    return entry.table;
  }

  /**
   * Runs `read` on the L2 table at `offset`, loading it on a miss. The table
   * is lent for the call only: `read` must not keep it (nor a view of it),
   * since its buffer is reused once the table is evicted.
   */
  async use<T>(offset: number, read: (table: DataView) => T): Promise<T> {
    const entry = this.entry(offset);
    entry.pins++;
    try {
      return read(await entry.table);
    } finally {
      entry.pins--;
      this.release(entry);
    }
  }

  /**
   * Starts loading the table at `offset` unless it is held already (and
   * leaves its place in the recency order alone then). A failed load is
   * forgotten; the lookup that needs the table loads it again and reports.
   */
  prefetch(offset: number): void {
    if (!this.tables.has(offset)) void this.entry(offset).table.catch(() => {});
  }

  /** Replaces a cached table after a writer changed it on disk. */
  put(offset: number, table: DataView): void {
    this.forget(offset);
    this.remember(offset, { table: Promise.resolve(table), pins: 0, shared: true, settled: true, evicted: false });
  }

  /** Forgets one table, or all of them. */
  invalidate(offset?: number): void {
    for (const key of offset === undefined ? [...this.tables.keys()] : [offset]) this.forget(key);
  }

  /** Number of tables held now. */
  get size(): number {
    return this.tables.size;
  }

  /** The cached entry for `offset`, made most recent, or a new one loading. */
  private entry(offset: number): Entry {
    const cached = this.tables.get(offset);
    if (cached) {
      this.tables.delete(offset);
      this.tables.set(offset, cached);
      return cached;
    }
    const buffer = this.spare.pop() ?? new Uint8Array(this.clusterSize);
    const entry: Entry = { table: this.load(offset, buffer), buffer, pins: 0, shared: false, settled: false, evicted: false };
    const done = () => {
      entry.settled = true;
      this.release(entry);
    };
    entry.table.then(done, () => {
      // A failed load must not stay cached: the next lookup retries and reports again.
      if (this.tables.get(offset) === entry) this.forget(offset);
      done();
    });
    this.remember(offset, entry);
    return entry;
  }

  private remember(offset: number, entry: Entry): void {
    this.tables.set(offset, entry);
    while (this.tables.size > this.capacity) this.forget(this.tables.keys().next().value as number);
  }

  private forget(offset: number): void {
    const entry = this.tables.get(offset);
    if (!entry) return;
    this.tables.delete(offset);
    entry.evicted = true;
    this.release(entry);
  }

  /** Takes back the buffer of an evicted table once nothing reads or writes it. */
  private release(entry: Entry): void {
    if (!entry.evicted || entry.shared || entry.pins > 0 || !entry.settled || !entry.buffer) return;
    if (this.spare.length < L2_SPARE_BUFFERS) this.spare.push(entry.buffer);
    entry.buffer = undefined;
  }

  private async load(offset: number, buffer: Uint8Array): Promise<DataView> {
    if (offset > this.device.size || this.clusterSize > this.device.size - offset) {
      throw new CorruptImageError(`L2 table at ${offset} lies past the end of the file (${this.device.size} bytes)`, offset);
    }
    await readFully(this.device, offset, buffer);
    return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  }
}
