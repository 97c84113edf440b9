/**
 * The qcow2 write path (qemu's qcow2-cluster.c, write side): guest writes,
 * zero writes, discards and resizes on an open image.
 *
 * Ordering keeps the file consistent at every instant (a crash may leak
 * clusters, never corrupt): a new cluster's refcount is recorded first, then
 * its contents are written, then the L2 entry, then the L1 entry or header that
 * points at it; references are dropped from old clusters only after nothing
 * points at them any more.
 */

import { alignUp, isAllZero } from '../../src/core/bytes.js';
import { settleAll } from '../../src/core/slots.js';
import { CorruptImageError, OutOfRangeError, UnsupportedFeatureError } from '../../src/core/errors.js';
import type { ClusterAllocator } from './allocate.js';
import { mappingUnit, type ClusterMap } from './clusters.js';
import {
  clusterType,
  compressedDescriptor,
  encodeCompressedDescriptor,
  l1EntryCopied,
  l2EntryBitmap,
  l2EntryCopied,
  l2EntryHostOffset,
  l2EntryPosition,
  subclusterType,
  COPIED_HI,
  ZERO_LO,
  type ClusterType,
} from './entries.js';
import { AUTOCLEAR_DATA_FILE_RAW, COMPAT_LAZY_REFCOUNTS, INCOMPAT_DIRTY, encodeHeader, hasDataFile } from './header.js';
import { markBitmapsInUse } from './bitmaps-write.js';
import { checkBitmapsResizable, resizeBitmaps, storeWrittenBitmaps } from './bitmaps-edit.js';
import { WrittenRanges } from './written-ranges.js';
import type { L2Cache } from './l2-cache.js';
import { SUBCLUSTERS_PER_CLUSTER } from './limits.js';
import type { Qcow2Metadata } from './metadata.js';
import type { MetadataOverlap } from './overlap.js';
import type { BlockDevice } from '../../src/core/device.js';
import { checkResize, growL1, preallocateRange, resizeQcow2, setInitialSize, type ResizePreallocation } from './resize.js';
import { L2Tables, setEntry, type L2Slot } from './l2-write.js';

/** Every subcluster bit of an extended L2 bitmap half. */
const ALL_SUBCLUSTERS = 0xffffffff;

/** Unit types that store no bytes in the image itself (they read zeros or the backing file). */
const STORES_NOTHING: ReadonlySet<ClusterType> = new Set(['unallocated', 'unallocated-alloc', 'zero-plain', 'zero-alloc']);

/** qemu's unit of file I/O: the file ends on one after compressed writes. */
const SECTOR_BYTES = 512;

/** What the writer needs from the image it belongs to. */
export interface WriterHost {
  device: BlockDevice;
  metadata: Qcow2Metadata;
  l2Cache: L2Cache;
  allocator: ClusterAllocator;
  /** Current virtual size. */
  size(): number;
  setSize(size: number): void;
  /** Installs a new cluster map after the L1 table moved. */
  setMap(map: ClusterMap): void;
  /** Reads guest bytes as they are now (for copy-on-write). */
  readGuest(offset: number, length: number): Promise<Uint8Array>;
  /** Size of the backing image, or undefined without one. */
  backingSize(): number | undefined;
  /** The external data file, when the image has one and it is open. */
  dataDevice(): BlockDevice | undefined;
  /** Where metadata lies, so that data never lands on it. */
  overlap: MetadataOverlap;
}

/** The bits of subclusters [first, last) as a 32-bit mask. */
function subclusterMask(first: number, last: number): number {
  let mask = 0;
  for (let bit = first; bit < last; bit++) mask = (mask | (1 << bit)) >>> 0;
  return mask;
}

/** Writes to a qcow2 image opened writable. */
export class Qcow2Writer {
  private started = false;
  /** The tail of the queue of mutating operations. */
  private queue: Promise<void> = Promise.resolve();
  private markedDirty = false;
  /** The enabled bitmaps are marked in use (begin marks them before a change; a resize leaves them consistent). */
  private bitmapsMarked = false;
  /** The bitmaps this writer marked in use, to be stored with the written ranges set when it closes. */
  private readonly markedBitmaps = new Set<string>();
  /** What the guest wrote while the bitmaps were marked (kept only for an image with bitmaps). */
  private readonly written = new WrittenRanges();
  /** Set once the file was rewritten underneath (emptied whole): nothing more may be written through this writer. */
  private retired = false;
  /**
   * Set while writeZeroesOver runs: the size of the backing image that zero
   * writes are judged against, in place of the one open now ('none': no backing).
   */
  private assumedBacking: number | 'none' | undefined;
  /** Data of new clusters still being written (overlapping writes only); settles without throwing. */
  private readonly landing = new Set<Promise<void>>();

  /** @internal L2 entries and tables, allocated and copied as writes need them. */
  readonly tables: L2Tables;

  /**
   * @internal The image the writer belongs to (for the size operations in resize.ts).
   *
   * `overlapData`: a write that fills new clusters leaves the queue once they
   * are allocated and mapped, and its data lands while the next write is
   * allocated, as qemu overlaps data writes. The L2 entries may then reach the
   * file before the data they point at, so this is only for images whose
   * metadata is held back anyway (write-behind), which a crash loses whole.
   */
  constructor(
    readonly host: WriterHost,
    private readonly overlapData = false,
  ) {
    this.tables = new L2Tables(host);
  }

  /** @internal The header being kept up to date. */
  get header() {
    return this.host.metadata.header;
  }

  /** @internal */
  get geometry() {
    return this.host.metadata.geometry;
  }

  /** True when guest data lives in an external data file, at host offset = guest offset, without refcounts. */
  private get dataFile(): boolean {
    return hasDataFile(this.header);
  }

  /** True when the external data file must read as the guest disk by itself (data_file_raw). */
  private get rawDataFile(): boolean {
    return this.dataFile && (this.header.autoclearFeatures & AUTOCLEAR_DATA_FILE_RAW) !== 0n;
  }

  /**
   * Where guest data clusters (and compressed streams) are written: the
   * external data file, or the image file itself, never through the metadata
   * queue of a write-behind image (the caller's buffers are awaited).
   */
  private get dataTarget(): BlockDevice {
    return this.dataFile ? this.host.dataDevice()! : (this.host.dataDevice() ?? this.host.device);
  }

