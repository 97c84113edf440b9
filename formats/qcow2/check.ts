/**
 * Consistency check and repair (qemu's qcow2_check_refcounts and friends):
 * every refcount is rebuilt from what references clusters (header, L1 and L2
 * tables of the active state and of every snapshot, the snapshot table, the
 * refcount structures), then compared with what the refcount blocks say.
 * Messages and counts follow qemu-img check so that reports compare equal.
 */

import type { BlockDevice } from '../../src/core/device.js';
import { COPIED_HI, ZERO_LO, clusterType, compressedExtent, l1EntryHasReservedBits, l2EntryBitmap, l2EntryHasReservedBits } from './entries.js';
import { setEntry } from './l2-write.js';
import { INCOMPAT_CORRUPT, INCOMPAT_DIRTY, encodeHeader, hasDataFile, virtualSize } from './header.js';
import { AUTOCLEAR_KNOWN } from './features.js';
import type { Qcow2Metadata } from './metadata.js';
import { L2_READ_AHEAD, L2_READ_AHEAD_BYTES, MAX_L1_BYTES } from './limits.js';
import { rebuildRefcountStructure } from './rebuild.js';
import { Refcounts, UnreadableRefcountError, maxRefcount } from './refcount.js';
import { snapshotTableBytes } from './snapshots.js';
import { MetadataOverlap, qemuMetadataName, type MetadataKind } from './overlap.js';

/** What the check found (and fixed), with qemu-img check's counters. */
export interface Qcow2CheckResult {
  checkErrors: number;
  corruptions: number;
  leaks: number;
  corruptionsFixed: number;
  leaksFixed: number;
  imageEndOffset: number;
  totalClusters: number;
  allocatedClusters: number;
  fragmentedClusters: number;
  compressedClusters: number;
  /**
   * Of `corruptions`, the snapshot table entries found incomplete: qemu -r all
   * writes the table again for them, which the caller does (it needs a writer).
   */
  snapshotTableCorruptions: number;
  /** The lines qemu prints on stderr while checking, in order. */
  messages: string[];
  /**
   * Why the check stopped short, when it did: qemu's check then returns an
   * error (a repair of leaks that would need the refcounts rebuilt), and
   * qemu-img prints no report, only "Check failed: <why>".
   */
  failure?: string;
}

/** What to repair: nothing, leaked clusters, or everything this check can fix. */
export type RepairMode = 'none' | 'leaks' | 'all';

const TWO_POW_32 = 0x100000000;
/** Extra data every version 3 snapshot table entry must have: vm_state_size_large and disk_size. */
const V3_SNAPSHOT_EXTRA_BYTES = 16;
/** The largest file offset qemu takes (INT64_MAX). */
const INT64_MAX = (1n << 63n) - 1n;
const OFFSET_HI_MASK = 0x00ffffff;

/** Formats a 64-bit entry from its halves as qemu's PRIx64 (no leading zeros). */
function hex64(hi: number, lo: number): string {
  return hi === 0 ? lo.toString(16) : hi.toString(16) + lo.toString(16).padStart(8, '0');
}

/** The offset bits (9..55) of an entry's halves. */
function entryOffset(hi: number, lo: number): number {
  return (hi & OFFSET_HI_MASK) * TWO_POW_32 + ((lo & 0xfffffe00) >>> 0);
}

/** The in-memory refcounts being rebuilt, and the counters of one check pass. */
class CheckState {
  counts: Uint32Array;
  readonly result: Qcow2CheckResult;
  readonly max: number;
  /** Set when the refcount structure itself is broken and only a rebuild repairs it. */
  rebuild = false;
  /** Whether an unreadable refcount block has been reported (qemu reports the first only). */
  reportedUnreadable = false;
  /**
   * Clusters the comparison covers: the file's, and any cluster a reference
   * reaches past it (less than a cluster past the end is allowed, and then
   * counted, as qemu's in-memory table grows to hold it).
   */
  nbClusters: number;
  /**
   * Where the metadata lies, for the overlap check of a repair's writes
   * (qemu's pre-write overlap check); set when repairs are asked for.
   */
  overlap: MetadataOverlap | undefined;

  constructor(
    readonly device: BlockDevice,
    readonly metadata: Qcow2Metadata,
    messages: string[] = [],
    /** What the counting pass may repair as it goes (qemu's first calculate_refcounts gets the repair mode). */
    readonly fix: RepairMode = 'none',
  ) {
    const clusterSize = metadata.clusterSize;
    this.nbClusters = Math.ceil(device.size / clusterSize);
    this.counts = new Uint32Array(this.nbClusters + 1);
    this.max = Math.min(maxRefcount(metadata.header.refcountOrder), 0xffffffff);
    this.result = {
      checkErrors: 0,
      corruptions: 0,
      leaks: 0,
      corruptionsFixed: 0,
      leaksFixed: 0,
      imageEndOffset: 0,
      // qemu counts whole 512-byte sectors of the virtual size.
      totalClusters: Math.ceil(virtualSize(metadata.header) / clusterSize),
      allocatedClusters: 0,
      fragmentedClusters: 0,
      compressedClusters: 0,
      snapshotTableCorruptions: 0,
      messages,
    };
  }

