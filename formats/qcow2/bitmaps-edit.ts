/**
 * Editing an image's persistent dirty bitmaps (qemu-img bitmap): adding an
 * empty one, removing, clearing, enabling and disabling one, in the order
 * asked, each refused with qemu's words where it refuses. Tables of new
 * bitmaps and cleared tables are written first, then the new directory and
 * cluster 0 (installDirectory), and only then are the clusters that nothing
 * names any more freed: a crash leaves the old bitmaps or the new, with at
 * worst leaked clusters. The guest disk is not touched, so the bitmaps are
 * not marked in use.
 */

import { UnsupportedFeatureError, UsageError } from '../../src/core/errors.js';
import { alignUp } from '../../src/core/bytes.js';
import { BITMAP_AUTO, BITMAP_IN_USE, bitmapClusters, bitmapTableEntries, MAX_GRANULARITY, MIN_GRANULARITY } from './bitmaps.js';
import { installDirectory, type StoredBitmap } from './bitmaps-write.js';
import type { Qcow2Image } from './image.js';
import { MAX_BITMAPS, MAX_BITMAP_TABLE_ENTRIES } from './limits.js';
import type { WriterHost } from './write.js';

/** One change to a bitmap. */
export type BitmapAction =
  | { kind: 'add'; granularity?: number }
  | { kind: 'remove' }
  | { kind: 'clear' }
  | { kind: 'enable' }
  | { kind: 'disable' };

/** Longest bitmap name (qemu's BDRV_BITMAP_MAX_NAME_SIZE). */
const MAX_NAME_BYTES = 1023;

/** A bitmap being edited: its entry, and what its table needs. */
interface Working extends StoredBitmap {
  /** A new bitmap: its table is not written yet. */
  fresh?: boolean;
  /** Its data clusters are to be dropped (cleared). */
  cleared?: boolean;
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
    for (const bitmap of list) {
      if (bitmap.fresh || bitmap.cleared) bitmap.tableOffset = await writeEmptyTable(host, bitmap.tableSize);
    }
    await installDirectory(host, list);
    // Nothing names these now: the tables of removed and cleared bitmaps, and their data.
    for (const bitmap of dropped) await freeBitmapClusters(host, bitmap);
  });
}

/** The image's bitmaps as directory entries to edit. */
function workingList(host: WriterHost): Working[] {
  return host.metadata.bitmaps.map((bitmap) => {
    if (bitmap.extraDataSize !== 0) throw new UnsupportedFeatureError(`bitmap '${bitmap.name}' has extra data, which no known writer makes`);
    return {
      entryOffset: bitmap.entryOffset,
      name: utf8.encode(bitmap.name),
      granularityBits: Math.log2(bitmap.granularity),
      flagBits: bitmap.flagBits,
      tableOffset: bitmap.tableOffset,
      tableSize: bitmap.tableSize,
    };
  });
}

/** One action on the list; a refusal throws a UsageError with qemu's reason. */
function apply(host: WriterHost, list: Working[], dropped: Working[], name: string, action: BitmapAction): Working[] {
  const index = list.findIndex((bitmap) => utf8Decoder.decode(bitmap.name) === name);
  if (action.kind === 'add') {
    if (index >= 0) throw new UsageError(`Bitmap already exists: ${name}`);
    return [...list, newBitmap(host, name, action)];
  }
  if (index < 0) throw new UsageError(`Dirty bitmap '${name}' not found`);
  const bitmap = list[index]!;
  if (action.kind === 'remove') {
    // A cleared one is in `dropped` already, as it was.
    if (!bitmap.fresh && !bitmap.cleared) dropped.push(bitmap);
    return list.filter((_, at) => at !== index);
  }
  if ((bitmap.flagBits & BITMAP_IN_USE) !== 0) {
    throw new UsageError(`Bitmap '${name}' is inconsistent and cannot be used\nTry --remove to delete this bitmap from disk`);
  }
  if (action.kind === 'enable') bitmap.flagBits |= BITMAP_AUTO;
  else if (action.kind === 'disable') bitmap.flagBits &= ~BITMAP_AUTO;
  else if (!bitmap.fresh && !bitmap.cleared) {
    dropped.push({ ...bitmap });
    bitmap.cleared = true;
  }
  return list;
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

/** A table of `entries` zero entries (no bit set) in new clusters; returns where. */
async function writeEmptyTable(host: WriterHost, entries: number): Promise<number> {
  const bytes = entries * 8;
  const offset = await host.allocator.allocateRun(Math.max(1, Math.ceil(bytes / host.metadata.clusterSize)));
  await host.device.write!(offset, new Uint8Array(bytes));
  return offset;
}

/** Frees a bitmap's table and the data clusters it names. */
async function freeBitmapClusters(host: WriterHost, bitmap: Working): Promise<void> {
  const { clusterSize } = host.metadata;
  const info = {
    name: utf8Decoder.decode(bitmap.name),
    flags: [],
    granularity: 2 ** bitmap.granularityBits,
    tableOffset: bitmap.tableOffset,
    tableSize: bitmap.tableSize,
    entryOffset: bitmap.entryOffset,
    flagBits: bitmap.flagBits,
    type: 1,
    extraDataSize: 0,
  };
  // Any table size: a bitmap in use may describe the disk as it was before a resize.
  for await (const cluster of bitmapClusters(host.device, info, undefined, clusterSize)) {
    if (cluster.kind === 'data') await host.allocator.releaseIfReferenced(cluster.offset, clusterSize);
  }
  await host.allocator.releaseIfReferenced(bitmap.tableOffset, alignUp(bitmap.tableSize * 8, clusterSize));
}