  /** A host cluster for guest cluster `clusterStart`: the same offset in a data file, else a new cluster. */
  private allocateData(clusterStart: number): Promise<number> {
    return this.dataFile ? Promise.resolve(clusterStart) : this.host.allocator.allocate();
  }

  /** @internal */
  get clusterSize(): number {
    return this.host.metadata.clusterSize;
  }

  /**
   * Runs one mutating operation at a time: allocation and table updates read
   * then write shared state, so concurrent callers (a server, parallel copies)
   * are queued rather than interleaved.
   */
  private exclusive<T>(operation: () => Promise<T>, waitForData = true): Promise<T> {
    // Whatever reads or changes clusters starts after all data in flight has landed.
    const checked = () => {
      if (this.retired) throw new UnsupportedFeatureError('the image was emptied; open it again to write to it');
      return operation();
    };
    const start = waitForData ? async () => (await this.landed(), checked()) : checked;
    const run = this.queue.then(start, start);
    this.queue = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /** Runs `operation` (a change beside guest writes, such as a snapshot) in the queue of mutating operations. */
  serialized<T>(operation: () => Promise<T>): Promise<T> {
    return this.exclusive(operation);
  }

  /** Writes `data` at guest `offset`; resolves once the data has landed (the caller may then reuse `data`). */
  write(offset: number, data: Uint8Array): Promise<void> {
    return this.overlapped((landings) => {
      this.noteWritten(offset, data.length);
      return this.writeRange(offset, data, landings);
    });
  }

  /**
   * Runs a data write in the queue; with overlapping writes, it leaves the
   * queue with its new clusters' data still landing (in `landings`), and
   * resolves once that data has landed.
   */
  private async overlapped(operation: (landings?: Promise<void>[]) => Promise<void>): Promise<void> {
    if (!this.overlapData) return this.exclusive(() => operation());
    const landings: Promise<void>[] = [];
    try {
      await this.exclusive(() => operation(landings), false);
    } finally {
      await settleAll(landings);
    }
  }

  /** Awaits a data write into new clusters, or, with `landings`, hands it over and keeps track of it until it lands. */
  private async land(written: Promise<void>, landings: Promise<void>[] | undefined): Promise<void> {
    if (!landings) return written;
    landings.push(written);
    const forget = () => {
      this.landing.delete(settled);
    };
    const settled: Promise<void> = written.then(forget, forget);
    this.landing.add(settled);
  }

  /** Waits until no data is in flight. */
  private async landed(): Promise<void> {
    while (this.landing.size > 0) await Promise.all(this.landing);
  }

  /**
   * Makes [offset, offset+length) read as zeros, with zero clusters where whole
   * clusters are covered. With `keepAllocation` (NBD's NO_HOLE, qemu without
   * may-unmap) a version 3 cluster that has a host cluster keeps it, marked
   * zero; version 2 has no such mark and frees it, as qemu does. With `fast`
   * (NBD's FAST_ZERO) nothing is done unless metadata alone can do it all
   * (see requireFastZeroing).
   */
  writeZeroes(offset: number, length: number, keepAllocation = false, fast = false): Promise<void> {
    return this.exclusive(async () => {
      if (fast) await this.requireFastZeroing(offset, length);
      this.noteWritten(offset, length);
      await this.zeroRange(offset, length, keepAllocation);
    });
  }

  /**
   * Throws UnsupportedFeatureError, with nothing changed, unless zeroing
   * [offset, offset+length) only changes metadata: qemu's rules for a zero
   * write that may not fall back to writing zeros (NBD's FAST_ZERO). A
   * version 2 image has no zero clusters and a raw data file must hold the
   * zeros itself; a unit (a cluster, or a subcluster with extended L2) the
   * range covers in part must store nothing here and the rest of it must read
   * zeros; and a compressed cluster cannot be zeroed in part.
   */
  private async requireFastZeroing(offset: number, length: number): Promise<void> {
    if (this.header.version !== 3) throw new UnsupportedFeatureError('a version 2 image has no zero clusters: zeroing it means writing zeros');
    if (this.rawDataFile) throw new UnsupportedFeatureError('zeroing this image means writing zeros into its raw data file');
    this.checkGuestRange(offset, length);
    if (length === 0) return;
    const size = this.host.size();
    const unit = mappingUnit(this.geometry);
    const end = offset + length;
    const partial = new Set<number>();
    if (offset % unit !== 0) partial.add(offset - (offset % unit));
    if (end % unit !== 0 && end < size) partial.add(end - (end % unit));
    for (const unitStart of partial) {
      const unitEnd = Math.min(unitStart + unit, size);
      const from = Math.max(offset, unitStart);
      const to = Math.min(end, unitEnd);
      const storesNothing = STORES_NOTHING.has(await this.unitType(unitStart));
      if (!storesNothing || !(await this.restReadsZero(unitStart, from - unitStart, to - from, unitEnd - unitStart))) {
        throw new UnsupportedFeatureError(`zeroing ${to - from} bytes at ${from} means writing zeros: the rest of the ${unitEnd - unitStart}-byte unit at ${unitStart} holds data`);
      }
    }
    if (!this.geometry.extendedL2) return;
    for (const clusterStart of new Set([offset, end - 1].map((at) => at - (at % this.clusterSize)))) {
      const from = Math.max(offset, clusterStart);
      if (this.coversCluster(clusterStart, from - clusterStart, Math.min(end, clusterStart + this.clusterSize) - from)) continue;
      const slot = await this.tables.slot(clusterStart, false);
      if (slot && clusterType(slot.table, slot.index, true, this.dataFile) === 'compressed') {
        throw new UnsupportedFeatureError(`zeroing part of the compressed cluster at ${clusterStart} means writing zeros`);
      }
    }
  }

  /** The type of the unit (cluster, or subcluster with extended L2) at `unitStart` in this image alone. */
  private async unitType(unitStart: number): Promise<ClusterType> {
    const slot = await this.tables.slot(unitStart, false);
    if (!slot) return 'unallocated';
    if (!this.geometry.extendedL2) return clusterType(slot.table, slot.index, false, this.dataFile);
    const subcluster = Math.floor((unitStart % this.clusterSize) / this.subclusterSize);
    return subclusterType(slot.table, slot.index, subcluster, this.dataFile, slot.tableOffset);
  }

  /**
   * Makes whole clusters read as zeros through a chain whose backing image is
   * `backingSize` bytes (undefined: none) rather than the chain open now:
   * rebase writes for the backing file the image is about to have, and a zero
   * flag must then stand where the old chain read zeros without one. The range
   * is whole zero units (clusters, or subclusters with extended L2; the last may
   * end at the end of the disk), so nothing is read through the chain open now.
   */
  writeZeroesOver(offset: number, length: number, backingSize: number | undefined): Promise<void> {
    const end = offset + length;
    const unit = mappingUnit(this.geometry);
    if (offset % unit !== 0 || (end % unit !== 0 && end !== this.host.size())) {
      return Promise.reject(new OutOfRangeError(`zero write over a new backing file must cover whole ${unit}-byte units (${offset}+${length})`));
    }
    return this.exclusive(async () => {
      this.noteWritten(offset, length);
      this.assumedBacking = backingSize ?? 'none';
      try {
        await this.zeroRange(offset, length);
      } finally {
        this.assumedBacking = undefined;
      }
    });
  }

  /** Deallocates the whole clusters inside [offset, offset+length): they read from the backing file, or as zeros. */
  discard(offset: number, length: number): Promise<void> {
    return this.exclusive(() => this.discardRange(offset, length));
  }

  /**
   * A guest's discard of the whole clusters inside [offset, offset+length)
   * (NBD's TRIM; qemu's discard without full_discard): what they store is
   * freed, and where a backing file is open or the cluster stored something
   * they become zero clusters (version 3), so the range reads zeros rather
   * than older data from below. Version 2 has no zero clusters: without a
   * backing file its clusters are deallocated, and with one nothing is done,
   * as qemu does nothing, rather than let the backing file show through.
   */
  trim(offset: number, length: number): Promise<void> {
    return this.exclusive(async () => {
      if (this.header.version !== 3 && this.backingSize() !== undefined) return;
      this.noteWritten(offset, length);
      await this.begin();
      await this.eachCluster(offset, length, async (start, inCluster, pieceLength) => {
        if (this.coversCluster(start, inCluster, pieceLength)) await this.deallocate(start, 'trim');
      });
    });
  }

  /** Changes the virtual size; shrinking frees the clusters past the new end; growing may preallocate the new clusters. */
  resize(newSize: number, preallocation: ResizePreallocation = 'off'): Promise<void> {
    return this.exclusive(async () => {
      const oldSize = this.host.size();
      // Everything refused is refused before the first write (which would mark bitmaps in use).
      checkResize(this, newSize, preallocation);
      if (newSize === oldSize) return;
      // What was written at the old size goes into the bitmaps first: a resize stores them afresh.
      await this.storeMarkedBitmaps();
      checkBitmapsResizable(this.host, newSize);
      await this.begin();
      // Every bitmap's table is sized for the disk: while it changes, disabled ones no longer fit either.
      await markBitmapsInUse(this.host, 'all');
      await resizeQcow2(this, newSize, preallocation);
      if (this.host.metadata.bitmaps.length === 0) return;
      // Resized, the bitmaps are consistent again, as qemu keeps them: the next guest write marks the enabled ones anew.
      await resizeBitmaps(this.host, oldSize);
      this.bitmapsMarked = false;
      this.markedBitmaps.clear();
    });
  }

  /** `landings`: where the data writes of new clusters go instead of being awaited (overlapping writes). */
  private async writeRange(offset: number, data: Uint8Array, landings?: Promise<void>[]): Promise<void> {
    await this.begin();
    const end = offset + data.length;
    for (let at = offset; at < end; ) {
      const fresh = await this.freshRun(at, end);
      if (fresh > 0) {
        await this.writeFreshRun(at, data.subarray(at - offset, at - offset + fresh), landings);
        at += fresh;
        continue;
      }
      // Writing into a cluster may read it (copy-on-write) or write it in place: earlier data lands first.
      await this.landed();
      const clusterStart = at - (at % this.clusterSize);
      const pieceEnd = Math.min(end, clusterStart + this.clusterSize);
      await this.eachCluster(at, pieceEnd - at, (start, inCluster, length) =>
        this.writeInCluster(start, inCluster, data.subarray(start + inCluster - offset, start + inCluster - offset + length)),
      );
      at = pieceEnd;
    }
  }

  /**
   * Bytes from `at` (cluster-aligned) that cover whole clusters inside one L2
   * table that hold nothing (unallocated; what a backing file has there is
   * wholly overwritten): those get new clusters written with one data write
   * and one L2 write, and need nothing read first.
   */
  private async freshRun(at: number, end: number): Promise<number> {
    const { extendedL2, l2Entries } = this.geometry;
    if (at % this.clusterSize !== 0 || end - at < this.clusterSize) return 0;
    const slot = await this.tables.slot(at, false);
    const clusterIndex = Math.floor(at / this.clusterSize);
    const limit = Math.min(Math.floor((end - at) / this.clusterSize), l2Entries - (clusterIndex % l2Entries));
    // No L2 table yet: every cluster it would map is unallocated, and the run gets its clusters at once after the
    // new table, as qemu's handle_alloc gives them (not the first one alone, which could fit a hole the rest does not).
    if (!slot) return limit * this.clusterSize;
    if (!l1EntryCopied(this.host.metadata.l1, Math.floor(clusterIndex / l2Entries))) return 0;
    let count = 0;
    while (count < limit && clusterType(slot.table, slot.index + count, extendedL2, this.dataFile) === 'unallocated') {
      if (extendedL2 && l2EntryBitmap(slot.table, slot.index + count).zero !== 0) break;
      count++;
    }
    return count * this.clusterSize;
  }

  private async writeFreshRun(at: number, data: Uint8Array, landings?: Promise<void>[]): Promise<void> {
    const slot = await this.tables.slot(at, true);
    const count = data.length / this.clusterSize;
    const hostOffset = this.dataFile ? at : await this.host.allocator.allocateRun(count);
    await this.land(this.dataTarget.write!(hostOffset, data), landings);
    const { extendedL2 } = this.geometry;
    const stride = extendedL2 ? 16 : 8;
    for (let i = 0; i < count; i++) {
      const position = l2EntryPosition(slot.index + i, extendedL2);
      setEntry(slot.table, position, hostOffset + i * this.clusterSize, COPIED_HI);
      if (extendedL2) {
        slot.table.setUint32(position + 8, 0);
        slot.table.setUint32(position + 12, ALL_SUBCLUSTERS);
      }
    }
    const first = l2EntryPosition(slot.index, extendedL2);
    await this.host.device.write!(slot.tableOffset + first, new Uint8Array(slot.table.buffer, slot.table.byteOffset + first, count * stride).slice());
  }

  /** @internal Zero write without taking the queue (for operations already in it). */
  async zeroRange(offset: number, length: number, keepAllocation = false): Promise<void> {
    await this.begin();
    this.checkGuestRange(offset, length);
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const batch = this.zeroBatch(at, end);
      if (batch > 1) {
        await this.zeroClusters(at, batch, keepAllocation);
        at += batch * this.clusterSize;
        continue;
      }
      const next = Math.min(end, at - (at % this.clusterSize) + this.clusterSize);
      await this.eachCluster(at, next - at, (start, inCluster, pieceLength) => this.zeroInCluster(start, inCluster, pieceLength, keepAllocation));
      at = next;
    }
  }

