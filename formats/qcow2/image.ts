/**
 * A read-only qcow2 image: guest reads and block status over the cluster map,
 * with compressed clusters, external data files and a backing chain.
 */

import { readFully, type BlockDevice } from '../../src/core/device.js';
import { checkRange } from '../../src/core/bytes.js';
import { NotFoundError, PlatterError, ReadOnlyError, UnsupportedFeatureError } from '../../src/core/errors.js';
import type { Extent, Image, ImageDescription, ImageHost, ZeroWriteOptions } from '../../src/core/image.js';
import { MAX_IO_BYTES } from '../../src/core/limits.js';
import type { CompressedDescriptor } from './entries.js';
import { COMPRESSED_WINDOW_BYTES, STREAM_BUFFER_BYTES, STREAM_BUFFERS_KEPT } from './limits.js';
import { BufferPool } from '../../src/core/buffer-pool.js';
import { ClusterMap, mappingUnit, type MappingRun } from './clusters.js';
import { readCompressedClusters } from './compress.js';
import { describeQcow2 } from './describe.js';
import type { Qcow2Metadata } from './metadata.js';
import type { Qcow2Writer } from './write.js';
import type { ResizePreallocation } from './resize.js';
import { canEmptyCompletely, emptyCompletely } from './empty.js';
import { L2Cache } from './l2-cache.js';

/** The parts a Qcow2Image is made of; `open` and snapshot views assemble them. */
export interface Qcow2Parts {
  /** The qcow2 file. */
  device: BlockDevice;
  /** Where guest data clusters live: the qcow2 file, or the external data file (absent when not opened). */
  dataDevice?: BlockDevice;
  metadata: Qcow2Metadata;
  map: ClusterMap;
  /** Virtual size (a snapshot view has the snapshot's size). */
  size: number;
  backing?: Image;
  host: ImageHost;
  /** Present when the image is open for writing. */
  writer?: Qcow2Writer;
  /** False for views that share files with another image: closing them leaves the files open. */
  ownsFiles: boolean;
}

/** A qcow2 image opened for reading. */
export class Qcow2Image implements Image {
  readonly format = 'qcow2';
  readonly device: BlockDevice;
  readonly backing: Image | undefined;
  readonly metadata: Qcow2Metadata;
  /** The last decompressed cluster: sequential reads in small chunks decode each cluster once. */
  private lastCompressed?: { hostOffset: number; data: Uint8Array };
  /** Buffers for the compressed streams of a read, reused from read to read; shared, so decoder threads read them in place. */
  private readonly streamBuffers = new BufferPool({ keep: STREAM_BUFFERS_KEPT, minimum: STREAM_BUFFER_BYTES, shared: true });

  constructor(private readonly parts: Qcow2Parts) {
    this.device = parts.device;
    this.backing = parts.backing;
    this.metadata = parts.metadata;
  }

  /** True when the image was opened for writing. */
  get writable(): boolean {
    return this.parts.writer !== undefined;
  }

  /** The write side, when the image was opened for writing. */
  get writer(): Qcow2Writer | undefined {
    return this.parts.writer;
  }

  /** Virtual size in bytes (changes with `resize`). */
  get size(): number {
    return this.parts.size;
  }

  get name(): string {
    return this.device.name;
  }

  /** The device guest data clusters are read from (the qcow2 file or its external data file). */
  get dataDevice(): BlockDevice | undefined {
    return this.parts.dataDevice;
  }

  /** The runtime services the image was opened with. */
  get host(): ImageHost {
    return this.parts.host;
  }

  /** The guest-offset → host mapping (for tools that walk clusters). */
  get clusterMap(): ClusterMap {
    return this.parts.map;
  }

  async read(offset: number, length: number): Promise<Uint8Array> {
    const out = new Uint8Array(length);
    await this.readInto(offset, out);
    return out;
  }

  /**
   * Reads guest bytes into `target` (a reused buffer: every byte is written,
   * zero runs included). Host-contiguous data runs become one device read;
   * compressed clusters are decoded together, several in flight, after the walk.
   */
  async readInto(offset: number, target: Uint8Array): Promise<void> {
    this.refuseEncrypted();
    await this.naming(() => this.readGuest(offset, target));
  }