  get clusterSize(): number {
    return this.metadata.clusterSize;
  }

  say(message: string): void {
    this.result.messages.push(message);
  }

  /** True once the check has stopped short (see Qcow2CheckResult.failure). */
  get failed(): boolean {
    return this.result.failure !== undefined;
  }

  /**
   * qemu's pre-write overlap check of a repair: a write to [offset,
   * offset+length) must reach no metadata but `ignore` (the table repaired).
   * On an overlap the image is marked corrupt, as qemu marks it, the check
   * fails, and false is returned: nothing may be written.
   */
  async mayWrite(offset: number, length: number, ignore: MetadataKind | undefined): Promise<boolean> {
    const kind = this.overlap?.find(offset, length, ignore);
    if (kind === undefined) return true;
    this.say(`qcow2: Marking image as corrupt: Preventing invalid write on metadata (overlaps with ${qemuMetadataName(kind)}); further corruption events will be suppressed`);
    this.result.checkErrors++;
    this.result.failure = 'Input/output error';
    const { header } = this.metadata;
    header.incompatibleFeatures |= INCOMPAT_CORRUPT;
    await this.device.write!(0, encodeHeader(header));
    return false;
  }

  /** Counts one reference to every cluster [offset, offset+size) touches (qemu's qcow2_inc_refcounts_imrt). */
  reference(offset: number, size: number): void {
    if (size <= 0) return;
    const fileLength = this.device.size;
    if (offset + size - fileLength >= this.clusterSize) {
      this.referenceBeyondFile(BigInt(offset), size);
      return;
    }
    const first = Math.floor(offset / this.clusterSize);
    const last = Math.floor((offset + size - 1) / this.clusterSize);
    this.nbClusters = Math.max(this.nbClusters, last + 1);
    for (let cluster = first; cluster <= last; cluster++) {
      if (cluster >= this.counts.length) this.grow(cluster + 1);
      if (this.counts[cluster] === this.max) {
        this.say(`ERROR: overflow cluster offset=0x${(cluster * this.clusterSize).toString(16)}`);
        this.say('Use qemu-img amend to increase the refcount entry width or qemu-img convert to create a clean copy if the image cannot be opened for writing');
        this.result.corruptions++;
        continue;
      }
      this.counts[cluster]!++;
    }
  }

  /** A reference to a region a cluster or more past the end of the file: a corruption, counted nowhere. */
  referenceBeyondFile(offset: bigint, size: number): void {
    this.say(`ERROR: counting reference for region exceeding the end of the file by one cluster or more: offset 0x${offset.toString(16)} size 0x${size.toString(16)}`);
    this.result.corruptions++;
  }

  private grow(length: number): void {
    const grown = new Uint32Array(length);
    grown.set(this.counts);
    this.counts = grown;
  }
}

/** Reads `bytes` at `offset`, zeros past the end of the file (as qemu's file layer reads them). */
async function readPadded(device: BlockDevice, offset: number, bytes: number): Promise<Uint8Array> {
  const out = new Uint8Array(bytes);
  const inside = Math.max(0, Math.min(bytes, device.size - offset));
  if (inside > 0) out.set(await device.read(offset, inside));
  return out;
}

/**
 * The L2 tables an L1 table names, read up to L2_READ_AHEAD ahead of the one
 * asked for (fewer for large clusters: at most L2_READ_AHEAD_BYTES of them):
 * check walks them in order, and with small clusters waiting for each read in
 * turn was a third of its time.
 */
class L2Tables {
  private readonly reads = new Map<number, Promise<Uint8Array>>();
  private next = 0;
  /** How many tables may be read ahead. */
  private readonly ahead: number;

  constructor(
    private readonly device: BlockDevice,
    private readonly l1: DataView,
    private readonly l1Size: number,
    private readonly clusterSize: number,
  ) {
    this.ahead = Math.max(1, Math.min(L2_READ_AHEAD, Math.floor(L2_READ_AHEAD_BYTES / clusterSize)));
  }

  /** The L2 table of L1 entry `index` (entries must be asked for in increasing order; one skipped is dropped). */
  table(index: number): Promise<Uint8Array> {
    for (const [skipped] of this.reads) {
      if (skipped >= index) break;
      this.reads.delete(skipped);
    }
    for (this.next = Math.max(this.next, index); this.next < this.l1Size && this.reads.size < this.ahead; this.next++) {
      const hi = this.l1.getUint32(this.next * 8);
      const lo = this.l1.getUint32(this.next * 8 + 4);
      if (hi === 0 && lo === 0) continue;
      const read = readPadded(this.device, entryOffset(hi, lo), this.clusterSize);
      // A read not awaited yet must not fail unhandled; the failure still reaches its caller.
      read.catch(() => {});
      this.reads.set(this.next, read);
    }
    const read = this.reads.get(index) ?? readPadded(this.device, entryOffset(this.l1.getUint32(index * 8), this.l1.getUint32(index * 8 + 4)), this.clusterSize);
    this.reads.delete(index);
    return read;
  }