  /**
   * Whole clusters from `at` (up to `end`, within one L2 table) that can be
   * zeroed together: where zeroing a whole cluster only changes its entry and
   * releases what it held. That takes a zero flag (version 3) or no backing
   * file (version 2 then leaves the cluster unallocated, as qemu does even when
   * asked to keep allocations), and no data file.
   */
  private zeroBatch(at: number, end: number): number {
    if (at % this.clusterSize !== 0 || this.dataFile) return 0;
    if (this.header.version !== 3 && this.backingSize() !== undefined) return 0;
    const { l2Entries } = this.geometry;
    const index = Math.floor(at / this.clusterSize) % l2Entries;
    return Math.min(Math.floor((end - at) / this.clusterSize), l2Entries - index);
  }

  /**
   * Zeros `count` whole clusters from `at`, all in one L2 table, as
   * zeroInCluster would one by one (see zeroingOf: entries that already are
   * what zeroing makes of them are left alone), with one write of the changed
   * entries and then one release per run of host clusters: an entry never
   * points at a released cluster, so a crash between the two leaves leaked
   * clusters at worst.
   */
  private async zeroClusters(at: number, count: number, keepAllocation: boolean): Promise<void> {
    const { extendedL2 } = this.geometry;
    const existing = await this.tables.slot(at, false);
    const changing: Array<{ i: number; zeroing: 'mark' | 'clear' }> = [];
    for (let i = 0; i < count; i++) {
      const zeroing = this.zeroingOf(existing, i, at + i * this.clusterSize, keepAllocation);
      if (zeroing !== 'unchanged') changing.push({ i, zeroing });
    }
    if (changing.length === 0) return;
    // Taking the slot for writing copies a table shared with a snapshot first (same entries, so the same decisions).
    const slot = await this.tables.slot(at, true);
    const released: Array<{ offset: number; bytes: number }> = [];
    for (const { i, zeroing } of changing) {
      const entry: L2Slot = { ...slot, index: slot.index + i };
      if (zeroing === 'mark') {
        markZeroKeepingCluster(slot.table, entry.index, extendedL2);
        continue;
      }
      const old = this.allocationOf(entry, clusterType(slot.table, entry.index, extendedL2, this.dataFile));
      if (old) released.push(old);
      clearEntry(slot.table, entry.index, extendedL2, this.header.version === 3);
    }
    const first = l2EntryPosition(slot.index + changing[0]!.i, extendedL2);
    const last = l2EntryPosition(slot.index + changing[changing.length - 1]!.i, extendedL2) + (extendedL2 ? 16 : 8);
    await this.host.device.write!(slot.tableOffset + first, new Uint8Array(slot.table.buffer, slot.table.byteOffset + first, last - first).slice());
    for (const run of clusterRuns(released, this.clusterSize)) await this.host.allocator.release(run.offset, run.bytes);
  }

