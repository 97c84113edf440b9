/**
 * Several images read as one, end to end: what `convert` copies when it is
 * given more than one source, as qemu-img concatenates them. Each source
 * takes whole 512-byte sectors (qemu counts image sizes in sectors), so one
 * whose size is not a multiple of 512 is followed by zeros up to the next
 * sector, and the next source starts there.
 */

import { alignUp, checkRange } from '../core/bytes.js';
import { readFully } from '../core/device.js';
import type { Extent, Image, ImageDescription } from '../core/image.js';
import { settleAll } from '../core/slots.js';
import { SECTOR_SIZE } from './convert.js';

/** One source and where its sectors start in the whole. */
interface Part {
  image: Image;
  start: number;
  /** Its size rounded up to whole sectors. */
  span: number;
}

/** A read-only image of `images` laid end to end (at least one). */
export function concatImages(images: Image[]): Image {
  if (images.length === 0) throw new RangeError('concatImages needs at least one image');
  return new ConcatImage(images);
}

class ConcatImage implements Image {
  readonly writable = false;
  readonly format: string;
  readonly device;
  readonly name: string;
  readonly size: number;
  private readonly parts: Part[] = [];

  constructor(private readonly images: Image[]) {
    let start = 0;
    for (const image of images) {
      const span = alignUp(image.size, SECTOR_SIZE);
      this.parts.push({ image, start, span });
      start += span;
    }
    this.size = start;
    this.format = images[0]!.format;
    this.device = images[0]!.device;
    this.name = images.map((image) => image.name).join(' + ');
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const bytes = new Uint8Array(length);
    await this.readInto(offset, bytes);
    return bytes;
  }

  async readInto(offset: number, target: Uint8Array): Promise<void> {
    checkRange(offset, target.length, this.size, `read from ${this.name}`);
    const reads: Promise<void>[] = [];
    for (const { part, from, to } of this.pieces(offset, target.length)) {
      const into = target.subarray(part.start + from - offset, part.start + to - offset);
      const stored = Math.max(0, Math.min(to, part.image.size) - from);
      // Past the source's last byte, up to its sector's end: zeros.
      into.fill(0, stored);
      if (stored > 0) reads.push(readFully(part.image, from, into.subarray(0, stored)));
    }
    // Every piece settles before a failure is reported: nothing still lands in the caller's buffer afterwards.
    await settleAll(reads);
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    checkRange(offset, length, this.size, `block status of ${this.name}`);
    const extents: Extent[] = [];
    for (const { part, from, to } of this.pieces(offset, length)) {
      const stored = Math.min(to, part.image.size);
      if (stored > from) {
        for (const extent of await part.image.blockStatus(from, stored - from)) {
          extents.push({ ...extent, start: part.start + extent.start });
        }
      }
      if (to > stored) extents.push({ start: part.start + Math.max(from, stored), length: to - Math.max(from, stored), kind: 'zero', depth: 0 });
    }
    return extents;
  }

  describe(): ImageDescription {
    return {};
  }

  async close(): Promise<void> {
    await Promise.all(this.images.map((image) => image.close()));
  }

  /** The parts [offset, offset+length) touches, each with the range it covers in the part's own offsets. */
  private *pieces(offset: number, length: number): Generator<{ part: Part; from: number; to: number }> {
    const end = offset + length;
    for (const part of this.parts) {
      const partEnd = part.start + part.span;
      const from = Math.max(offset, part.start);
      const to = Math.min(end, partEnd);
      if (from < to) yield { part, from: from - part.start, to: to - part.start };
    }
  }
}