  /** Waits for the reads still in flight (so none outlives the check). */
  async settle(): Promise<void> {
    await Promise.allSettled(this.reads.values());
  }
}

/** Counts the references of one L1 table and its L2 tables (qemu's check_refcounts_l1). */
async function checkL1(state: CheckState, l1Offset: number, l1Size: number, active: boolean): Promise<void> {
  state.reference(l1Offset, l1Size * 8);
  if (l1Size === 0) return;
  const l1 = new DataView((await readPadded(state.device, l1Offset, l1Size * 8)).buffer);
  const tables = new L2Tables(state.device, l1, l1Size, state.clusterSize);
  try {
    await countL1Entries(state, l1, l1Size, active, tables);
  } finally {
    await tables.settle();
  }
}

async function countL1Entries(state: CheckState, l1: DataView, l1Size: number, active: boolean, tables: L2Tables): Promise<void> {
  for (let index = 0; index < l1Size; index++) {
    const hi = l1.getUint32(index * 8);
    const lo = l1.getUint32(index * 8 + 4);
    // Like qemu, only an all-zero entry is skipped: flags without an offset name offset 0.
    if (hi === 0 && lo === 0) continue;
    if (l1EntryHasReservedBits(l1, index)) {
      state.say(`ERROR found L1 entry with reserved bits set: ${hex64(hi, lo)}`);
      state.result.corruptions++;
    }
    const l2Offset = entryOffset(hi, lo);
    state.reference(l2Offset, state.clusterSize);
    if (l2Offset % state.clusterSize !== 0) {
      state.say(`ERROR l2_offset=${l2Offset.toString(16)}: Table is not cluster aligned; L1 entry corrupted`);
      state.result.corruptions++;
    }
    await checkL2(state, await tables.table(index), l2Offset, active);
    if (state.failed) return;
  }
}

/** Counts the references of one L2 table (qemu's check_refcounts_l2); with -r all, repairs misaligned preallocated zero clusters. */
async function checkL2(state: CheckState, bytes: Uint8Array, l2Offset: number, active: boolean): Promise<void> {
  const { geometry } = state.metadata;
  const { extendedL2, l2Entries, clusterBits } = geometry;
  const dataFile = hasDataFile(state.metadata.header);
  const table = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stride = extendedL2 ? 16 : 8;
  let nextContiguous = 0;
  for (let index = 0; index < l2Entries; index++) {
    const hi = table.getUint32(index * stride);
    const lo = table.getUint32(index * stride + 4);
    const bitmap = extendedL2 ? l2EntryBitmap(table, index) : { allocated: 0, zero: 0 };
    const type = clusterType(table, index, extendedL2, dataFile);
    if (type !== 'compressed' && l2EntryHasReservedBits(table, index, extendedL2)) {
      state.say(`ERROR found l2 entry with reserved bits set: ${hex64(hi, lo)}`);
      state.result.corruptions++;
    }
    if (type === 'compressed') {
      const descriptor = compressedExtent(table.getBigUint64(index * stride), clusterBits);
      if ((hi & COPIED_HI) !== 0) {
        state.say(`ERROR: coffset=0x${descriptor.hostOffset.toString(16)}: copied flag must never be set for compressed clusters`);
        state.result.corruptions++;
      }
      // qemu clears the misplaced COPIED flag before it prints the entry again.
      const shownHi = (hi & ~COPIED_HI) >>> 0;
      if (dataFile) {
        state.say(`ERROR compressed cluster ${index} with data file, entry=0x${hex64(shownHi, lo)}`);
        state.result.corruptions++;
        continue;
      }
      if (extendedL2 && (bitmap.allocated !== 0 || bitmap.zero !== 0)) {
        state.say(`ERROR compressed cluster ${index} with non-zero subcluster allocation bitmap, entry=0x${hex64(shownHi, lo)}`);
        state.result.corruptions++;
        continue;
      }
      if (descriptor.hostOffset > BigInt(Number.MAX_SAFE_INTEGER)) state.referenceBeyondFile(descriptor.hostOffset, descriptor.length);
      else state.reference(Number(descriptor.hostOffset), descriptor.length);
      if (active) {
        state.result.allocatedClusters++;
        state.result.compressedClusters++;
        // Compressed clusters are fragmented by nature (qemu counts each one).
        state.result.fragmentedClusters++;
      }
    } else if (type === 'normal' || type === 'zero-alloc') {
      const offset = entryOffset(hi, lo);
      if (extendedL2 && (bitmap.allocated & bitmap.zero) !== 0) {
        state.say(`ERROR offset=${offset.toString(16)}: Allocated cluster has corrupted subcluster allocation bitmap`);
        state.result.corruptions++;
      }
      if (active) {
        state.result.allocatedClusters++;
        if (nextContiguous !== 0 && offset !== nextContiguous) state.result.fragmentedClusters++;
        nextContiguous = offset + state.clusterSize;
      }
      if (offset % state.clusterSize !== 0) {
        const containsData = extendedL2 ? bitmap.allocated !== 0 : type === 'normal';
        const what = containsData ? 'Data cluster is not properly aligned' : 'Preallocated cluster is not properly aligned';
        const repair = !containsData && state.fix === 'all';
        state.say(`${repair ? 'Repairing' : 'ERROR'} offset=${offset.toString(16)}: ${what}; L2 entry corrupted.`);
        state.result.corruptions++;
        if (repair) {
          // As qemu: the entry becomes a plain zero cluster, and the misaligned cluster is referenced no more.
          if (await zeroEntry(state, table, index, l2Offset, active)) continue;
          if (state.failed) return;
        }
      }
      // qemu counts the (misaligned) range anyway: it touches two clusters then.
      if (!dataFile) state.reference(offset, state.clusterSize);
    } else if (type === 'unallocated' && extendedL2 && bitmap.allocated !== 0) {
      state.say('ERROR: Unallocated cluster has non-zero subcluster allocation map');
      state.result.corruptions++;
    }
  }
}

