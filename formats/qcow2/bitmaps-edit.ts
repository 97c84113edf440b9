/**
 * Editing an image's persistent dirty bitmaps (qemu-img bitmap): adding an
 * empty one, removing, clearing, enabling, disabling one, and merging
 * another's bits into one (whatever the two granularities: a source bit sets
 * every bit whose range it touches), in the order asked, each refused with
 * qemu's words where it refuses. New, cleared and merged tables (merged data
 * in new clusters) are written first, then the new directory and
 * cluster 0 (installDirectory), and only then are the clusters that nothing
 * names any more freed: a crash leaves the old bitmaps or the new, with at
 * worst leaked clusters. The guest disk is not touched, so the bitmaps are
 * not marked in use. Also fitting every bitmap to a new disk size, for resize.
 */

import { UnsupportedFeatureError, UsageError } from '../../src/core/errors.js';
import { alignUp } from '../../src/core/bytes.js';
import type { BlockDevice } from '../../src/core/device.js';
import { BITMAP_AUTO, BITMAP_IN_USE, bitmapClusters, bitmapTableEntries, dirtyRanges, MAX_GRANULARITY, MIN_GRANULARITY, type BitmapInfo } from './bitmaps.js';
import { installDirectory, storeBitsCluster, storedBitmapInfo, storedBitmapOf, writeBitmapTable, type StoredBitmap } from './bitmaps-write.js';
import type { Qcow2Image } from './image.js';
import { MAX_BITMAPS, MAX_BITMAP_TABLE_ENTRIES } from './limits.js';
import type { WriterHost } from './write.js';
import type { WrittenRanges } from './written-ranges.js';

/** One change to a bitmap. */
export type BitmapAction =
  | { kind: 'add'; granularity?: number }
  | { kind: 'remove' }
  | { kind: 'clear' }
  | { kind: 'enable' }
  | { kind: 'disable' }
  /** Sets every bit the bitmap `name` of `image` (default: this image, as it is on disk) has set. */
  | { kind: 'merge'; name: string; image?: Qcow2Image };

/** A bitmap whose bits are merged in, and where to read them. */
interface MergeSource {
  device: BlockDevice;
  bitmap: BitmapInfo;
  size: number;
  clusterSize: number;
}

/** Longest bitmap name (qemu's BDRV_BITMAP_MAX_NAME_SIZE). */
const MAX_NAME_BYTES = 1023;