  /**
   * What zeroing a whole cluster does to its entry (entry `offset` of `slot`;
   * no slot: no L2 table yet), by qemu's rules (zero_in_l2_slice): version 3
   * marks every cluster zero, whether or not it read zeros before; it keeps
   * the host cluster ('mark') only when asked to keep allocations, and never
   * a compressed one's; otherwise the entry is cleared to a plain zero cluster
   * and what it held is released ('clear'). Version 2 has no zero flag: a
   * cluster that does not read zeros is cleared (only without a backing file,
   * which callers check), and so is any cluster of an image with a data file.
   */
  private zeroingOf(slot: L2Slot | undefined, offset: number, clusterStart: number, keepAllocation: boolean): 'unchanged' | 'mark' | 'clear' {
    const { extendedL2 } = this.geometry;
    if (this.header.version !== 3 || this.dataFile) {
      const readsZero = slot ? this.entryReadsZero(slot.table, slot.index + offset, clusterStart) : this.backingBelow(clusterStart);
      return readsZero ? 'unchanged' : 'clear';
    }
    if (!slot) return 'clear';
    const index = slot.index + offset;
    const type = clusterType(slot.table, index, extendedL2, false);
    if (type === 'compressed') return 'clear';
    const markedZero = extendedL2 ? allSubclustersZero(slot.table, index) : type === 'zero-plain' || type === 'zero-alloc';
    const hasHostCluster = type === 'normal' || type === 'zero-alloc';
    if (!hasHostCluster) return markedZero ? 'unchanged' : 'clear';
    if (!keepAllocation) return 'clear';
    return markedZero ? 'unchanged' : 'mark';
  }

  /** @internal Discard without taking the queue (for operations already in it). */
  async discardRange(offset: number, length: number): Promise<void> {
    await this.begin();
    await this.eachCluster(offset, length, async (start, inCluster, pieceLength) => {
      if (this.coversCluster(start, inCluster, pieceLength)) await this.deallocate(start, 'discard');
    });
  }

  /** Makes every write so far durable (metadata still held lands first), in the external data file too. */
  async flush(): Promise<void> {
    await this.landed();
    await this.host.device.flush?.();
    // Without a data file, data shares the image file that the line above flushed.
    if (this.dataFile) await this.host.dataDevice()?.flush?.();
  }

  /** Clears the dirty bit set for lazy refcounts, and flushes. */
  close(): Promise<void> {
    // An emptied image's header is already final (and this writer's state is not).
    if (this.retired) return Promise.resolve();
    return this.exclusive(() => this.finish());
  }

  /**
   * Runs `rewrite` (which remakes the file underneath, see empty.ts) once every
   * write so far has landed; the writer takes no work afterwards.
   */
  retire(rewrite: () => Promise<void>): Promise<void> {
    return this.exclusive(async () => {
      await this.host.device.flush?.();
      this.retired = true;
      await rewrite();
    });
  }

