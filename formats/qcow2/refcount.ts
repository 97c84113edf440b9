/**
 * Reference counts (qcow2.rst, "Host cluster management"; qemu's
 * qcow2-refcount.c): the refcount table, refcount blocks of 1..64-bit entries,
 * and growth of both. Every change is written through to the file at once, in
 * an order that can leak clusters on a crash but never leaves a referenced
 * cluster with a zero refcount.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { CorruptImageError, LimitExceededError } from '../../src/core/errors.js';
import { MAX_REFCOUNT_TABLE_BYTES, REFCOUNT_BLOCK_CACHE } from './limits.js';
import { refcountStructure } from './measure.js';

const TWO_POW_32 = 0x100000000;
/** Bits 0..8 of a refcount table entry are reserved. */
const REFTABLE_RESERVED_LO = 0x1ff;

/**
 * A refcount table entry that names no usable block: its offset is not
 * cluster-aligned, or lies past 2^53 bytes (far past any file). The writer
 * refuses such a table; check reports it, as qemu-img check does. A block past
 * 2^53 reads as zeros, as qemu reads past the end of a file, unless it ends
 * past qemu's largest request offset, where qemu's read fails.
 */
export interface BadRefcountEntry {
  problem: 'unaligned' | 'past-2^53' | 'past-io-limit';
  /** The offset the entry names. */
  offset: bigint;
}

/** qemu's BDRV_MAX_LENGTH: INT64_MAX rounded down to 1 GiB. A request that ends past it fails with EIO. */
const QEMU_MAX_IO_END = (1n << 63n) - (1n << 30n);

/** A refcount that cannot be read: its block is misaligned, or past what qemu can read (qemu answers EIO). */
export class UnreadableRefcountError extends CorruptImageError {
  constructor(
    readonly tableIndex: number,
    readonly entry: BadRefcountEntry,
  ) {
    super(`refcount block ${tableIndex} at ${entry.offset} cannot be read (${entry.problem})`);
  }
}

/** What is wrong with a refcount table entry (given as its two 32-bit halves) that is misaligned or past 2^53. */
function badEntry(hi: number, lo: number, clusterSize: number): BadRefcountEntry {
  const offset = ((BigInt(hi) << 32n) | BigInt(lo)) & 0xfffffffffffffe00n;
  if (offset % BigInt(clusterSize) !== 0n) return { problem: 'unaligned', offset };
  return { problem: offset + BigInt(clusterSize) > QEMU_MAX_IO_END ? 'past-io-limit' : 'past-2^53', offset };
}

/** Refcount width in bits for `order` (0..6). */
export function refcountBits(order: number): number {
  return 1 << order;
}

/** The largest refcount an entry of `order` holds. */
export function maxRefcount(order: number): number {
  return order >= 6 ? Number.MAX_SAFE_INTEGER : 2 ** refcountBits(order) - 1;
}

/** Entries per refcount block of `clusterSize` bytes. */
export function refcountsPerBlock(clusterSize: number, order: number): number {
  return (clusterSize * 8) / refcountBits(order);
}

/**
 * Reads entry `index` of a refcount block. Sub-byte entries are packed from the
 * least significant bit of each byte up (qemu's get_refcount_ro0..ro2); wider
 * ones are big-endian.
 */
export function getRefcount(block: Uint8Array, index: number, order: number): number {
  const bits = refcountBits(order);
  if (bits < 8) {
    const perByte = 8 / bits;
    const shift = (index % perByte) * bits;
    return (block[Math.floor(index / perByte)]! >> shift) & ((1 << bits) - 1);
  }
  // Byte by byte rather than through a DataView: check reads every cluster's count, and a view per call cost more than the read.
  if (bits === 8) return block[index]!;
  const at = (index * bits) / 8;
  if (bits === 16) return (block[at]! << 8) | block[at + 1]!;
  if (bits === 32) return uint32At(block, at);
  const hi = uint32At(block, at);
  // A count above 2^53 is as good as infinite here; it is never decremented to zero.
  return hi > 0x1fffff ? Number.MAX_SAFE_INTEGER : hi * TWO_POW_32 + uint32At(block, at + 4);
}