  /** An encrypted image is opened only to be described: its data is not readable here. */
  private refuseEncrypted(): void {
    if (this.parts.metadata.encrypt) throw new UnsupportedFeatureError('encrypted images are not supported').inFile(this.name);
  }

  /**
   * Runs `work`, naming this image in an error that names no file yet, so a
   * corruption met while reading reports the file it is in (a backing file
   * names itself first).
   */
  private async naming<T>(work: () => Promise<T>): Promise<T> {
    try {
      return await work();
    } catch (error) {
      if (error instanceof PlatterError) error.inFile(this.name);
      throw error;
    }
  }

  private async readGuest(offset: number, target: Uint8Array): Promise<void> {
    checkRange(offset, target.length, this.size, `read from ${this.name}`);
    // Data runs that continue each other on the host (across L2 tables too) become one device read.
    let pending: { at: number; hostOffset: number; length: number } | undefined;
    const flush = async () => {
      if (pending) await readHost(this.requireDataDevice(), pending.hostOffset, target.subarray(pending.at, pending.at + pending.length));
      pending = undefined;
    };
    const compressed: MappingRun[] = [];
    for await (const batch of this.parts.map.runBatches(offset, target.length)) {
      for (const run of batch) {
        const at = run.start - offset;
        if (run.type === 'normal') {
          if (pending && pending.hostOffset + pending.length === run.hostOffset) {
            pending.length += run.length;
            continue;
          }
          await flush();
          pending = { at, hostOffset: run.hostOffset!, length: run.length };
          continue;
        }
        await flush();
        if (run.type === 'compressed') compressed.push(run);
        else await this.readRun(run, target.subarray(at, at + run.length));
      }
    }
    await flush();
    for (let first = 0; first < compressed.length; first += this.compressedWindow) {
      await this.readCompressedRuns(compressed.slice(first, first + this.compressedWindow), offset, target);
    }
  }

  /** Compressed clusters decoded at once by one read: bounds the memory a large read holds. */
  private get compressedWindow(): number {
    return Math.max(1, Math.floor(COMPRESSED_WINDOW_BYTES / this.metadata.clusterSize));
  }

  /**
   * Decodes the clusters under `runs` (each once, all in flight) into `target`.
   * A cluster that one run covers whole is decoded straight into its place;
   * the others (partly read, or named twice) into a buffer of their own, whose
   * last one is kept for the next read.
   */
  private async readCompressedRuns(runs: MappingRun[], offset: number, target: Uint8Array): Promise<void> {
    const { clusterSize, header } = this.metadata;
    const clusters = new Map<number, Uint8Array>();
    if (this.lastCompressed) clusters.set(this.lastCompressed.hostOffset, this.lastCompressed.data);
    const uses = new Map<number, number>();
    for (const { compressed } of runs) uses.set(compressed!.hostOffset, (uses.get(compressed!.hostOffset) ?? 0) + 1);
    const inPlace = new Set<number>();
    const wanted: CompressedDescriptor[] = [];
    const outputs: Uint8Array[] = [];
    for (const run of runs) {
      const { hostOffset } = run.compressed!;
      if (clusters.has(hostOffset)) continue;
      const whole = uses.get(hostOffset) === 1 && run.start === run.clusterStart && run.length === clusterSize;
      const output = whole ? target.subarray(run.start - offset, run.start - offset + clusterSize) : new Uint8Array(clusterSize);
      if (whole) inPlace.add(hostOffset);
      clusters.set(hostOffset, output);
      wanted.push(run.compressed!);
      outputs.push(output);
    }
    const { codecs } = this.parts.host;
    await readCompressedClusters(this.device, wanted, clusterSize, header.compressionType, codecs, outputs, this.streamBuffers);
    for (const run of runs) {
      if (inPlace.has(run.compressed!.hostOffset)) continue;
      const from = run.start - run.clusterStart!;
      target.set(clusters.get(run.compressed!.hostOffset)!.subarray(from, from + run.length), run.start - offset);
    }
    const last = runs[runs.length - 1]!.compressed!.hostOffset;
    if (!inPlace.has(last)) this.lastCompressed = { hostOffset: last, data: clusters.get(last)! };
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkRange(offset, data.length, this.size, `write to ${this.name}`);
    await this.requireWriter().write(offset, data);
    this.lastCompressed = undefined;
  }