/** A bitmap being edited: its entry, and what its table needs. */
interface Working extends StoredBitmap {
  /** A new bitmap: its table is not written yet. */
  fresh?: boolean;
  /** Its data clusters are to be dropped (cleared). */
  cleared?: boolean;
  /** Bitmaps to merge in, over its bits as they were (or none, when fresh or cleared). */
  merges?: MergeSource[];
  /** The table the merged bits start from. */
  baseTable?: BitmapInfo;
  /** Its table on disk is among those to free once nothing names it. */
  oldDropped?: boolean;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** Applies `actions` in order to the bitmap `name` of `image` (open for writing). */
export async function editBitmaps(image: Qcow2Image, name: string, actions: readonly BitmapAction[]): Promise<void> {
  const writer = image.writer;
  if (!writer) throw new UnsupportedFeatureError(`cannot change bitmaps: ${image.name} is open read-only`);
  const host = writer.host;
  await writer.serialized(async () => {
    const before = workingList(host);
    let list = before.map((bitmap) => ({ ...bitmap }));
    const dropped: Working[] = [];
    for (const action of actions) {
      try {
        list = apply(host, list, dropped, name, action);
      } catch (error) {
        if (error instanceof UsageError) throw new UsageError(`Operation ${action.kind} on bitmap ${name} failed: ${error.message}`);
        throw error;
      }
    }
    await checkTables(host, list);
    for (const bitmap of list) {
      if (bitmap.merges) bitmap.tableOffset = await writeMergedTable(host, bitmap, bitmap.merges.map(setRanges));
      else if (bitmap.fresh || bitmap.cleared) bitmap.tableOffset = await writeBitmapTable(host, new Uint8Array(bitmap.tableSize * 8));
    }
    await installDirectory(host, list);
    // Nothing names these now: the tables of removed and cleared bitmaps, and their data.
    for (const bitmap of dropped) await freeBitmapClusters(host, bitmap);
  });
}

/**
 * Reads every bitmap table the edit relies on (the image's, as qemu loads them
 * when it opens the image, and those of the bitmaps merged in) before
 * anything is written: a malformed one fails the edit with the image as it was.
 */
async function checkTables(host: WriterHost, list: readonly Working[]): Promise<void> {
  const { clusterSize } = host.metadata;
  for (const bitmap of host.metadata.bitmaps) {
    // A bitmap in use may describe the disk as it was before a resize: any table size.
    const size = (bitmap.flagBits & BITMAP_IN_USE) !== 0 ? undefined : host.size();
    await drain(bitmapClusters(host.device, bitmap, size, clusterSize));
  }
  for (const bitmap of list) {
    for (const source of bitmap.merges ?? []) await drain(bitmapClusters(source.device, source.bitmap, source.size, source.clusterSize));
  }
}

/** Runs `clusters` to its end, for the checks it makes on the way. */
async function drain(clusters: AsyncGenerator<unknown>): Promise<void> {
  for await (const cluster of clusters) void cluster;
}

/** The image's bitmaps as directory entries to edit. */
function workingList(host: WriterHost): Working[] {
  return host.metadata.bitmaps.map(storedBitmapOf);
}

/** One action on the list; a refusal throws a UsageError with qemu's reason. */
function apply(host: WriterHost, list: Working[], dropped: Working[], name: string, action: BitmapAction): Working[] {
  const index = list.findIndex((bitmap) => utf8Decoder.decode(bitmap.name) === name);
  if (action.kind === 'add') {
    // The spec gives a bitmap name at least one byte; qemu checks this first.
    if (name === '') throw new UsageError('Bitmap name cannot be empty');
    if (index >= 0) throw new UsageError(`Bitmap already exists: ${name}`);
    return [...list, newBitmap(host, name, action)];
  }
  if (index < 0) throw new UsageError(`Dirty bitmap '${name}' not found`);
  const bitmap = list[index]!;
  if (action.kind === 'remove') {
    dropOld(dropped, bitmap);
    return list.filter((_, at) => at !== index);
  }
  if ((bitmap.flagBits & BITMAP_IN_USE) !== 0) {
    throw new UsageError(`Bitmap '${name}' is inconsistent and cannot be used\nTry --remove to delete this bitmap from disk`);
  }
  if (action.kind === 'enable') bitmap.flagBits |= BITMAP_AUTO;
  else if (action.kind === 'disable') bitmap.flagBits &= ~BITMAP_AUTO;
  else if (action.kind === 'merge') merge(host, dropped, bitmap, action);
  else {
    dropOld(dropped, bitmap);
    bitmap.cleared = true;
    bitmap.merges = undefined;
    bitmap.baseTable = undefined;
  }
  return list;
}

/** Notes a merge into `bitmap` of the bitmap the action names, refused as qemu refuses it. */
function merge(host: WriterHost, dropped: Working[], bitmap: Working, action: Extract<BitmapAction, { kind: 'merge' }>): void {
  const from = action.image ?? undefined;
  const bitmaps = from ? from.metadata.bitmaps : host.metadata.bitmaps;
  const source = bitmaps.find((candidate) => candidate.name === action.name);
  if (!source) throw new UsageError(`Dirty bitmap '${action.name}' not found`);
  if ((source.flagBits & BITMAP_IN_USE) !== 0) {
    throw new UsageError(`Bitmap '${action.name}' is inconsistent and cannot be used\nTry --remove to delete this bitmap from disk`);
  }
  const size = from ? from.size : host.size();
  if (size !== host.size()) {
    throw new UsageError(`Bitmaps are of different sizes (destination size is ${host.size()}, source size is ${size}) and can't be merged`);
  }
  if (!bitmap.merges) {
    // The first merge starts from the bits the bitmap has now, which its new table replaces.
    if (!bitmap.fresh && !bitmap.cleared) bitmap.baseTable = storedBitmapInfo(bitmap);
    dropOld(dropped, bitmap);
    bitmap.merges = [];
  }
  bitmap.merges.push({ device: from ? from.device : host.device, bitmap: source, size, clusterSize: from ? from.metadata.clusterSize : host.metadata.clusterSize });
}

/** The guest ranges whose bits a merge source has set. */
function setRanges(source: MergeSource): AsyncIterator<[number, number]> {
  return dirtyRanges(source.device, source.bitmap, source.size, source.clusterSize);
}

/**
 * Writes the table of `bitmap` with the bits of its base table (if any) set,
 * and those of every guest range of `merges` (a bit for each range it
 * touches), each data cluster that has a bit set in new clusters; returns
 * where the table went.
 */
async function writeMergedTable(host: WriterHost, bitmap: Working, merges: readonly AsyncIterator<[number, number]>[]): Promise<number> {
  const { clusterSize } = host.metadata;
  const granularity = 2 ** bitmap.granularityBits;
  const bitsPerCluster = clusterSize * 8;
  const totalBits = Math.ceil(host.size() / granularity);
  const table = new Uint8Array(bitmap.tableSize * 8);
  const view = new DataView(table.buffer);
  const base = bitmap.baseTable ? bitmapClusters(host.device, bitmap.baseTable, host.size(), clusterSize) : undefined;
  const sources = merges.map((ranges) => ({ ranges, current: undefined as [number, number] | undefined, done: false }));
  for (let index = 0; index < bitmap.tableSize; index++) {
    const cluster = new Uint8Array(clusterSize);
    const old = base ? (await base.next()).value : undefined;
    if (old?.kind === 'ones') cluster.fill(0xff);
    else if (old?.kind === 'data') cluster.set(await host.device.read(old.offset, clusterSize));
    const firstBit = index * bitsPerCluster;
    const start = firstBit * granularity;
    const end = Math.min(host.size(), (firstBit + bitsPerCluster) * granularity);
    for (const source of sources) {
      while (!source.done) {
        if (!source.current) {
          const next = await source.ranges.next();
          if (next.done) {
            source.done = true;
            break;
          }
          source.current = next.value;
        }
        const [from, to] = source.current;
        if (from >= end) break;
        setBits(cluster, Math.floor(Math.max(from, start) / granularity) - firstBit, Math.ceil(Math.min(to, end) / granularity) - firstBit);
        if (to > end) break;
        source.current = undefined;
      }
    }
    await storeBitsCluster(host, view, index, cluster, totalBits - firstBit);
  }
  return writeBitmapTable(host, table);
}

/** Puts the bitmap's table on disk (if it has one, and only once) among those to free. */
function dropOld(dropped: Working[], bitmap: Working): void {
  if (bitmap.fresh || bitmap.oldDropped) return;
  dropped.push({ ...bitmap });
  bitmap.oldDropped = true;
}

/** Sets bits [from, to) of `cluster` (least significant bit first). */
function setBits(cluster: Uint8Array, from: number, to: number): void {
  for (let bit = Math.max(0, from); bit < to; bit++) cluster[bit >> 3] = cluster[bit >> 3]! | (1 << (bit & 7));
}

/** A new, empty bitmap: qemu's default granularity is the cluster size, within 4 KiB to 64 KiB. */
function newBitmap(host: WriterHost, name: string, action: Extract<BitmapAction, { kind: 'add' }>): Working {
  const { clusterSize } = host.metadata;
  if (host.metadata.header.version < 3) throw new UsageError('Cannot store dirty bitmaps in qcow2 v2 files');
  const granularity = action.granularity ?? Math.min(64 * 1024, Math.max(4096, clusterSize));
  if (!Number.isSafeInteger(granularity) || granularity < MIN_GRANULARITY || granularity > MAX_GRANULARITY || (granularity & (granularity - 1)) !== 0) {
    throw new UsageError('Granularity must be power of 2 and at least 512');
  }
  const bytes = utf8.encode(name);
  if (bytes.length > MAX_NAME_BYTES) throw new UsageError(`Bitmap name too long: ${name}`);
  if (host.metadata.bitmaps.length >= MAX_BITMAPS) throw new UsageError(`Too many bitmaps (at most ${MAX_BITMAPS})`);
  const tableSize = bitmapTableEntries(host.size(), granularity, clusterSize);
  // qemu refuses to open an image whose bitmap has an empty table.
  if (tableSize === 0) throw new UsageError('A disk of 0 bytes has no room for a bitmap');
  if (tableSize > MAX_BITMAP_TABLE_ENTRIES) throw new UsageError(`Bitmap needs a table of ${tableSize} entries (at most ${MAX_BITMAP_TABLE_ENTRIES})`);
  return {
    entryOffset: 0,
    name: bytes,
    granularityBits: Math.log2(granularity),
    flagBits: BITMAP_AUTO,
    tableOffset: 0,
    tableSize,
    fresh: true,
  };
}

/** Frees a bitmap's table and the data clusters it names. */
async function freeBitmapClusters(host: WriterHost, bitmap: Working): Promise<void> {
  const { clusterSize } = host.metadata;
  const info = storedBitmapInfo(bitmap);
  // Any table size: a bitmap in use may describe the disk as it was before a resize.
  for await (const cluster of bitmapClusters(host.device, info, undefined, clusterSize)) {
    if (cluster.kind === 'data') await host.allocator.releaseIfReferenced(cluster.offset, clusterSize);
  }
  await host.allocator.releaseIfReferenced(bitmap.tableOffset, alignUp(bitmap.tableSize * 8, clusterSize));
}

/**
 * Refuses, before anything changes, a resize to `newSize` that the bitmaps
 * cannot follow: qemu refuses one with a bitmap in use (inconsistent), whose
 * bits no longer say which parts of the disk changed; a bitmap with extra
 * data, or one whose table would grow past the limit, could not be rewritten
 * once the size had changed.
 */
export function checkBitmapsResizable(host: WriterHost, newSize: number): void {
  const { metadata } = host;
  for (const bitmap of metadata.bitmaps) {
    if ((bitmap.flagBits & BITMAP_IN_USE) !== 0) {
      throw new UsageError(`Bitmap '${bitmap.name}' is inconsistent and cannot be used\nTry 'bitmap --remove' to delete this bitmap from disk`);
    }
    const entries = bitmapTableEntries(newSize, bitmap.granularity, metadata.clusterSize);
    if (entries > MAX_BITMAP_TABLE_ENTRIES) throw new UsageError(`Bitmap '${bitmap.name}' would need a table of ${entries} entries (at most ${MAX_BITMAP_TABLE_ENTRIES})`);
  }
  // The refusal of extra data that resizeBitmaps would meet after the resize.
  workingList(host);
}

/**
 * Fits every bitmap (consistent before a resize from `oldSize`, see
 * checkBitmapsResizable, and marked in use while it ran) to the disk's new
 * size, as qemu keeps bitmaps over a resize: the bits of the disk that stays
 * are kept, those past the new end are dropped, and grown space starts clean.
 * Each gets a new table (and new data clusters) and loses its in-use mark in
 * one new directory; then the old tables and clusters are freed. A crash
 * before the directory lands leaves them in use.
 */
export async function resizeBitmaps(host: WriterHost, oldSize: number): Promise<void> {
  const list = workingList(host);
  if (list.length === 0) return;
  const dropped = list.map((bitmap) => ({ ...bitmap }));
  for (const bitmap of list) {
    const old = storedBitmapInfo(bitmap);
    bitmap.tableSize = bitmapTableEntries(host.size(), old.granularity, host.metadata.clusterSize);
    bitmap.tableOffset = await writeResizedTable(host, old, oldSize);
    bitmap.flagBits &= ~BITMAP_IN_USE;
  }
  await installDirectory(host, list);
  for (const bitmap of dropped) await freeBitmapClusters(host, bitmap);
}

/**
 * Stores the bitmaps again once the guest disk was written, as qemu stores
 * them when it closes an image it had open for writing: the enabled bitmaps
 * this writer marked in use (`marked`) gain a bit for every range of
 * `written` and lose the mark; every other consistent bitmap is copied as it
 * is (qemu rewrites them all); one already in use when the image was opened
 * stays as it was, in use. Each gets a new table and data clusters, then one
 * new directory names them all, then the old tables are freed: a crash before
 * the directory lands leaves the marked bitmaps in use, never wrong.
 */
export async function storeWrittenBitmaps(host: WriterHost, marked: ReadonlySet<string>, written: WrittenRanges): Promise<void> {
  const list = workingList(host);
  const dropped: Working[] = [];
  for (const bitmap of list) {
    const name = utf8Decoder.decode(bitmap.name);
    if ((bitmap.flagBits & BITMAP_IN_USE) !== 0 && !marked.has(name)) continue;
    const old = storedBitmapInfo(bitmap);
    dropped.push({ ...bitmap });
    bitmap.baseTable = old;
    bitmap.tableOffset = await writeMergedTable(host, bitmap, marked.has(name) ? [writtenRanges(written)] : []);
    bitmap.flagBits &= ~BITMAP_IN_USE;
  }
  if (dropped.length === 0) return;
  await installDirectory(host, list);
  for (const bitmap of dropped) await freeBitmapClusters(host, bitmap);
}

/** The runs of `written`, as a merge source. */
async function* writtenRanges(written: WrittenRanges): AsyncGenerator<[number, number]> {
  for (const [start, end] of written.list()) yield [start, end];
}

/**
 * Writes a table for `old` (a bitmap of a disk of `oldSize` bytes) over the
 * disk's new size: each cluster of bits copied to a new cluster, with the
 * bits past the old end or the new one cleared; returns where the table went.
 */
async function writeResizedTable(host: WriterHost, old: BitmapInfo, oldSize: number): Promise<number> {
  const { clusterSize } = host.metadata;
  const bitsPerCluster = clusterSize * 8;
  const tableSize = bitmapTableEntries(host.size(), old.granularity, clusterSize);
  const keptBits = Math.ceil(Math.min(oldSize, host.size()) / old.granularity);
  const table = new Uint8Array(tableSize * 8);
  const view = new DataView(table.buffer);
  let index = 0;
  for await (const cluster of bitmapClusters(host.device, old, oldSize, clusterSize)) {
    if (index >= tableSize) break;
    if (cluster.kind !== 'zeros') {
      const bits = new Uint8Array(clusterSize);
      if (cluster.kind === 'ones') bits.fill(0xff);
      else bits.set(await host.device.read(cluster.offset, clusterSize));
      await storeBitsCluster(host, view, index, bits, Math.max(0, keptBits - index * bitsPerCluster));
    }
    index++;
  }
  return writeBitmapTable(host, table);
}