  private async finish(): Promise<void> {
    await this.storeMarkedBitmaps();
    if (this.markedDirty) {
      await this.host.device.flush?.();
      this.header.incompatibleFeatures &= ~INCOMPAT_DIRTY;
      await this.writeHeader();
      this.markedDirty = false;
    }
    await this.host.device.flush?.();
  }

  /**
   * Before the first change: mark the enabled persistent bitmaps in use (this
   * writer does not update them; see markBitmapsInUse), then with lazy
   * refcounts set the dirty bit, each made durable before any data is
   * written. (Autoclear bits platter does not know were cleared when the
   * image was opened for writing, see clearUnknownAutoclear.)
   */
  private async begin(): Promise<void> {
    if (this.started) {
      if (!this.bitmapsMarked) await this.markBitmaps();
      return;
    }
    if (this.dataFile && !this.host.dataDevice()?.write) {
      throw new UnsupportedFeatureError('the external data file is not open for writing');
    }
    this.started = true;
    await this.markBitmaps();
    const before = this.header.incompatibleFeatures;
    if ((this.header.compatibleFeatures & COMPAT_LAZY_REFCOUNTS) !== 0n && this.header.version === 3) {
      this.header.incompatibleFeatures |= INCOMPAT_DIRTY;
      this.markedDirty = (before & INCOMPAT_DIRTY) === 0n;
    }
    if (before !== this.header.incompatibleFeatures) {
      await this.writeHeader();
      await this.host.device.flush?.();
    }
  }

  /** Marks the enabled bitmaps in use (see markBitmapsInUse). */
  private async markBitmaps(): Promise<void> {
    for (const name of await markBitmapsInUse(this.host, 'enabled')) this.markedBitmaps.add(name);
    this.bitmapsMarked = true;
  }

  /**
   * The guest ranges written since the enabled bitmaps were marked in use:
   * the bits they have gained beyond those on disk (an NBD export shows them live).
   */
  writtenRanges(): readonly (readonly [number, number])[] {
    return this.written.list();
  }

  /** Notes a guest write, zero write or discard of [offset, offset+length) for the enabled bitmaps. */
  private noteWritten(offset: number, length: number): void {
    if (this.host.metadata.bitmaps.length > 0) this.written.add(offset, length);
  }

  /**
   * Stores the bitmaps this writer marked in use with what was written set
   * (see storeWrittenBitmaps), as qemu does when it closes the image: they
   * are consistent again, and the next write marks them anew.
   */
  private async storeMarkedBitmaps(): Promise<void> {
    if (this.markedBitmaps.size === 0) return;
    await storeWrittenBitmaps(this.host, this.markedBitmaps, this.written);
    this.markedBitmaps.clear();
    this.written.clear();
    this.bitmapsMarked = false;
  }

  /** Rewrites the fixed header fields (extensions after them stay as they are). */
  async writeHeader(): Promise<void> {
    await this.host.device.write!(0, encodeHeader(this.header));
  }

  private async eachCluster(
    offset: number,
    length: number,
    visit: (clusterStart: number, inCluster: number, length: number) => Promise<void>,
  ): Promise<void> {
    this.checkGuestRange(offset, length);
    const end = offset + length;
    for (let at = offset; at < end; ) {
      const clusterStart = at - (at % this.clusterSize);
      const pieceEnd = Math.min(end, clusterStart + this.clusterSize);
      await visit(clusterStart, at - clusterStart, pieceEnd - at);
      at = pieceEnd;
    }
  }

  private checkGuestRange(offset: number, length: number): void {
    const size = this.host.size();
    if (offset < 0 || length < 0 || offset > size || length > size - offset) {
      throw new CorruptImageError(`write of ${length} bytes at ${offset} is past the end of the disk (${size} bytes)`);
    }
  }

  /** True when the piece covers the whole cluster (or all of it that lies inside the disk). */
  private coversCluster(clusterStart: number, inCluster: number, length: number): boolean {
    return inCluster === 0 && (length === this.clusterSize || clusterStart + length === this.host.size());
  }

  private async writeInCluster(clusterStart: number, inCluster: number, data: Uint8Array): Promise<void> {
    const slot = await this.tables.slot(clusterStart, true);
    const { extendedL2 } = this.geometry;
    const type = clusterType(slot.table, slot.index, extendedL2, this.dataFile);
    if (type === 'normal' && l2EntryCopied(slot.table, slot.index, extendedL2)) {
      const hostOffset = l2EntryHostOffset(slot.table, slot.index, extendedL2, slot.tableOffset);
      if (!this.dataFile) this.host.overlap.check(hostOffset, this.clusterSize, clusterStart + inCluster);
      if (!extendedL2) return this.dataTarget.write!(hostOffset + inCluster, data);
      return this.writeSubclusters(slot, hostOffset, clusterStart, inCluster, data);
    }
    if (type === 'zero-alloc' && l2EntryCopied(slot.table, slot.index, extendedL2)) return this.fillZeroCluster(slot, clusterStart, inCluster, data);
    if (extendedL2 && type === 'unallocated' && !this.dataFile) return this.allocateSubclusters(slot, clusterStart, inCluster, data);
    await this.reallocate(slot, clusterStart, inCluster, data, type);
  }

  /**
   * A write into an allocated zero cluster of ours alone (what a zero write
   * that keeps allocation leaves): its host cluster is reused, as qemu reuses
   * it, written whole (zeros around `data`), then the entry loses its zero
   * flag. Giving it a new cluster instead would leave the file a cluster longer.
   */
  private async fillZeroCluster(slot: L2Slot, clusterStart: number, inCluster: number, data: Uint8Array): Promise<void> {
    const hostOffset = l2EntryHostOffset(slot.table, slot.index, false, slot.tableOffset);
    if (!this.dataFile) this.host.overlap.check(hostOffset, this.clusterSize, clusterStart + inCluster);
    const content = new Uint8Array(this.clusterSize);
    content.set(data, inCluster);
    await this.dataTarget.write!(hostOffset, content);
    await this.tables.setDataEntry(slot, hostOffset, ALL_SUBCLUSTERS, 0);
  }