/**
 * Rewrites L2 entry `index` as a zero cluster without a host cluster (its
 * allocated subclusters zero, with extended L2), in `table` and in the file:
 * qemu's fix_l2_entry_by_zero. False when the write was refused (an overlap:
 * the check then fails).
 */
async function zeroEntry(state: CheckState, table: DataView, index: number, l2Offset: number, active: boolean): Promise<boolean> {
  const { extendedL2 } = state.metadata.geometry;
  const stride = extendedL2 ? 16 : 8;
  const at = index * stride;
  if (extendedL2) {
    const { allocated, zero } = l2EntryBitmap(table, index);
    table.setUint32(at + 8, (allocated | zero) >>> 0);
    table.setUint32(at + 12, 0);
    setEntry(table, at, 0, 0);
  } else {
    setEntry(table, at, 0, 0, ZERO_LO);
  }
  // qemu ignores the kind of table repaired: active L2 tables, or (not tracked here) inactive ones.
  if (!(await state.mayWrite(l2Offset + at, stride, active ? 'active L2 table' : undefined))) {
    state.say('ERROR: Overlap check failed');
    return false;
  }
  await state.device.write!(l2Offset + at, new Uint8Array(table.buffer, table.byteOffset + at, stride).slice());
  state.result.corruptions--;
  state.result.corruptionsFixed++;
  return true;
}

/** Bitmap table entries read per device read: memory stays flat whatever a table claims. */
const BITMAP_TABLE_CHUNK = 65536;
/** Bits 1..8 and 56..63 of a bitmap table entry are reserved. */
const BITMAP_ENTRY_RESERVED = 0xff000000000001fen;

/** Counts the bitmap directory, bitmap tables and bitmap data clusters (qemu's qcow2_check_bitmaps_refcounts). */
async function checkBitmaps(state: CheckState): Promise<void> {
  const pointer = state.metadata.extensions.bitmaps;
  if (!pointer || state.metadata.bitmaps.length === 0) return;
  state.reference(pointer.directoryOffset, pointer.directorySize);
  // The last chunk read: 65535 bitmaps may all name one table, which is then read once.
  let last: { offset: number; length: number; table: DataView } | undefined;
  for (const bitmap of state.metadata.bitmaps) {
    state.reference(bitmap.tableOffset, bitmap.tableSize * 8);
    for (let first = 0; first < bitmap.tableSize; first += BITMAP_TABLE_CHUNK) {
      const count = Math.min(BITMAP_TABLE_CHUNK, bitmap.tableSize - first);
      const offset = bitmap.tableOffset + first * 8;
      if (last?.offset !== offset || last.length !== count * 8) {
        last = { offset, length: count * 8, table: new DataView((await readPadded(state.device, offset, count * 8)).buffer) };
      }
      const table = last.table;
      for (let index = 0; index < count; index++) {
        const entry = table.getBigUint64(index * 8);
        const offset = Number(entry & 0x00fffffffffffe00n);
        if ((entry & BITMAP_ENTRY_RESERVED) !== 0n || offset % state.clusterSize !== 0) {
          state.result.corruptions++;
          continue;
        }
        if (offset !== 0) state.reference(offset, state.clusterSize);
      }
    }
  }
}

