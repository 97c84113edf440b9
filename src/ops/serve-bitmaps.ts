/**
 * serve -B: persistent dirty bitmaps exported as qemu:dirty-bitmap:NAME
 * metadata contexts, as qemu-nbd -B exports them. A bitmap is looked for in
 * the image, then down its backing chain; one missing or inconsistent (left
 * in use) is refused with qemu-nbd's words. Bits are read from the file a
 * window at a time, per query; an enabled bitmap of an image being written
 * through this export also shows what was written since (qemu's bits are
 * live), each range widened to the bitmap's granularity.
 */

import { NotFoundError, UnsupportedFeatureError } from '../core/errors.js';
import type { Image } from '../core/image.js';
import { DIRTY_BITMAP_PREFIX, DIRTY_FLAG } from '../nbd/constants.js';
import type { ExportWindow } from '../nbd/export.js';
import { MAX_STATUS_DESCRIPTORS } from '../nbd/limits.js';
import type { StatusRun } from '../nbd/replies.js';
import { appendRun, type MetaContext } from '../nbd/status.js';
import { BITMAP_AUTO, BITMAP_IN_USE, dirtyRanges, Qcow2Image, type BitmapInfo } from '../../formats/qcow2/index.js';

/** The layer of `image`'s chain that has a bitmap `name`, nearest the top first. */
function findBitmapLayer(image: Image, name: string): Qcow2Image {
  for (let layer: Image | undefined = image; layer; layer = layer.backing) {
    if (layer instanceof Qcow2Image && layer.metadata.bitmaps.some((bitmap) => bitmap.name === name)) return layer;
  }
  throw new NotFoundError(`Bitmap '${name}' is not found`);
}

/** The bitmap as the layer describes it now (marking it in use for writes changes its entry). */
function bitmapOf(layer: Qcow2Image, name: string): BitmapInfo {
  const bitmap = layer.metadata.bitmaps.find((candidate) => candidate.name === name);
  if (!bitmap) throw new NotFoundError(`Bitmap '${name}' is not found`);
  return bitmap;
}

/**
 * The contexts for `names` over `window` of `image`, in the order qemu-nbd
 * offers them (the last -B first). Throws, before anything is served, on a
 * bitmap that is missing or inconsistent.
 */
export function bitmapContexts(image: Image, names: readonly string[], window: ExportWindow): MetaContext[] {
  return [...names].reverse().map((name) => {
    const layer = findBitmapLayer(image, name);
    if ((bitmapOf(layer, name).flagBits & BITMAP_IN_USE) !== 0) {
      throw new UnsupportedFeatureError(`Bitmap '${name}' is inconsistent and cannot be used`);
    }
    return { name: `${DIRTY_BITMAP_PREFIX}${name}`, status: (offset, length) => bitmapRuns(layer, name, window, offset, length) };
  });
}

/** Status runs of one bitmap over [offset, offset+length) of the export. */
async function bitmapRuns(layer: Qcow2Image, name: string, window: ExportWindow, offset: number, length: number): Promise<StatusRun[]> {
  const bitmap = bitmapOf(layer, name);
  const start = window.start + offset;
  const end = start + length;
  const dirty: [number, number][] = [];
  // Cut short once a reply's worth is found: the client asks again from where the runs stop.
  let covered = end;
  for await (const [from, to] of dirtyRanges(layer.device, bitmap, layer.size, layer.metadata.clusterSize, { start, end })) {
    if (from >= end) break;
    dirty.push([Math.max(from, start), Math.min(to, end)]);
    if (dirty.length >= MAX_STATUS_DESCRIPTORS / 2) {
      covered = Math.min(to, end);
      break;
    }
  }
  if ((bitmap.flagBits & BITMAP_AUTO) !== 0 && layer.writer) dirty.push(...writtenGranules(layer, bitmap, start, covered));
  return toRuns(joinRanges(dirty), start, covered);
}

/** What was written into [start, end) since the bitmaps were marked, widened to the bitmap's granules and cut to the range. */
function writtenGranules(layer: Qcow2Image, bitmap: BitmapInfo, start: number, end: number): [number, number][] {
  const granularity = bitmap.granularity;
  const ranges: [number, number][] = [];
  for (const [from, to] of layer.writer!.writtenRanges()) {
    const wideFrom = Math.max(start, Math.floor(from / granularity) * granularity);
    const wideTo = Math.min(end, layer.size, Math.ceil(to / granularity) * granularity);
    if (wideFrom < wideTo) ranges.push([wideFrom, wideTo]);
  }
  return ranges;
}

/** Ranges sorted, overlapping and touching ones joined. */
function joinRanges(ranges: [number, number][]): [number, number][] {
  const joined: [number, number][] = [];
  for (const [from, to] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = joined[joined.length - 1];
    if (last && from <= last[1]) last[1] = Math.max(last[1], to);
    else joined.push([from, to]);
  }
  return joined;
}

/** Dirty and clean runs over [start, end), from sorted disjoint dirty ranges inside it. */
function toRuns(dirty: readonly [number, number][], start: number, end: number): StatusRun[] {
  const runs: StatusRun[] = [];
  let at = start;
  for (const [from, to] of dirty) {
    if (from > at && !appendRun(runs, from - at, 0)) return runs;
    if (!appendRun(runs, to - from, DIRTY_FLAG)) return runs;
    at = to;
  }
  if (end > at) appendRun(runs, end - at, 0);
  return runs;
}