/** The big-endian 32-bit number at `at`. */
function uint32At(bytes: Uint8Array, at: number): number {
  return bytes[at]! * 0x1000000 + ((bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!);
}

/** Writes entry `index` of a refcount block; returns the byte range [start, end) that changed. */
export function setRefcount(block: Uint8Array, index: number, order: number, value: number): [number, number] {
  const bits = refcountBits(order);
  if (bits < 8) {
    const perByte = 8 / bits;
    const shift = (index % perByte) * bits;
    const at = Math.floor(index / perByte);
    const mask = ((1 << bits) - 1) << shift;
    block[at] = (block[at]! & ~mask) | ((value << shift) & mask);
    return [at, at + 1];
  }
  const view = new DataView(block.buffer, block.byteOffset, block.byteLength);
  const at = (index * bits) / 8;
  if (bits === 8) view.setUint8(at, value);
  else if (bits === 16) view.setUint16(at, value);
  else if (bits === 32) view.setUint32(at, value);
  else {
    view.setUint32(at, Math.floor(value / TWO_POW_32));
    view.setUint32(at + 4, value % TWO_POW_32);
  }
  return [at, at + bits / 8];
}

/** Where the refcount table is and how it is shaped. */
export interface RefcountLayout {
  clusterSize: number;
  refcountOrder: number;
  tableOffset: number;
  tableClusters: number;
}

/** Called after the refcount table moved: the header must point at the new one. */
export type TableMovedHook = (tableOffset: number, tableClusters: number) => Promise<void>;

/**
 * The refcounts of one qcow2 file. The table (at most 8 MiB) is held in memory;
 * blocks are read on demand into a small cache. New clusters come from the end
 * of the file (`endCluster`), which this class owns.
 */
export class Refcounts {
  readonly clusterSize: number;
  readonly order: number;
  readonly perBlock: number;
  tableOffset: number;
  tableClusters: number;
  /** Block offsets by block index (0 = no block). */
  private table: number[];
  private readonly blocks = new Map<number, Uint8Array>();
  /** The host offsets of every refcount block, for the writer's overlap check. */
  private blockOffsets: Set<number>;
  /** First cluster index past everything allocated: where appends go. */
  endCluster: number;
  /**
   * Where searches for a free cluster start (qemu's free_cluster_index): past
   * the last cluster handed out, lowered by frees. Free clusters may lie below it.
   */
  freeHint = 0;
  /** Times the refcount table moved: an allocation that made it move searches again, as qemu's does. */
  tableMoves = 0;
  /** Clusters that hold metadata of a damaged image though their refcount reads 0 (set by the allocator): never a new block's place. */
  isReserved?: (cluster: number) => boolean;

  private constructor(
    private readonly device: BlockDevice,
    layout: RefcountLayout,
    table: number[],
    private readonly onTableMoved: TableMovedHook,
    /** Table entries with reserved bits set, as loaded. */
    private readonly reservedEntries: ReadonlySet<number> = new Set(),
    /** Entries naming no usable block (recorded only when asked; their table slots read as 0). */
    private readonly badEntries: ReadonlyMap<number, BadRefcountEntry> = new Map(),
  ) {
    this.clusterSize = layout.clusterSize;
    this.order = layout.refcountOrder;
    this.perBlock = refcountsPerBlock(layout.clusterSize, layout.refcountOrder);
    this.tableOffset = layout.tableOffset;
    this.tableClusters = layout.tableClusters;
    this.table = table;
    this.blockOffsets = new Set(table.filter((offset) => offset !== 0));
    this.endCluster = Math.ceil(device.size / layout.clusterSize);
    for (const offset of table) this.endCluster = Math.max(this.endCluster, offset / layout.clusterSize + 1);
    this.endCluster = Math.max(this.endCluster, (layout.tableOffset + layout.tableClusters * layout.clusterSize) / layout.clusterSize);
  }

  /** Loads the refcount table described by `layout` from `device`. */
  static async load(
    device: BlockDevice,
    layout: RefcountLayout,
    onTableMoved: TableMovedHook,
    options: { blocksInsideFile?: boolean; recordBadEntries?: boolean } = {},
  ): Promise<Refcounts> {
    const bytes = layout.tableClusters * layout.clusterSize;
    if (bytes > MAX_REFCOUNT_TABLE_BYTES) throw new LimitExceededError(`reference count table too large (${bytes} bytes)`);
    // A table wholly past the end of a cut file reads as zeros, as qemu reads it: check then counts what is missing.
    const stored = Math.min(bytes, Math.max(0, device.size - layout.tableOffset));
    let raw = stored > 0 ? await device.read(layout.tableOffset, stored) : new Uint8Array(0);
    if (raw.length % 8 !== 0) {
      // A file cut inside an entry: the bytes past its end read as zeros, as qemu reads them (check reports the rest).
      const whole = new Uint8Array(raw.length + 8 - (raw.length % 8));
      whole.set(raw);
      raw = whole;
    }
    const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    const table: number[] = new Array(bytes / 8).fill(0);
    const reserved = new Set<number>();
    const bad = new Map<number, BadRefcountEntry>();
    for (let i = 0; i < raw.length / 8; i++) {
      const hi = view.getUint32(i * 8);
      const lo = view.getUint32(i * 8 + 4);
      // Reserved bits are left out of the offset, as qemu reads it; check reports them.
      if ((lo & REFTABLE_RESERVED_LO) !== 0) reserved.add(i);
      const blockOffset = hi * TWO_POW_32 + ((lo & 0xfffffe00) >>> 0);
      if (hi > 0x1fffff || blockOffset % layout.clusterSize !== 0) {
        // Only a bad entry pays for the exact (bigint) offset.
        if (options.recordBadEntries) {
          bad.set(i, badEntry(hi, lo, layout.clusterSize));
          continue;
        }
        if (hi > 0x1fffff) throw new CorruptImageError(`refcount table entry ${i} points beyond 2^53 bytes`, layout.tableOffset + i * 8);
        throw new CorruptImageError(`refcount block offset ${blockOffset} is not cluster-aligned`, layout.tableOffset + i * 8);
      }
      // For a writer, a block must start inside the file: a hostile entry would otherwise make the
      // first refcount update write anywhere up to 2^53 (a file of terabytes). check reports these instead.
      if (options.blocksInsideFile && blockOffset !== 0 && blockOffset >= device.size) {
        throw new CorruptImageError(`refcount block ${i} at ${blockOffset} lies past the end of the file (${device.size} bytes)`, layout.tableOffset + i * 8);
      }
      table[i] = blockOffset;
    }
    return new Refcounts(device, layout, table, onTableMoved, reserved, bad);
  }

  /** True when refcount table entry `index` has reserved bits 0..8 set. */
  entryHasReservedBits(index: number): boolean {
    return this.reservedEntries.has(index);
  }

  /** What is wrong with refcount table entry `index`, when it was loaded with `recordBadEntries`. */
  badEntry(index: number): BadRefcountEntry | undefined {
    return this.badEntries.get(index);
  }

  /** Block offset for block index `blockIndex` (0 when none). */
  blockOffset(blockIndex: number): number {
    return this.table[blockIndex] ?? 0;
  }

  /** True when a refcount block starts at host offset `offset`. */
  holdsBlockAt(offset: number): boolean {
    return this.blockOffsets.has(offset);
  }

  /** True when a refcount block covers each cluster in [first, end). */
  coversClusters(first: number, end: number): boolean {
    for (let block = Math.floor(first / this.perBlock); block * this.perBlock < end; block++) if (this.blockOffset(block) === 0) return false;
    return true;
  }

  /** Number of refcount table entries. */
  get tableEntries(): number {
    return this.table.length;
  }

  /** The refcount of cluster `cluster` (0 where no block covers it). */
  async get(cluster: number): Promise<number> {
    const block = this.storedBlock(Math.floor(cluster / this.perBlock));
    return block ? getRefcount(await block, cluster % this.perBlock, this.order) : 0;
  }

  /**
   * The refcount block `blockIndex`, or undefined where none is stored (its
   * clusters count 0); throws UnreadableRefcountError where its table entry
   * is broken. Not async itself: a lookup costs no more awaits than the block's read.
   */
  private storedBlock(blockIndex: number): Promise<Uint8Array> | undefined {
    const blockOffset = this.blockOffset(blockIndex);
    if (blockOffset !== 0) return this.block(blockOffset);
    const bad = this.badEntries.size > 0 ? this.badEntries.get(blockIndex) : undefined;
    if (bad && bad.problem !== 'past-2^53') throw new UnreadableRefcountError(blockIndex, bad);
    return undefined;
  }

  /**
   * The refcounts of the clusters from `first` on, `count` of them at most and
   * no further than the end of the refcount block that covers `first`, with
   * one await: for walks over every cluster. Throws as get does.
   */
  async getMany(first: number, count: number): Promise<number[]> {
    const blockIndex = Math.floor(first / this.perBlock);
    const start = first - blockIndex * this.perBlock;
    const length = Math.max(0, Math.min(count, this.perBlock - start));
    const stored = this.storedBlock(blockIndex);
    const block = stored && (await stored);
    const values = new Array<number>(length);
    for (let index = 0; index < length; index++) values[index] = block ? getRefcount(block, start + index, this.order) : 0;
    return values;
  }

  /**
   * Sets the refcount of `cluster`, creating the refcount block (and growing
   * the table) when needed; a new block goes in the first free cluster at or
   * after `blockFrom`.
   */
  async set(cluster: number, value: number, blockFrom = Math.max(this.freeHint, cluster + 1)): Promise<void> {
    if (value < 0 || value > maxRefcount(this.order)) {
      throw new LimitExceededError(`refcount ${value} of cluster ${cluster} does not fit in ${refcountBits(this.order)} bits`);
    }
    const blockIndex = Math.floor(cluster / this.perBlock);
    let blockOffset = this.blockOffset(blockIndex);
    if (blockOffset === 0) {
      if (value === 0) return;
      blockOffset = await this.createBlock(blockIndex, blockFrom);
    }
    const block = await this.block(blockOffset);
    const [start, end] = setRefcount(block, cluster % this.perBlock, this.order, value);
    await this.device.write!(blockOffset + start, block.slice(start, end));
    if (value > 0) this.endCluster = Math.max(this.endCluster, cluster + 1);
  }

  /**
   * Adds `delta` to the refcount of each cluster in [first, first+count), with
   * one write per refcount block the range touches. Every new value is checked
   * before a block changes, so a refcount that would drop below zero changes
   * nothing in its block.
   */
  async adjust(first: number, count: number, delta: number): Promise<void> {
    for (let cluster = first; cluster < first + count; ) {
      const blockIndex = Math.floor(cluster / this.perBlock);
      const groupEnd = Math.min(first + count, (blockIndex + 1) * this.perBlock);
      const values: number[] = [];
      for (let at = cluster; at < groupEnd; at++) {
        const value = (await this.get(at)) + delta;
        if (value < 0) throw new CorruptImageError(`refcount of cluster ${at} would drop below zero`, at * this.clusterSize);
        if (value > maxRefcount(this.order)) {
          throw new LimitExceededError(`refcount ${value} of cluster ${at} does not fit in ${refcountBits(this.order)} bits`);
        }
        values.push(value);
      }
      await this.setGroup(blockIndex, cluster, values);
      cluster = groupEnd;
    }
  }

  /** Sets the refcounts of the clusters from `first` (all in block `blockIndex`) to `values`, in one write. */
  private async setGroup(blockIndex: number, first: number, values: number[]): Promise<void> {
    const blockOffset = this.blockOffset(blockIndex);
    if (blockOffset === 0) {
      // One at a time, as set() does; a new block goes past all of these clusters.
      const blockFrom = Math.max(this.freeHint, first + values.length);
      for (let i = 0; i < values.length; i++) await this.set(first + i, values[i]!, blockFrom);
      return;
    }
    await this.writeSpan(blockOffset, first, values);
  }

  /** Sets the refcounts of the clusters from `first` (all in the block at `blockOffset`) to `values`, and writes the bytes that changed at once. */
  private async writeSpan(blockOffset: number, first: number, values: number[]): Promise<void> {
    const block = await this.block(blockOffset);
    let start = Number.MAX_SAFE_INTEGER;
    let end = 0;
    values.forEach((value, i) => {
      const [from, to] = setRefcount(block, (first + i) % this.perBlock, this.order, value);
      start = Math.min(start, from);
      end = Math.max(end, to);
      if (value > 0) this.endCluster = Math.max(this.endCluster, first + i + 1);
    });
    await this.device.write!(blockOffset + start, block.slice(start, end));
  }

  /** The last cluster below `before` that has a reference, or -1 (qemu's qcow2_get_last_cluster). */
  async lastReferenced(before: number): Promise<number> {
    for (let cluster = before - 1; cluster >= 0; ) {
      const blockIndex = Math.floor(cluster / this.perBlock);
      if (this.blockOffset(blockIndex) === 0) {
        cluster = blockIndex * this.perBlock - 1;
        continue;
      }
      if ((await this.get(cluster)) > 0) return cluster;
      cluster--;
    }
    return -1;
  }

  /** Takes `count` clusters from the end of the file, with refcount 1. */
  async appendClusters(count: number): Promise<number> {
    const first = this.endCluster;
    this.endCluster += count;
    // One write per refcount block the run touches, not one per cluster.
    for (let cluster = first; cluster < first + count; ) {
      const blockIndex = Math.floor(cluster / this.perBlock);
      const groupEnd = Math.min(first + count, (blockIndex + 1) * this.perBlock);
      let blockOffset = this.blockOffset(blockIndex);
      // A new block goes after the run, as qemu searches past the clusters it is counting.
      if (blockOffset === 0) blockOffset = await this.createBlock(blockIndex, Math.max(this.freeHint, first + count));
      await this.writeSpan(blockOffset, cluster, new Array<number>(groupEnd - cluster).fill(1));
      cluster = groupEnd;
    }
    return first;
  }

  private async block(offset: number): Promise<Uint8Array> {
    let block = this.blocks.get(offset);
    if (block) {
      this.blocks.delete(offset);
    } else {
      if (offset > this.device.size || this.clusterSize > this.device.size - offset) {
        // A block past the end of the file reads as zeros (it was never written in full).
        block = new Uint8Array(this.clusterSize);
        const inside = Math.max(0, this.device.size - offset);
        if (inside > 0) block.set(await this.device.read(offset, inside));
      } else {
        block = await this.device.read(offset, this.clusterSize);
      }
    }
    this.blocks.set(offset, block);
    while (this.blocks.size > REFCOUNT_BLOCK_CACHE) this.blocks.delete(this.blocks.keys().next().value as number);
    return block;
  }

  /**
   * Creates the refcount block for `blockIndex` in the first free cluster at
   * or after `from`, else at the end of the file, as qemu's
   * alloc_refcount_block places it. Its own refcount is recorded before the
   * table points at it: inside itself when it covers itself, else in another
   * block (created the same way first). A table too small to name it grows.
   */
  private async createBlock(blockIndex: number, from: number): Promise<number> {
    const cluster = await this.freeClusterFrom(from);
    this.freeHint = cluster + 1;
    this.endCluster = Math.max(this.endCluster, cluster + 1);
    const offset = cluster * this.clusterSize;
    const block = new Uint8Array(this.clusterSize);
    if (Math.floor(cluster / this.perBlock) === blockIndex) {
      setRefcount(block, cluster % this.perBlock, this.order, 1);
    } else {
      await this.set(cluster, 1);
    }
    await this.device.write!(offset, block);
    this.blocks.set(offset, block);
    if (blockIndex < this.table.length) await this.writeTableEntry(blockIndex, offset);
    else await this.growTable(blockIndex, offset);
    return offset;
  }

  /** The first cluster at or after `from` with no reference (and no metadata of a damaged image), else past the end of the file. */
  private async freeClusterFrom(from: number): Promise<number> {
    for (let cluster = from; cluster < this.endCluster; ) {
      const counts = await this.getMany(cluster, this.endCluster - cluster);
      for (const count of counts) {
        if (count === 0 && !this.isReserved?.(cluster)) return cluster;
        cluster++;
      }
    }
    return Math.max(from, this.endCluster);
  }

  private async writeTableEntry(blockIndex: number, blockOffset: number): Promise<void> {
    this.table[blockIndex] = blockOffset;
    this.blockOffsets.add(blockOffset);
    await this.device.write!(this.tableOffset + blockIndex * 8, encodeU64(blockOffset));
  }

  /**
   * Moves the refcount table to a larger one that names the new block at
   * `needIndex`, where qemu moves it (its alloc_refcount_block, growth case):
   * at the start of the first stretch of clusters no block yet counts, past
   * the new block, come the blocks that count the new structures, then a
   * table with room for half as many blocks again. The blocks and table are
   * written first, then the header switches over, then the old table is
   * freed (so the next search for free clusters starts there).
   */
  private async growTable(needIndex: number, newBlockOffset: number): Promise<void> {
    const oldCluster = this.tableOffset / this.clusterSize;
    const oldClusters = this.tableClusters;
    const firstUncounted = Math.max(needIndex, Math.floor(newBlockOffset / this.clusterSize / this.perBlock)) + 1;
    const start = firstUncounted * this.perBlock;
    const { blocks } = refcountStructure(start, this.clusterSize, this.order, true);
    const entriesPerCluster = this.clusterSize / 8;
    const tableClusters = Math.ceil((blocks + Math.ceil(blocks / 2)) / entriesPerCluster);
    if (tableClusters * this.clusterSize > MAX_REFCOUNT_TABLE_BYTES) {
      throw new LimitExceededError(`reference count table would exceed ${MAX_REFCOUNT_TABLE_BYTES} bytes`);
    }
    await this.writeGrownTable(start, firstUncounted, blocks, tableClusters, [needIndex, newBlockOffset]);
    this.tableMoves++;
    await this.onTableMoved(this.tableOffset, this.tableClusters);
    await this.adjust(oldCluster, oldClusters, -1);
    this.freeHint = Math.min(this.freeHint, oldCluster);
  }

  /**
   * Writes the structures growTable placed: from cluster `start`, a block for
   * each index from `firstIndex` up to `blockCount` the table does not name
   * yet, then the table of `tableClusters` clusters with `hookup` (an index
   * and the block there) added; every cluster of them counts 1.
   */
  private async writeGrownTable(start: number, firstIndex: number, blockCount: number, tableClusters: number, hookup: [number, number]): Promise<void> {
    const table = this.table.slice(0, (tableClusters * this.clusterSize) / 8);
    while (table.length < (tableClusters * this.clusterSize) / 8) table.push(0);
    table[hookup[0]] = hookup[1];
    const newBlocks = new Map<number, Uint8Array>();
    let next = start;
    for (let b = firstIndex; b < blockCount; b++) {
      if (table[b] !== 0) continue;
      table[b] = next++ * this.clusterSize;
      newBlocks.set(b, new Uint8Array(this.clusterSize));
    }
    const end = next + tableClusters;
    for (let b = firstIndex; b < blockCount && b * this.perBlock < end; b++) {
      const first = Math.max(start, b * this.perBlock);
      const values = new Array<number>(Math.min(end, (b + 1) * this.perBlock) - first).fill(1);
      const fresh = newBlocks.get(b);
      if (fresh) values.forEach((value, i) => setRefcount(fresh, (first + i) % this.perBlock, this.order, value));
      else await this.writeSpan(table[b]!, first, values);
    }
    for (const [b, bytes] of newBlocks) {
      await this.device.write!(table[b]!, bytes);
      this.blocks.set(table[b]!, bytes);
    }
    const encoded = new Uint8Array(tableClusters * this.clusterSize);
    const view = new DataView(encoded.buffer);
    table.forEach((offset, i) => writeU64(view, i * 8, offset));
    await this.device.write!(next * this.clusterSize, encoded);
    this.table = table;
    this.blockOffsets = new Set(table.filter((offset) => offset !== 0));
    this.tableOffset = next * this.clusterSize;
    this.tableClusters = tableClusters;
    this.endCluster = Math.max(this.endCluster, end);
  }
}

/** Writes a u64 (as a number below 2^53) big-endian into `view` at `at`. */
export function writeU64(view: DataView, at: number, value: number): void {
  view.setUint32(at, Math.floor(value / TWO_POW_32));
  view.setUint32(at + 4, value % TWO_POW_32);
}

/** A u64 (as a number below 2^53) as 8 big-endian bytes. */
export function encodeU64(value: number): Uint8Array {
  const out = new Uint8Array(8);
  writeU64(new DataView(out.buffer), 0, value);
  return out;
}