/** Counts the refcount blocks themselves, each of which must be referenced exactly once (qemu's check_refblocks). */
async function checkRefcountBlocks(state: CheckState, refcounts: Refcounts): Promise<void> {
  for (let index = 0; index < refcounts.tableEntries; index++) {
    if (refcounts.entryHasReservedBits(index)) {
      state.say(`ERROR refcount table entry ${index} has reserved bits set`);
      state.result.corruptions++;
      state.rebuild = true;
      continue;
    }
    const bad = refcounts.badEntry(index);
    if (bad?.problem === 'unaligned') {
      state.say(`ERROR refcount block ${index} is not cluster aligned; refcount table entry corrupted`);
      state.result.corruptions++;
      state.rebuild = true;
      continue;
    }
    const offset = refcounts.blockOffset(index);
    if (offset === 0 && !bad) continue;
    const cluster = bad ? Infinity : offset / state.clusterSize;
    if (cluster >= state.nbClusters) {
      state.result.corruptions++;
      // Only a repair of errors does something about it (and rebuilds when it cannot).
      if (state.fix !== 'all') {
        state.say(`ERROR refcount block ${index} is outside image`);
        continue;
      }
      state.say(`Repairing refcount block ${index} is outside image`);
      if (await growToBlock(state, bad ? bad.offset : BigInt(offset))) {
        state.result.corruptions--;
        state.result.corruptionsFixed++;
        state.reference(offset, state.clusterSize);
      } else {
        state.rebuild = true;
      }
      continue;
    }
    state.reference(offset, state.clusterSize);
    if (state.counts[cluster] !== 1) {
      state.say(`ERROR refcount block ${index} refcount=${state.counts[cluster]}`);
      state.result.corruptions++;
      state.rebuild = true;
    }
  }
}

/**
 * Grows the file to hold a refcount block that lies past its end, as qemu's
 * repair does (the block then reads as zeros, and the rebuild that follows
 * counts it). A block past what a file can reach is left, with qemu's message.
 */
