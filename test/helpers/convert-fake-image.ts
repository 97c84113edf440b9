/** An in-memory Image with scripted extents that records every read, for the copy and compare tests. */

import { checkRange } from '../../src/core/bytes.js';
import { MemoryDevice } from '../../src/core/device.js';
import type { Extent, ExtentKind, Image, ImageDescription } from '../../src/core/image.js';

/** One scripted run: its kind, and for data runs the bytes. */
export interface ScriptedRun {
  kind: ExtentKind;
  length: number;
  /** Fill byte for data runs (0 makes a data run that holds only zeros). */
  fill?: number;
  /** Depth to report (default 0). */
  depth?: number;
  /** Host offset to report for the run's start. */
  hostOffset?: number;
}

/** A read the image served. */
export interface RecordedRead {
  offset: number;
  length: number;
}

/**
 * The image's bytes are the runs laid end to end: data runs hold `fill`
 * (with a few varied bytes so offsets matter), other runs zeros. Reading any byte
 * of a zero or unallocated run throws, so tests can prove such runs are never read.
 */
export class ScriptedImage implements Image {
  readonly format = 'scripted';
  readonly writable = false;
  readonly name: string;
  readonly device: MemoryDevice;
  readonly extents: Extent[] = [];
  readonly reads: RecordedRead[] = [];
  readonly bytes: Uint8Array;
  /** Largest answer to one blockStatus call, to mimic readers that answer per cluster. */
  statusPieceSize = Infinity;
  backing?: Image;

  constructor(runs: readonly ScriptedRun[], name = 'scripted.img') {
    this.name = name;
    const size = runs.reduce((sum, run) => sum + run.length, 0);
    this.bytes = new Uint8Array(size);
    let at = 0;
    for (const run of runs) {
      if (run.length === 0) continue;
      if (run.kind === 'data' && run.fill) {
        this.bytes.fill(run.fill, at, at + run.length);
        this.bytes[at + (run.length >> 1)] = (run.fill * 7 + at) & 0xff;
      }
      this.extents.push({ start: at, length: run.length, kind: run.kind, depth: run.depth ?? 0, hostOffset: run.hostOffset });
      at += run.length;
    }
    this.device = new MemoryDevice(0, { name });
  }

  get size(): number {
    return this.bytes.length;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    checkRange(offset, length, this.size, 'scripted read');
    for (const extent of this.extents) {
      const overlaps = extent.start < offset + length && offset < extent.start + extent.length;
      if (overlaps && extent.kind !== 'data') {
        throw new Error(`read of ${offset}+${length} touches a ${extent.kind} extent at ${extent.start}`);
      }
    }
    this.reads.push({ offset, length });
    return this.bytes.slice(offset, offset + length);
  }

  /** Serves reads through `readInto` too (set before use) to exercise the buffer-reusing path. */
  enableReadInto(): void {
    this.readInto = async (offset: number, target: Uint8Array) => {
      target.set(await this.read(offset, target.length));
    };
  }

  readInto?: (offset: number, target: Uint8Array) => Promise<void>;

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    checkRange(offset, length, this.size, 'scripted block status');
    const end = offset + length;
    const out: Extent[] = [];
    for (const extent of this.extents) {
      const from = Math.max(offset, extent.start);
      const to = Math.min(end, extent.start + extent.length);
      for (let at = from; at < to; at += this.statusPieceSize) {
        const pieceEnd = Math.min(to, at + this.statusPieceSize);
        const hostOffset = extent.hostOffset === undefined ? undefined : extent.hostOffset + (at - extent.start);
        out.push({ ...extent, start: at, length: pieceEnd - at, hostOffset });
      }
    }
    return out;
  }

  describe(): ImageDescription {
    return {};
  }

  async close(): Promise<void> {}
}

/** A MemoryDevice that records its writes. */
export class RecordingDevice extends MemoryDevice {
  readonly writes: RecordedRead[] = [];

  override async write(offset: number, data: Uint8Array): Promise<void> {
    this.writes.push({ offset, length: data.length });
    await super.write(offset, data);
  }
}
