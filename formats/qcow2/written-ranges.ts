/**
 * The guest byte ranges written since an image's enabled bitmaps were marked
 * in use: what their bits must gain when they are stored again (see
 * storeWrittenBitmaps). Kept as sorted, disjoint runs, adjacent ones joined,
 * so a sequential copy is one run whatever its size. Scattered writes are
 * bounded by MAX_WRITTEN_RUNS: past it, runs are widened to a coarser grain
 * and joined. A bit set that nothing wrote costs an incremental backup a few
 * more bytes; a bit missed would lose data, so widening is the safe way.
 */

import { MAX_WRITTEN_RUNS } from './limits.js';

/** The grain runs are first widened to when there are too many (the smallest bitmap granularity). */
const FIRST_GRAIN = 512;

export class WrittenRanges {
  /** Runs [start, end), sorted by start, disjoint and not touching. */
  private runs: [number, number][] = [];
  private grain = 1;

  /** `limit`: the most runs kept (a test may ask for fewer). */
  constructor(private readonly limit = MAX_WRITTEN_RUNS) {}

  /** Notes that [offset, offset+length) was written. */
  add(offset: number, length: number): void {
    if (length <= 0) return;
    let start = offset;
    let end = offset + length;
    if (this.grain > 1) {
      start -= start % this.grain;
      end = Math.ceil(end / this.grain) * this.grain;
    }
    const runs = this.runs;
    const last = runs[runs.length - 1];
    // Sequential writes (a copy): one run grows at the end.
    if (!last || start > last[1]) {
      runs.push([start, end]);
    } else if (start >= last[0]) {
      last[1] = Math.max(last[1], end);
    } else {
      this.insert(start, end);
    }
    if (runs.length > this.limit) this.widen();
  }

  /** True when nothing was written. */
  get empty(): boolean {
    return this.runs.length === 0;
  }

  /** The runs, in order. */
  list(): readonly (readonly [number, number])[] {
    return this.runs;
  }

  clear(): void {
    this.runs = [];
    this.grain = 1;
  }

  /** Joins [start, end) with the runs it overlaps or touches, keeping the order. */
  private insert(start: number, end: number): void {
    const runs = this.runs;
    let low = 0;
    let high = runs.length;
    // The first run that ends at or after `start` (it may touch or overlap).
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (runs[middle]![1] < start) low = middle + 1;
      else high = middle;
    }
    let last = low;
    while (last < runs.length && runs[last]![0] <= end) last++;
    if (last > low) {
      start = Math.min(start, runs[low]![0]);
      end = Math.max(end, runs[last - 1]![1]);
    }
    runs.splice(low, last - low, [start, end]);
  }

  /** Widens every run to a doubled grain until at most half the limit is left. */
  private widen(): void {
    while (this.runs.length > this.limit / 2) {
      this.grain = Math.max(FIRST_GRAIN, this.grain * 2);
      const widened: [number, number][] = [];
      for (const [from, to] of this.runs) {
        const start = from - (from % this.grain);
        const end = Math.ceil(to / this.grain) * this.grain;
        const last = widened[widened.length - 1];
        if (last && start <= last[1]) last[1] = Math.max(last[1], end);
        else widened.push([start, end]);
      }
      this.runs = widened;
    }
  }
}