async function growToBlock(state: CheckState, offset: bigint): Promise<boolean> {
  const end = offset + BigInt(state.clusterSize);
  try {
    // qemu refuses an end past 2^63 itself; past 2^53 no file system grows a file.
    if (end > INT64_MAX) throw new Error('Invalid argument');
    if (end > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error('File too large');
    await state.device.truncate!(Number(end));
  } catch (error) {
    // The system's reason alone, as qemu gives it ("File too large"), not what platter adds around it.
    const reason = error instanceof Error ? error.message.replace(/^truncate failed: /, '') : String(error);
    state.say(`ERROR could not resize image: ${reason}`);
    return false;
  }
  // The caller's reference to the block then extends the clusters compared to it.
  return true;
}

/**
 * Stored refcounts, read a refcount block at a time: check looks up every
 * cluster's count, and every L2 entry's, mostly in order, and an await per
 * block rather than per cluster is most of its time with small clusters
 * (262144 clusters of 512 bytes: 0.95 s before, qemu-img 0.37 s). Holds the
 * counts of one block; a repair that sets a count reads afresh (forget).
 */
class StoredRefcounts {
  private first = 0;
  private values: number[] = [];

  constructor(readonly refcounts: Refcounts) {}

  /** The count of `cluster` when its block is held, else undefined (see load). */
  held(cluster: number): number | undefined {
    const index = cluster - this.first;
    return index >= 0 && index < this.values.length ? this.values[index] : undefined;
  }

  /** Reads the counts of the block that covers `cluster`; throws UnreadableRefcountError as Refcounts.get does. */
  async load(cluster: number): Promise<number> {
    this.values = [];
    this.values = await this.refcounts.getMany(cluster, Number.MAX_SAFE_INTEGER);
    this.first = cluster;
    return this.values[0]!;
  }

  /** Drops what is held (after a count changed). */
  forget(): void {
    this.values = [];
  }
}

/** Compares rebuilt and stored refcounts, repairing what `mode` allows (qemu's compare_refcounts). */
async function compareRefcounts(state: CheckState, refcounts: Refcounts, mode: RepairMode): Promise<number> {
  let highest = 0;
  const reader = new StoredRefcounts(refcounts);
  for (let cluster = 0; cluster < state.nbClusters; cluster++) {
    const stored = reader.held(cluster) ?? (await storedRefcount(state, reader, cluster));
    if (stored === undefined) continue;
    const computed = state.counts[cluster] ?? 0;
    if (stored > 0 || computed > 0) highest = cluster;
    if (stored === computed) continue;
    // A zero refcount on a used cluster may mean a missing refcount block: qemu rebuilds then.
    if (stored === 0) state.rebuild = true;
    const fixLeak = stored > computed && mode !== 'none';
    const fixError = stored < computed && stored !== 0 && mode === 'all';
    const label = fixLeak || fixError ? 'Repairing' : stored < computed ? 'ERROR' : 'Leaked';
    state.say(`${label} cluster ${cluster} refcount=${stored} reference=${computed}`);
    if (fixLeak || fixError) {
      await refcounts.set(cluster, computed);
      reader.forget();
      if (fixLeak) state.result.leaksFixed++;
      else state.result.corruptionsFixed++;
    } else if (stored < computed) {
      state.result.corruptions++;
    } else {
      state.result.leaks++;
    }
  }
  return highest;
}

/**
 * The refcount the image stores for `cluster`; undefined, with a check error
 * counted, when its refcount block cannot be read (qemu's "Can't get refcount").
 */
async function storedRefcount(state: CheckState, reader: StoredRefcounts, cluster: number): Promise<number | undefined> {
  try {
    return await reader.load(cluster);
  } catch (error) {
    if (!(error instanceof UnreadableRefcountError)) throw error;
    if (error.entry.problem === 'unaligned' && !state.reportedUnreadable) {
      // qemu's corruption event, printed once: the image is opened read-only here, so not marked.
      state.say(`qcow2: Image is corrupt: Refblock offset ${hexAlternate(error.entry.offset)} unaligned (reftable index: ${hexAlternate(BigInt(error.tableIndex))}); further non-fatal corruption events will be suppressed`);
      state.reportedUnreadable = true;
    }
    state.say(`Can't get refcount for cluster ${cluster}: Input/output error`);
    state.result.checkErrors++;
    return undefined;
  }
}

/** A string as C's %s prints it: up to its first NUL. */
function cString(text: string): string {
  const end = text.indexOf('\0');
  return end === -1 ? text : text.slice(0, end);
}

/** C's %#x: 0x-prefixed hex, but a bare 0 for zero. */
function hexAlternate(value: bigint): string {
  return value === 0n ? '0' : `0x${value.toString(16)}`;
}

/** The stored refcount of `cluster`, or undefined when it cannot be read (qemu skips those quietly here). */
async function refcountOrSkip(reader: StoredRefcounts, cluster: number): Promise<number | undefined> {
  const held = reader.held(cluster);
  if (held !== undefined) return held;
  try {
    return await reader.load(cluster);
  } catch (error) {
    if (error instanceof UnreadableRefcountError) return undefined;
    throw error;
  }
}

/**
 * COPIED flags must say "refcount is 1" exactly, on active L1 and L2 entries
 * (qemu's check_oflag_copied). -r all repairs them; -r leaks too, when
 * nothing but leaks was found and those were fixed, so that the refcounts
 * can be trusted.
 */
async function checkCopiedFlags(state: CheckState, refcounts: Refcounts, mode: RepairMode): Promise<void> {
  const { header, clusterSize } = state.metadata;
  const { checkErrors, corruptions, leaks } = state.result;
  const repair = mode === 'all' || (mode === 'leaks' && checkErrors === 0 && corruptions === 0 && leaks === 0);
  // The one the counting pass used, unless a rebuild made new refcounts (and a new state).
  if (repair) state.overlap ??= new MetadataOverlap(state.metadata, refcounts);
  const reader = new StoredRefcounts(refcounts);
  const l1 = state.metadata.l1;
  // A repair writes L2 tables as it goes, and two entries may name one table: then each is read after the one before is fixed.
  const tables = repair ? undefined : new L2Tables(state.device, l1, header.l1Size, clusterSize);
  try {
    await checkL1CopiedFlags(state, reader, repair, tables);
  } finally {
    await tables?.settle();
  }
}

async function checkL1CopiedFlags(state: CheckState, reader: StoredRefcounts, repair: boolean, tables: L2Tables | undefined): Promise<void> {
  const { header, geometry, clusterSize } = state.metadata;
  const dataFile = hasDataFile(header);
  const l1 = state.metadata.l1;
  const label = repair ? 'Repairing' : 'ERROR';
  for (let index = 0; index < header.l1Size; index++) {
    const hi = l1.getUint32(index * 8);
    const lo = l1.getUint32(index * 8 + 4);
    const l2Offset = entryOffset(hi, lo);
    if (l2Offset === 0) continue;
    const refcount = await refcountOrSkip(reader, Math.floor(l2Offset / clusterSize));
    if (refcount === undefined) continue;
    if ((refcount === 1) !== ((hi & COPIED_HI) !== 0)) {
      state.say(`${label} OFLAG_COPIED L2 cluster: l1_index=${index} l1_entry=${hex64(hi, lo)} refcount=${refcount}`);
      if (!repair) {
        state.result.corruptions++;
      } else if (await state.mayWrite(header.l1TableOffset + index * 8, 8, 'active L1 table')) {
        l1.setUint32(index * 8, refcount === 1 ? (hi | COPIED_HI) >>> 0 : (hi & ~COPIED_HI) >>> 0);
        await state.device.write!(header.l1TableOffset + index * 8, new Uint8Array(l1.buffer, l1.byteOffset + index * 8, 8).slice());
        state.result.corruptionsFixed++;
      } else {
        state.result.corruptions++;
        return;
      }
    }
    const bytes = await (tables ? tables.table(index) : readPadded(state.device, l2Offset, clusterSize));
    await checkL2CopiedFlags(state, reader, l2Offset, bytes, repair, dataFile, geometry.extendedL2);
    if (state.failed) return;
  }
}

async function checkL2CopiedFlags(
  state: CheckState,
  reader: StoredRefcounts,
  l2Offset: number,
  bytes: Uint8Array,
  repair: boolean,
  dataFile: boolean,
  extendedL2: boolean,
): Promise<void> {
  const { clusterSize, geometry } = state.metadata;
  const table = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const stride = extendedL2 ? 16 : 8;
  let dirty = 0;
  for (let index = 0; index < geometry.l2Entries; index++) {
    const type = clusterType(table, index, extendedL2, dataFile);
    if (type !== 'normal' && type !== 'zero-alloc') continue;
    const hi = table.getUint32(index * stride);
    const lo = table.getUint32(index * stride + 4);
    const cluster = Math.floor(entryOffset(hi, lo) / clusterSize);
    const refcount = dataFile ? 1 : (reader.held(cluster) ?? (await refcountOrSkip(reader, cluster)));
    if (refcount === undefined || (refcount === 1) === ((hi & COPIED_HI) !== 0)) continue;
    state.say(`${repair ? 'Repairing' : 'ERROR'} OFLAG_COPIED data cluster: l2_entry=${hex64(hi, lo)} refcount=${refcount}`);
    if (repair) {
      table.setUint32(index * stride, refcount === 1 ? (hi | COPIED_HI) >>> 0 : (hi & ~COPIED_HI) >>> 0);
      dirty++;
    } else {
      state.result.corruptions++;
    }
  }
  if (dirty > 0 && l2Offset % clusterSize === 0) {
    if (!(await state.mayWrite(l2Offset, clusterSize, 'active L2 table'))) {
      state.say('ERROR: Could not write L2 table; metadata overlap check failed: Input/output error');
      state.result.corruptions += dirty;
      return;
    }
    await state.device.write!(l2Offset, bytes);
    state.result.corruptionsFixed += dirty;
  } else {
    state.result.corruptions += dirty;
  }
}

/** Loads the refcounts named by `header`; a table move (never expected while checking) updates the header. */
function loadRefcounts(device: BlockDevice, metadata: Qcow2Metadata): Promise<Refcounts> {
  const { header } = metadata;
  return Refcounts.load(
    device,
    { clusterSize: metadata.clusterSize, refcountOrder: header.refcountOrder, tableOffset: header.refcountTableOffset, tableClusters: header.refcountTableClusters },
    async (tableOffset, tableClusters) => {
      header.refcountTableOffset = tableOffset;
      header.refcountTableClusters = tableClusters;
      await device.write!(0, encodeHeader(header));
    },
    { recordBadEntries: true },
  );
}

/** Counts every reference (qemu's calculate_refcounts). */
async function calculateRefcounts(state: CheckState, refcounts: Refcounts): Promise<void> {
  const { header, clusterSize } = state.metadata;
  state.reference(0, clusterSize);
  await checkL1(state, header.l1TableOffset, header.l1Size, true);
  if (state.failed) return;
  const { snapshots } = state.metadata;
  if (hasDataFile(header) && snapshots.length > 0) {
    state.say(`ERROR ${snapshots.length} snapshots in image with data file`);
    state.result.corruptions++;
  }
  for (const snapshot of snapshots) {
    if (snapshot.l1TableOffset % clusterSize !== 0) {
      // Its L1 table is not walked: nothing it names is counted (qemu leaves it out too).
      state.say(`ERROR snapshot ${cString(snapshot.id)} (${cString(snapshot.name)}) l1_offset=${hexAlternate(BigInt(snapshot.l1TableOffset))}: L1 table is not cluster aligned; snapshot table entry corrupted`);
      state.result.corruptions++;
      continue;
    }
    if (snapshot.l1Size > MAX_L1_BYTES / 8) {
      state.say(`ERROR snapshot ${cString(snapshot.id)} (${cString(snapshot.name)}) l1_size=${hexAlternate(BigInt(snapshot.l1Size))}: L1 table is too large; snapshot table entry corrupted`);
      state.result.corruptions++;
      continue;
    }
    await checkL1(state, snapshot.l1TableOffset, snapshot.l1Size, false);
    if (state.failed) return;
  }
  state.reference(header.snapshotsOffset, snapshotTableBytes(state.metadata.snapshots));
  state.reference(header.refcountTableOffset, header.refcountTableClusters * clusterSize);
  await checkBitmaps(state);
  await checkRefcountBlocks(state, refcounts);
}

/**
 * Version 3 snapshot table entries must carry at least 16 bytes of extra data
 * (the large VM state size and the disk size): qemu counts each that does not
 * as a corruption, before the refcounts are looked at. With -r all the table is
 * written again afterwards, by the caller (see snapshotTableCorruptions).
 */
function checkSnapshotTable(state: CheckState, mode: RepairMode): number {
  if (state.metadata.header.version < 3) return 0;
  let corruptions = 0;
  state.metadata.snapshots.forEach((snapshot, index) => {
    if (snapshot.extraData.length >= V3_SNAPSHOT_EXTRA_BYTES) return;
    state.say(`${mode === 'all' ? 'Repairing' : 'ERROR'} snapshot table entry ${index} is incomplete`);
    corruptions++;
  });
  return corruptions;
}

/** Adds the snapshot table's corruptions to the refcount check's result (qemu adds its two results up at the end). */
function withSnapshotTable(result: Qcow2CheckResult, corruptions: number): Qcow2CheckResult {
  result.corruptions += corruptions;
  result.snapshotTableCorruptions = corruptions;
  return result;
}

/**
 * The spec asks a writer to clear the autoclear bits it does not know: the
 * structures they vouch for are not kept up to date by its writes. Done on
 * every writable open and before a repair, ahead of any other write, as qemu
 * does when it opens an image read/write.
 */
export async function clearUnknownAutoclear(device: BlockDevice, metadata: Qcow2Metadata): Promise<void> {
  const { header } = metadata;
  if ((header.autoclearFeatures & ~AUTOCLEAR_KNOWN) === 0n) return;
  header.autoclearFeatures &= AUTOCLEAR_KNOWN;
  await device.write!(0, encodeHeader(header));
  await device.flush?.();
}

/**
 * Checks the image on `device` (whose metadata is already read); with a repair
 * mode, fixes what qemu-img check -r fixes, writing through `device`.
 */
export async function checkQcow2(device: BlockDevice, metadata: Qcow2Metadata, mode: RepairMode = 'none'): Promise<Qcow2CheckResult> {
  const { header } = metadata;
  if (mode !== 'none') await clearUnknownAutoclear(device, metadata);
  let state = new CheckState(device, metadata, [], mode);
  // Counted apart from the refcount check, which must not see them (as in qemu), and added at the end.
  const snapshotTableCorruptions = checkSnapshotTable(state, mode);
  let refcounts = await loadRefcounts(device, metadata);
  if (mode !== 'none') state.overlap = new MetadataOverlap(metadata, refcounts);
  await calculateRefcounts(state, refcounts);
  if (state.failed) return withSnapshotTable(state.result, snapshotTableCorruptions);
  // Like qemu: compare without fixing first; repair afterwards when asked and needed.
  const beforeCompare = { ...state.result };
  let highest = await compareRefcounts(state, refcounts, 'none');
  if (state.rebuild && mode === 'all') {
    const old = { ...state.result };
    state.say('Rebuilding refcount structure');
    await rebuildRefcountStructure(device, header, state.counts);
    // The old structures are unreferenced now: count again, then free them as leaks. What was
    // repaired while counting (a file grown, an entry zeroed) and errors met stay counted, as in qemu.
    state = new CheckState(device, metadata, state.result.messages);
    Object.assign(state.result, { corruptionsFixed: old.corruptionsFixed, leaksFixed: old.leaksFixed, checkErrors: old.checkErrors });
    refcounts = await loadRefcounts(device, metadata);
    await calculateRefcounts(state, refcounts);
    const saved = { ...state.result };
    Object.assign(state.result, { corruptions: 0, leaks: 0, leaksFixed: 0, corruptionsFixed: 0 });
    highest = await compareRefcounts(state, refcounts, 'leaks');
    const freshLeaks = state.result.leaks;
    Object.assign(state.result, { corruptions: saved.corruptions, leaks: saved.leaks, leaksFixed: saved.leaksFixed, corruptionsFixed: saved.corruptionsFixed });
    if (state.result.corruptions < old.corruptions) state.result.corruptionsFixed += old.corruptions - state.result.corruptions;
    if (state.result.leaks < old.leaks) state.result.leaksFixed += old.leaks - state.result.leaks;
    state.result.leaks += freshLeaks;
  } else if (mode !== 'none') {
    if (state.rebuild) {
      state.say('ERROR need to rebuild refcount structures');
      state.result.checkErrors++;
      state.result.failure = 'Input/output error';
      return withSnapshotTable(state.result, snapshotTableCorruptions);
    }
    if (state.result.leaks > 0 || state.result.corruptions > 0) {
      Object.assign(state.result, { leaks: beforeCompare.leaks, corruptions: beforeCompare.corruptions });
      highest = await compareRefcounts(state, refcounts, mode);
    }
  }
  await checkCopiedFlags(state, refcounts, mode);
  withSnapshotTable(state.result, snapshotTableCorruptions);
  if (state.failed) return state.result;
  state.result.imageEndOffset = (highest + 1) * metadata.clusterSize;
  // As qemu: a repair that leaves nothing wrong marks the image clean and consistent.
  const marks = INCOMPAT_DIRTY | INCOMPAT_CORRUPT;
  if (mode !== 'none' && state.result.checkErrors === 0 && state.result.corruptions === 0 && (header.incompatibleFeatures & marks) !== 0n) {
    header.incompatibleFeatures &= ~marks;
    await device.write!(0, encodeHeader(header));
  }
  return state.result;
}