  /** Makes [offset, offset+length) read as zeros, storing zero clusters where it can. */
  async writeZeroes(offset: number, length: number, options: ZeroWriteOptions = {}): Promise<void> {
    checkRange(offset, length, this.size, `zero write to ${this.name}`);
    await this.requireWriter().writeZeroes(offset, length, options.keepAllocation, options.fast);
  }

  /** The smallest range a zero write can mark zero without storing it: a subcluster with extended L2, else a cluster. */
  get zeroUnit(): number {
    return mappingUnit(this.metadata.geometry);
  }

  /**
   * Makes whole clusters read as zeros over a backing image of `backingSize`
   * bytes (undefined: none) in place of the one open now (see rebase).
   */
  async writeZeroesOver(offset: number, length: number, backingSize: number | undefined): Promise<void> {
    checkRange(offset, length, this.size, `zero write to ${this.name}`);
    await this.requireWriter().writeZeroesOver(offset, length, backingSize);
  }

  /** Deallocates the whole clusters inside the range (they read from the backing file, or as zeros). */
  async discard(offset: number, length: number): Promise<void> {
    checkRange(offset, length, this.size, `discard on ${this.name}`);
    await this.requireWriter().discard(offset, length);
  }

  /** A guest's discard: frees whole clusters, which then read zeros where they would otherwise show older data (see Qcow2Writer.trim). */
  async trim(offset: number, length: number): Promise<void> {
    checkRange(offset, length, this.size, `discard on ${this.name}`);
    await this.requireWriter().trim(offset, length);
  }

  /** Changes the virtual size (shrinking frees the clusters past the new end; growing may preallocate what it adds). */
  async resize(size: number, preallocation: ResizePreallocation = 'off'): Promise<void> {
    checkRange(size, 0, Number.MAX_SAFE_INTEGER, `resize of ${this.name}`);
    await this.requireWriter().resize(size, preallocation);
  }

  /**
   * Empties the whole image in place, as qemu-img commit does when it can
   * (see empty.ts); false, changing nothing, when the image does not qualify.
   * It then reads as empty, and takes no more writes until opened again.
   */
  async emptyCompletely(): Promise<boolean> {
    const writer = this.requireWriter();
    const { metadata, device } = this.parts;
    if (!canEmptyCompletely(metadata)) return false;
    await writer.retire(() => emptyCompletely(device, metadata));
    this.parts.map = new ClusterMap(metadata.geometry, metadata.l1, metadata.header.l1TableOffset, new L2Cache(device, metadata.clusterSize));
    return true;
  }

  /** Makes every write so far durable. */
  async flush(): Promise<void> {
    if (this.parts.writer) await this.parts.writer.flush();
    else await this.device.flush?.();
  }

  private requireWriter(): Qcow2Writer {
    if (!this.parts.writer) throw new ReadOnlyError(`${this.name} is open read-only`);
    return this.parts.writer;
  }

  async blockStatus(offset: number, length: number): Promise<Extent[]> {
    this.refuseEncrypted();
    checkRange(offset, length, this.size, `block status of ${this.name}`);
    return this.naming(async () => {
      const extents: Extent[] = [];
      for await (const batch of this.parts.map.runBatches(offset, length)) {
        for (const run of batch) {
          const status = this.runStatus(run);
          for (const extent of Array.isArray(status) ? status : await status) appendExtent(extents, extent);
        }
      }
      return extents;
    });
  }

  describe(): ImageDescription {
    return describeQcow2(this.metadata, this.device, this.parts.host);
  }

  async allocatedBytes(): Promise<number | undefined> {
    return this.device.allocatedBytes?.();
  }

  async close(): Promise<void> {
    if (!this.parts.ownsFiles) return;
    await this.parts.writer?.close();
    await this.backing?.close();
    if (this.parts.dataDevice && this.parts.dataDevice !== this.device) await this.parts.dataDevice.close();
    await this.device.close();
  }