  /**
   * A write into an unallocated cluster of an extended-L2 image, as qemu makes
   * it: the cluster is allocated, but only the subclusters written are stored
   * and marked allocated; the others read as before (zeros, or the backing
   * file), so nothing is copied for them and the file grows no further than
   * the data.
   */
  private async allocateSubclusters(slot: L2Slot, clusterStart: number, inCluster: number, data: Uint8Array): Promise<void> {
    const { first, last, bytes } = await this.wholeSubclusters(clusterStart, inCluster, data, 0);
    const { zero } = l2EntryBitmap(slot.table, slot.index);
    const mask = subclusterMask(first, last);
    const hostOffset = await this.allocateData(clusterStart);
    await this.dataTarget.write!(hostOffset + first * this.subclusterSize, bytes);
    await this.tables.setDataEntry(slot, hostOffset, mask, (zero & ~mask) >>> 0);
  }

  /** Bytes of a subcluster of this (extended-L2) image. */
  private get subclusterSize(): number {
    return this.clusterSize / SUBCLUSTERS_PER_CLUSTER;
  }

  /**
   * The subclusters [first, last) that `data` (at `inCluster`) touches, and
   * their bytes: `data` itself when it covers them exactly or when each is
   * already allocated (`allocated` bits; it is then written in place), else
   * `data` laid over what the guest reads there now.
   */
  private async wholeSubclusters(clusterStart: number, inCluster: number, data: Uint8Array, allocated: number): Promise<{ first: number; last: number; bytes: Uint8Array; inPlace: boolean }> {
    const unit = this.subclusterSize;
    const first = Math.floor(inCluster / unit);
    const last = Math.ceil((inCluster + data.length) / unit);
    const mask = subclusterMask(first, last);
    const aligned = first * unit === inCluster && last * unit === inCluster + data.length;
    if (aligned) return { first, last, bytes: data, inPlace: false };
    if ((allocated & mask) >>> 0 === mask) return { first, last, bytes: data, inPlace: true };
    const bytes = new Uint8Array((last - first) * unit);
    const readable = Math.min(bytes.length, this.host.size() - (clusterStart + first * unit));
    bytes.set(await this.host.readGuest(clusterStart + first * unit, readable));
    bytes.set(data, inCluster - first * unit);
    return { first, last, bytes, inPlace: false };
  }

  /**
   * Writes into a cluster that is not ours alone (shared, compressed, zero,
   * unallocated): a new cluster gets the current contents with `data` laid over.
   */
  private async reallocate(slot: L2Slot, clusterStart: number, inCluster: number, data: Uint8Array, type: ClusterType): Promise<void> {
    const content = new Uint8Array(this.clusterSize);
    if (data.length !== this.clusterSize) {
      content.set(await this.host.readGuest(clusterStart, Math.min(this.clusterSize, this.host.size() - clusterStart)));
    }
    content.set(data, inCluster);
    const old = this.allocationOf(slot, type);
    const hostOffset = await this.allocateData(clusterStart);
    await this.dataTarget.write!(hostOffset, content);
    await this.tables.setDataEntry(slot, hostOffset, ALL_SUBCLUSTERS, 0);
    if (old) await this.host.allocator.release(old.offset, old.bytes);
  }

  /** In-place write to an extended-L2 cluster of ours: whole subclusters, then the bitmap. */
  private async writeSubclusters(slot: L2Slot, hostOffset: number, clusterStart: number, inCluster: number, data: Uint8Array): Promise<void> {
    const { allocated, zero } = l2EntryBitmap(slot.table, slot.index);
    const { first, last, bytes, inPlace } = await this.wholeSubclusters(clusterStart, inCluster, data, allocated);
    // Inside subclusters already stored: only the bytes written change.
    if (inPlace) return this.dataTarget.write!(hostOffset + inCluster, data);
    return this.finishSubclusters(slot, hostOffset + first * this.subclusterSize, bytes, allocated, zero, subclusterMask(first, last));
  }

  private async finishSubclusters(slot: L2Slot, at: number, bytes: Uint8Array, allocated: number, zero: number, mask: number): Promise<void> {
    await this.dataTarget.write!(at, bytes);
    if ((allocated & mask) >>> 0 === mask && (zero & mask) === 0) return;
    await this.tables.writeBitmap(slot, (allocated | mask) >>> 0, (zero & ~mask) >>> 0);
  }

  private async zeroInCluster(clusterStart: number, inCluster: number, length: number, keepAllocation: boolean): Promise<void> {
    const { extendedL2 } = this.geometry;
    const canMarkZero = this.header.version === 3 || this.backingSize() === undefined;
    // Version 3 marks a cluster zero even where it read zeros already (zeroingOf); others are left alone.
    if ((this.header.version !== 3 || this.dataFile) && (await this.readsAsZero(clusterStart))) return;
    const clusterLength = Math.min(this.clusterSize, this.host.size() - clusterStart);
    // qemu's rule for part of a cluster: it is marked zero whole when it stores nothing and the rest of it reads as zeros.
    const wholeZero =
      this.coversCluster(clusterStart, inCluster, length) ||
      (!extendedL2 && (await this.storesNothing(clusterStart)) && (await this.restReadsZero(clusterStart, inCluster, length, clusterLength)));
    if (wholeZero && canMarkZero) return this.deallocate(clusterStart, 'zero', keepAllocation);
    if (extendedL2 && (await this.zeroSubclusters(clusterStart, inCluster, length))) return;
    await this.writeInCluster(clusterStart, inCluster, new Uint8Array(length));
  }

  /** True when the cluster (not extended L2) has no stored bytes: unallocated or zero. */
  private async storesNothing(clusterStart: number): Promise<boolean> {
    const slot = await this.tables.slot(clusterStart, false);
    if (!slot) return true;
    const type = clusterType(slot.table, slot.index, false, this.dataFile);
    return type === 'unallocated' || type === 'zero-plain' || type === 'zero-alloc';
  }

  /** True when the guest bytes of the unit at `unitStart` outside [inUnit, inUnit + length) read as zeros. */
  private async restReadsZero(unitStart: number, inUnit: number, length: number, unitLength: number): Promise<boolean> {
    if (inUnit === 0 && length === unitLength) return true;
    const bytes = await this.host.readGuest(unitStart, unitLength);
    return isAllZero(bytes.subarray(0, inUnit)) && isAllZero(bytes.subarray(inUnit + length));
  }

