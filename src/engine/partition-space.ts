/**
 * Free space and alignment inside a disk or an extended partition, computed as
 * libfdisk computes them for sfdisk: sectors are counted inclusive at both ends.
 */

import { alignDown, alignUp } from '../core/bytes.js';

/**
 * fdisk's alignment inside [low, high]: `lba` rounded to the grain (up, or down
 * when past the aligned end) when the range holds a grain boundary after its
 * aligned start; `lba` unchanged when the range is too small.
 */
export function alignInRange(lba: number, low: number, high: number, grain: number): number {
  const first = alignUp(low, grain);
  const last = alignDown(high, grain);
  if (first >= last) return lba;
  return Math.min(Math.max(alignUp(lba, grain), first), last);
}

/**
 * libfdisk's alignment of a partition's end: `lba` rounded to the nearest grain
 * boundary (halves up), kept between the first boundary at or after `low` and
 * the last at or before `high`.
 */
export function nearestInRange(lba: number, low: number, high: number, grain: number): number {
  const nearest = Math.floor((lba + Math.floor(grain / 2)) / grain) * grain;
  const first = alignUp(low, grain);
  const last = alignDown(high, grain);
  if (nearest < first) return first;
  return nearest > last ? last : nearest;
}

/** Sectors [start, end], both inclusive (as libfdisk counts them). */
export interface Span {
  start: number;
  end: number;
}

/** `sector` moved past every span (sorted by start) that holds it, and `gap` sectors more each time. */
export function firstFree(sector: number, used: readonly Span[], gap = 0): number {
  for (const span of used) {
    if (span.start > sector) break;
    if (sector <= span.end) sector = span.end + 1 + gap;
  }
  return sector;
}

/** `sector` moved back before every span that holds it: the last free sector at or before it. */
export function lastFreeBefore(sector: number, used: readonly Span[]): number {
  for (let moved = true; moved; ) {
    moved = false;
    for (const span of used) {
      if (sector >= span.start && sector <= span.end) {
        sector = span.start - 1;
        moved = true;
      }
    }
  }
  return sector;
}

/** The last sector of the free area from `sector` on: before the next used span (sorted by start), at most `limit`. */
export function lastFree(sector: number, used: readonly Span[], limit: number): number {
  for (const span of used) if (span.start > sector) return Math.min(limit, span.start - 1);
  return limit;
}

/** The free areas of [low, high] between the used spans (sorted by start), in order. */
export function freeAreas(low: number, high: number, used: readonly Span[]): Span[] {
  const areas: Span[] = [];
  let at = low;
  for (const span of used) {
    if (span.start > high) break;
    if (span.start > at) areas.push({ start: at, end: span.start - 1 });
    at = Math.max(at, span.end + 1);
  }
  if (at <= high) areas.push({ start: at, end: high });
  return areas;
}
