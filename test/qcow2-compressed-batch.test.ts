/**
 * Compressed clusters decoded in batches: nearby streams share one device
 * read, all decodes are in flight together, results come back in the order
 * asked whatever order the decoders finish in, and a bad stream still fails
 * with a corruption error naming its host offset.
 */

import { deflateRawSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { MemoryDevice } from '../src/core/device.js';
import type { Codecs } from '../src/core/image.js';
import { readCompressedClusters } from '../formats/qcow2/compress.js';
import type { CompressedDescriptor } from '../formats/qcow2/entries.js';
import { nodeCodecs } from '../src/node/codecs.js';

const CLUSTER = 4096;
const clusterOf = (seed: number) => Uint8Array.from({ length: CLUSTER }, (_, i) => (i * seed + (i >> 6)) & 0xff);

/** Streams packed back to back from offset 512, as qemu packs them; descriptors round up to 512-byte sectors. */
function packedImage(count: number): { device: MemoryDevice; descriptors: CompressedDescriptor[]; clusters: Uint8Array[] } {
  const clusters = Array.from({ length: count }, (_, index) => clusterOf(index + 3));
  const streams = clusters.map((cluster) => new Uint8Array(deflateRawSync(cluster)));
  const descriptors: CompressedDescriptor[] = [];
  let at = 512;
  for (const stream of streams) {
    const sectorEnd = Math.ceil((at + stream.length) / 512) * 512;
    descriptors.push({ hostOffset: at, length: sectorEnd - at });
    at += stream.length;
  }
  const bytes = new Uint8Array(Math.ceil(at / 512) * 512 + 512);
  let offset = 512;
  for (const stream of streams) {
    bytes.set(stream, offset);
    offset += stream.length;
  }
  return { device: new MemoryDevice(bytes), descriptors, clusters };
}

/** Counts the device reads made through a device. */
function countingReads(device: MemoryDevice): { device: MemoryDevice; reads: () => number } {
  let reads = 0;
  const read = device.read.bind(device);
  device.read = (offset: number, length: number) => {
    reads++;
    return read(offset, length);
  };
  const readInto = device.readInto.bind(device);
  device.readInto = (offset: number, target: Uint8Array) => {
    reads++;
    return readInto(offset, target);
  };
  return { device, reads: () => reads };
}

describe('compressed clusters in batches', () => {
  it('reads packed streams in one device read and decodes each cluster', async () => {
    const { device, descriptors, clusters } = packedImage(20);
    const counted = countingReads(device);
    const out = await readCompressedClusters(counted.device, descriptors, CLUSTER, 0, nodeCodecs);
    expect(out).toEqual(clusters);
    expect(counted.reads()).toBe(1);
  });

  it('keeps the order asked when the decoders finish in reverse order, with all in flight at once', async () => {
    const { device, descriptors, clusters } = packedImage(8);
    let inFlight = 0;
    let peak = 0;
    const waiting: (() => void)[] = [];
    const slowCodecs: Codecs = {
      ...nodeCodecs,
      async inflateRawInto(input, output) {
        inflateCalls++;
        inFlight++;
        peak = Math.max(peak, inFlight);
        // Hold every decode until all have started, then release them last-first.
        await new Promise<void>((resolve) => {
          waiting.push(resolve);
          if (waiting.length === descriptors.length) for (const release of waiting.reverse()) setTimeout(release, 0);
        });
        inFlight--;
        return nodeCodecs.inflateRawInto!(input, output);
      },
    };
    let inflateCalls = 0;
    const reversed = [...descriptors].reverse();
    const out = await readCompressedClusters(device, reversed, CLUSTER, 0, slowCodecs);
    expect(out).toEqual([...clusters].reverse());
    expect(inflateCalls).toBe(descriptors.length);
    expect(peak).toBe(descriptors.length);
  });

  it('a corrupt stream in a batch fails with ECORRUPT at its host offset', async () => {
    const { device, descriptors } = packedImage(6);
    device.contents().fill(0xff, descriptors[3]!.hostOffset, descriptors[3]!.hostOffset + 16);
    const failure = readCompressedClusters(device, descriptors, CLUSTER, 0, nodeCodecs);
    await expect(failure).rejects.toMatchObject({ code: 'ECORRUPT' });
    await expect(failure).rejects.toThrow(String(descriptors[3]!.hostOffset));
  });

  it('a descriptor past the end of the file fails before anything is read', async () => {
    const { device, descriptors } = packedImage(2);
    const counted = countingReads(device);
    const beyond = { hostOffset: device.size + 4096, length: 512 };
    await expect(readCompressedClusters(counted.device, [...descriptors, beyond], CLUSTER, 0, nodeCodecs)).rejects.toThrow(
      /past the end of the file/,
    );
    expect(counted.reads()).toBe(0);
  });

  it('streams far apart in the file are read separately', async () => {
    const { device, descriptors, clusters } = packedImage(2);
    const grown = new MemoryDevice(new Uint8Array(16 * 1024 * 1024));
    grown.contents().set(device.contents());
    const farAway = 12 * 1024 * 1024;
    const second = descriptors[1]!;
    grown.contents().set(device.contents().subarray(second.hostOffset, second.hostOffset + second.length), farAway);
    const counted = countingReads(grown);
    const out = await readCompressedClusters(counted.device, [descriptors[0]!, { hostOffset: farAway, length: second.length }], CLUSTER, 0, nodeCodecs);
    expect(out).toEqual(clusters);
    expect(counted.reads()).toBe(2);
  });

  it('the one-pass inflate keeps qemu\'s rules: a longer stream gives its first cluster, trailing bytes are ignored', async () => {
    const two = new Uint8Array([...clusterOf(5), ...clusterOf(9)]);
    await expect(nodeCodecs.inflateRaw(new Uint8Array(deflateRawSync(two)), CLUSTER)).resolves.toEqual(clusterOf(5));
    const trailing = new Uint8Array([...deflateRawSync(clusterOf(5)), 1, 2, 3]);
    await expect(nodeCodecs.inflateRaw(trailing, CLUSTER)).resolves.toEqual(clusterOf(5));
    await expect(nodeCodecs.inflateRaw(new Uint8Array([0xff, 0xff, 0xff]), CLUSTER)).rejects.toMatchObject({ code: 'ECORRUPT' });
  });
});