  /**
   * Zeros part of an extended-L2 cluster as qemu does: each subcluster the
   * range covers whole gets its zero bit (and loses its allocated bit), and so
   * does one it covers in part when that one stores nothing and the rest of it
   * reads as zeros; the bytes of the others are written as zeros. A subcluster
   * cut by the end of the image counts as whole. A compressed cluster has no
   * bitmap: qemu takes a request in pieces, so a partial first subcluster is
   * written (which stores the cluster uncompressed) before the rest gets bits.
   * False, with nothing done, where no subcluster would get its bit.
   */
  private async zeroSubclusters(clusterStart: number, inCluster: number, length: number): Promise<boolean> {
    const unit = this.clusterSize / SUBCLUSTERS_PER_CLUSTER;
    const end = inCluster + length;
    const existing = await this.tables.slot(clusterStart, false);
    if (existing && clusterType(existing.table, existing.index, true, this.dataFile) === 'compressed') {
      // With no partial first subcluster, or nothing after it, the whole range is written.
      const headEnd = Math.min(end, Math.ceil(inCluster / unit) * unit);
      if (headEnd === inCluster || headEnd === end) return false;
      await this.writeInCluster(clusterStart, inCluster, new Uint8Array(headEnd - inCluster));
      if (!(await this.zeroSubclusters(clusterStart, headEnd, end - headEnd))) await this.writeInCluster(clusterStart, headEnd, new Uint8Array(end - headEnd));
      return true;
    }
    const stored = existing ? l2EntryBitmap(existing.table, existing.index).allocated : 0;
    const unitEnd = (index: number) => Math.min((index + 1) * unit, this.host.size() - clusterStart);
    let first = SUBCLUSTERS_PER_CLUSTER;
    let last = 0;
    const writes: { at: number; length: number }[] = [];
    for (let index = Math.floor(inCluster / unit); index * unit < end; index++) {
      const from = Math.max(inCluster, index * unit);
      const to = Math.min(end, unitEnd(index));
      const storesNothing = Math.floor(stored / 2 ** index) % 2 === 0;
      if (
        (from === index * unit && to === unitEnd(index)) ||
        (storesNothing && (await this.restReadsZero(clusterStart + index * unit, from - index * unit, to - from, unitEnd(index) - index * unit)))
      ) {
        // Marked subclusters are contiguous: only the first and last can be partial.
        first = Math.min(first, index);
        last = index + 1;
      } else writes.push({ at: from, length: to - from });
    }
    if (last <= first) return false;
    // Taking the slot for writing creates a missing table and copies one shared with a snapshot.
    const slot = await this.tables.slot(clusterStart, true);
    if (this.rawDataFile && clusterType(slot.table, slot.index, true, this.dataFile) === 'normal') {
      // The data file must read as the disk by itself: zeros go there first.
      await this.dataTarget.write!(clusterStart + first * unit, new Uint8Array(unitEnd(last - 1) - first * unit));
    }
    const { allocated, zero } = l2EntryBitmap(slot.table, slot.index);
    const mask = subclusterMask(first, last);
    const zeroBits = (zero | mask) >>> 0;
    const allocatedBits = (allocated & ~mask) >>> 0;
    if (zeroBits !== zero || allocatedBits !== allocated) await this.tables.writeBitmap(slot, allocatedBits, zeroBits);
    for (const write of writes) await this.writeInCluster(clusterStart, write.at, new Uint8Array(write.length));
    return true;
  }

  /** True when the whole cluster already reads as zeros without anything stored. */
  private async readsAsZero(clusterStart: number): Promise<boolean> {
    const slot = await this.tables.slot(clusterStart, false);
    if (!slot) return this.backingBelow(clusterStart);
    return this.entryReadsZero(slot.table, slot.index, clusterStart);
  }

  /** True when entry `index` of `table` (the cluster at `clusterStart`) reads as zeros without storing them. */
  private entryReadsZero(table: DataView, index: number, clusterStart: number): boolean {
    const { extendedL2 } = this.geometry;
    const type = clusterType(table, index, extendedL2, this.dataFile);
    if (!extendedL2) return type === 'zero-plain' || (type === 'unallocated' && this.backingBelow(clusterStart));
    if (type !== 'unallocated') return false;
    const { zero } = l2EntryBitmap(table, index);
    return zero === ALL_SUBCLUSTERS || (zero === 0 && this.backingBelow(clusterStart));
  }

  /** The size of the backing image zero writes are judged against (see writeZeroesOver), or undefined without one. */
  private backingSize(): number | undefined {
    if (this.assumedBacking === undefined) return this.host.backingSize();
    return this.assumedBacking === 'none' ? undefined : this.assumedBacking;
  }

  /** True when nothing under this image answers for the cluster (reads zeros). */
  private backingBelow(clusterStart: number): boolean {
    const backingSize = this.backingSize();
    return backingSize === undefined || backingSize <= clusterStart;
  }

  /**
   * Replaces a whole cluster's entry: 'zero' makes it read zeros (a zero flag on
   * v3, no allocation on v2 without a backing file), 'discard' leaves it
   * unallocated, 'trim' does as qemu's guest discard (see trim). The old
   * cluster is released afterwards.
   */
  private async deallocate(clusterStart: number, mode: 'zero' | 'discard' | 'trim', keepAllocation = false): Promise<void> {
    const existing = await this.tables.slot(clusterStart, false);
    if (mode === 'zero') {
      const zeroing = this.zeroingOf(existing, 0, clusterStart, keepAllocation);
      if (zeroing === 'unchanged') return;
      if (zeroing === 'mark') {
        const slot = await this.tables.slot(clusterStart, true);
        markZeroKeepingCluster(slot.table, slot.index, this.geometry.extendedL2);
        return this.tables.writeEntry(slot);
      }
    } else if (mode === 'trim') {
      if (this.trimLeaves(existing)) return;
    } else if (!existing) return;
    // Taking the slot for writing copies a table shared with a snapshot first.
    const slot = await this.tables.slot(clusterStart, true);
    const { extendedL2 } = this.geometry;
    const type = clusterType(slot.table, slot.index, extendedL2, this.dataFile);
    const old = this.allocationOf(slot, type);
    if (this.rawDataFile && type === 'normal') {
      // The data file must read as the disk by itself: zeros go there first.
      await this.dataTarget.write!(clusterStart, new Uint8Array(Math.min(this.clusterSize, this.host.size() - clusterStart)));
    }
    clearEntry(slot.table, slot.index, extendedL2, mode !== 'discard' && this.header.version === 3);
    await this.tables.writeEntry(slot);
    if (old) await this.host.allocator.release(old.offset, old.bytes);
  }