  /** Fills `target` for an unallocated or zero run: from the backing image, or with zeros. */
  private async readRun(run: MappingRun, target: Uint8Array): Promise<void> {
    if ((run.type === 'unallocated' || run.type === 'unallocated-alloc') && this.backing) {
      await readBacking(this.backing, run.start, target);
    } else {
      target.fill(0);
    }
  }

  private requireDataDevice(): BlockDevice {
    if (!this.parts.dataDevice) {
      throw new NotFoundError(`the external data file '${this.metadata.extensions.dataFile ?? ''}' is not open`);
    }
    return this.parts.dataDevice;
  }

  /** A run's extents: from this image alone when it can answer (no await per cluster), else from the backing file. */
  private runStatus(run: MappingRun): Extent[] | Promise<Extent[]> {
    const { start, length } = run;
    switch (run.type) {
      case 'normal':
        return [{ start, length, kind: 'data', depth: 0, hostOffset: run.hostOffset! }];
      case 'compressed':
        return [{ start, length, kind: 'data', depth: 0, compressed: true }];
      case 'zero-plain':
        return [{ start, length, kind: 'zero', depth: 0 }];
      case 'zero-alloc':
        return [{ start, length, kind: 'zero', depth: 0, hostOffset: run.hostOffset! }];
      default: {
        if (this.backing) return backingStatus(this.backing, start, length, run.hostOffset);
        const extent: Extent = { start, length, kind: 'unallocated', depth: 1 };
        // qemu reports the reserved host cluster of an unallocated subcluster too.
        if (run.hostOffset !== undefined) extent.hostOffset = run.hostOffset;
        return [extent];
      }
    }
  }
}

/**
 * Block status of the backing image for a range the top leaves unallocated:
 * depths grow by one. Past the end of a shorter backing image the range stays
 * unallocated (it reads as zeros) and the search stopped at this layer, so its
 * depth counts this layer only, as qemu's block layer reports it.
 */
async function backingStatus(backing: Image, start: number, length: number, hostOffset?: number): Promise<Extent[]> {
  const inside = Math.max(0, Math.min(length, backing.size - start));
  const extents: Extent[] = [];
  if (inside > 0) {
    for (const extent of await backing.blockStatus(start, inside)) extents.push({ ...extent, depth: extent.depth + 1 });
  }
  if (inside < length) {
    const tail: Extent = { start: start + inside, length: length - inside, kind: 'unallocated', depth: 1 };
    // A reserved but unallocated subcluster keeps its host offset, as in qemu.
    if (hostOffset !== undefined) tail.hostOffset = hostOffset + inside;
    extents.push(tail);
  }
  return extents;
}

/** Reads guest bytes from a backing image; bytes past its end stay zero. */
async function readBacking(backing: Image, start: number, target: Uint8Array): Promise<void> {
  const inside = Math.max(0, Math.min(target.length, backing.size - start));
  target.fill(0, inside);
  for (let done = 0; done < inside; ) {
    const chunk = Math.min(inside - done, MAX_IO_BYTES);
    target.set(await backing.read(start + done, chunk), done);
    done += chunk;
  }
}

/**
 * Reads host bytes into `target`, in device reads of at most MAX_IO_BYTES.
 * Past the end of the file the bytes read as zeros, as qemu's file layer does
 * (an external data file is often shorter than the guest disk).
 */
async function readHost(device: BlockDevice, hostOffset: number, target: Uint8Array): Promise<void> {
  const inside = Math.max(0, Math.min(target.length, device.size - hostOffset));
  target.fill(0, inside);
  for (let done = 0; done < inside; ) {
    const chunk = Math.min(inside - done, MAX_IO_BYTES);
    await readFully(device, hostOffset + done, target.subarray(done, done + chunk));
    done += chunk;
  }
}

/** Appends an extent, merging it into the previous one when they continue each other. */
export function appendExtent(extents: Extent[], extent: Extent): void {
  const last = extents[extents.length - 1];
  if (
    last &&
    last.start + last.length === extent.start &&
    last.kind === extent.kind &&
    last.depth === extent.depth &&
    (last.compressed ?? false) === (extent.compressed ?? false) &&
    (last.hostOffset === undefined
      ? extent.hostOffset === undefined
      : extent.hostOffset === last.hostOffset + last.length)
  ) {
    last.length += extent.length;
    return;
  }
  extents.push({ ...extent });
}