  /**
   * True when a guest discard leaves the entry as it is (qemu's
   * discard_in_l2_slice): nothing stored and no backing file to hide, or
   * already the entry it would write (a zero cluster; on version 2 none).
   */
  private trimLeaves(slot: L2Slot | undefined): boolean {
    const { extendedL2 } = this.geometry;
    const type = slot ? clusterType(slot.table, slot.index, extendedL2, this.dataFile) : 'unallocated';
    if (type === 'normal' || type === 'zero-alloc' || type === 'compressed') return false;
    if (this.backingSize() === undefined) return true;
    return extendedL2 ? slot !== undefined && allSubclustersZero(slot.table, slot.index) : type === 'zero-plain';
  }

  /** The host bytes an entry holds a reference to, if any. */
  private allocationOf(slot: L2Slot, type: ClusterType): { offset: number; bytes: number } | undefined {
    if (this.dataFile) return undefined; // data file clusters have no refcounts
    const { extendedL2, clusterBits } = this.geometry;
    if (type === 'compressed') {
      const descriptor = compressedDescriptor(slot.table, slot.index, clusterBits, extendedL2, slot.tableOffset);
      const start = descriptor.hostOffset - (descriptor.hostOffset % 512);
      return { offset: start, bytes: descriptor.hostOffset + descriptor.length - start };
    }
    const hostOffset = l2EntryHostOffset(slot.table, slot.index, extendedL2, slot.tableOffset);
    return hostOffset === 0 ? undefined : { offset: hostOffset, bytes: this.clusterSize };
  }

  /** Moves the L1 table to a new place with `entries` entries. */
  growL1(entries: number): Promise<void> {
    return growL1(this, entries);
  }

  /** Sets the size of a new, empty image: the L1 table, no zeroing (qemu's create-time truncate). */
  setInitialSize(size: number): Promise<void> {
    return setInitialSize(this, size);
  }

  /** Gives every cluster of a new image a host cluster (preallocation=metadata, falloc), and with `zeros` writes zeros into them (full). */
  preallocate(zeros: boolean): Promise<void> {
    return preallocateRange(this, 0, this.host.size(), zeros);
  }

  /**
   * Stores one whole guest cluster as a compressed stream (qemu's
   * qcow2_co_pwritev_compressed). Only for clusters that hold nothing yet, as
   * when converting into a new image.
   */
  writeCompressed(clusterStart: number, stream: Uint8Array): Promise<void> {
    return this.overlapped((landings) => this.storeCompressed(clusterStart, stream, landings));
  }

  /**
   * Ends a run of compressed writes as qemu-img convert does (a compressed
   * write of no bytes): the file is padded to whole 512-byte sectors, so a
   * reader that works in sectors gets all of the last stream.
   */
  endCompressedWrites(): Promise<void> {
    return this.exclusive(async () => {
      const { device } = this.host;
      const end = alignUp(device.size, SECTOR_BYTES);
      if (end > device.size) await device.truncate!(end);
    });
  }

  private async storeCompressed(clusterStart: number, stream: Uint8Array, landings?: Promise<void>[]): Promise<void> {
    await this.begin();
    if (this.dataFile) throw new UnsupportedFeatureError('images with an external data file cannot hold compressed clusters');
    const slot = await this.tables.slot(clusterStart, true);
    const { extendedL2, clusterBits } = this.geometry;
    if (clusterType(slot.table, slot.index, extendedL2, this.dataFile) !== 'unallocated') {
      throw new UnsupportedFeatureError(`compressed writes go only to unallocated clusters (guest offset ${clusterStart})`);
    }
    const hostOffset = await this.host.allocator.allocateBytes(stream.length);
    await this.land(this.dataTarget.write!(hostOffset, stream), landings);
    const descriptor = encodeCompressedDescriptor(hostOffset, stream.length, clusterBits);
    const at = l2EntryPosition(slot.index, extendedL2);
    slot.table.setBigUint64(at, descriptor);
    if (extendedL2) slot.table.setBigUint64(at + 8, 0n);
    await this.tables.writeEntry(slot);
  }

}

/**
 * Points L2 entry `index` at nothing (in the cached table; the caller writes
 * it): with `zeroFlag` it reads as zeros (the zero flag, or every subcluster's
 * zero bit), else as unallocated.
 */
function clearEntry(table: DataView, index: number, extendedL2: boolean, zeroFlag: boolean): void {
  const position = l2EntryPosition(index, extendedL2);
  setEntry(table, position, 0, 0, zeroFlag && !extendedL2 ? ZERO_LO : 0);
  if (extendedL2) {
    table.setUint32(position + 8, zeroFlag ? ALL_SUBCLUSTERS : 0);
    table.setUint32(position + 12, 0);
  }
}

/** True when every subcluster of extended L2 entry `index` is marked zero (and none allocated). */
function allSubclustersZero(table: DataView, index: number): boolean {
  const { allocated, zero } = l2EntryBitmap(table, index);
  return zero === ALL_SUBCLUSTERS && allocated === 0;
}

/**
 * Marks L2 entry `index` as reading zeros while it keeps its host cluster (a
 * version 3 "allocated zero" cluster): the zero flag beside the offset, or every
 * subcluster's zero bit and no allocated bit.
 */
function markZeroKeepingCluster(table: DataView, index: number, extendedL2: boolean): void {
  const position = l2EntryPosition(index, extendedL2);
  if (extendedL2) {
    table.setUint32(position + 8, ALL_SUBCLUSTERS);
    table.setUint32(position + 12, 0);
  } else {
    table.setUint32(position + 4, (table.getUint32(position + 4) | 1) >>> 0);
  }
}

/**
 * Host allocations to release, with neighbouring whole clusters joined into
 * one range. A compressed stream's range stays alone: two streams may share
 * a cluster, and each holds its own reference to it.
 */
function clusterRuns(allocations: Array<{ offset: number; bytes: number }>, clusterSize: number): Array<{ offset: number; bytes: number }> {
  const runs: Array<{ offset: number; bytes: number }> = [];
  const whole = (range: { offset: number; bytes: number }) => range.offset % clusterSize === 0 && range.bytes === clusterSize;
  for (const range of allocations) {
    const last = runs[runs.length - 1];
    if (last && whole(range) && last.offset % clusterSize === 0 && last.bytes % clusterSize === 0 && last.offset + last.bytes === range.offset) {
      last.bytes += range.bytes;
    } else {
      runs.push({ ...range });
    }
  }
  return runs;
}
