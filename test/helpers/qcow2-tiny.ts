/**
 * A tiny qcow2 image built in memory, byte by byte from the spec, for hostile
 * input tests: 64 KiB clusters, 1 MiB disk; cluster 0 of the guest is plain
 * data, cluster 1 is deflate-compressed, cluster 2 reads as zeros, the rest is
 * unallocated.
 */

import { deflateRawSync } from 'node:zlib';
import { encodeHeader, type Qcow2Header } from '../../formats/qcow2/header.js';
import { COPIED_BIT, ZERO_BIT, encodeCompressedDescriptor } from '../../formats/qcow2/entries.js';

const CLUSTER = 65536;

/** Where things are in the tiny image. */
export const TINY_LAYOUT = {
  refcountTable: 1 * CLUSTER,
  refcountBlock: 2 * CLUSTER,
  l1Table: 3 * CLUSTER,
  l2Table: 4 * CLUSTER,
  dataCluster: 5 * CLUSTER,
  compressed: 6 * CLUSTER,
  clusterSize: CLUSTER,
  size: 1 << 20,
};

/** The guest bytes of the tiny image's first two clusters. */
export function tinyGuestPattern(cluster: number): Uint8Array {
  return Uint8Array.from({ length: CLUSTER }, (_, i) => (i * (cluster + 3) + (i >> 9)) & 0xff);
}

/** Builds the image. */
export function buildTinyQcow2(): Uint8Array {
  const compressed = deflateRawSync(tinyGuestPattern(1));
  const image = new Uint8Array(TINY_LAYOUT.compressed + Math.ceil(compressed.length / 512) * 512);
  const view = new DataView(image.buffer);
  const header: Qcow2Header = {
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: 16,
    size: TINY_LAYOUT.size,
    cryptMethod: 0,
    l1Size: 1,
    l1TableOffset: TINY_LAYOUT.l1Table,
    refcountTableOffset: TINY_LAYOUT.refcountTable,
    refcountTableClusters: 1,
    nbSnapshots: 0,
    snapshotsOffset: 0,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    autoclearFeatures: 0n,
    refcountOrder: 4,
    headerLength: 112,
    compressionType: 0,
    unknownHeaderBytes: new Uint8Array(0),
  };
  image.set(encodeHeader(header));
  view.setBigUint64(TINY_LAYOUT.refcountTable, BigInt(TINY_LAYOUT.refcountBlock));
  for (let cluster = 0; cluster * CLUSTER < image.length; cluster++) view.setUint16(TINY_LAYOUT.refcountBlock + cluster * 2, 1);
  view.setBigUint64(TINY_LAYOUT.l1Table, COPIED_BIT | BigInt(TINY_LAYOUT.l2Table));
  view.setBigUint64(TINY_LAYOUT.l2Table, COPIED_BIT | BigInt(TINY_LAYOUT.dataCluster));
  view.setBigUint64(TINY_LAYOUT.l2Table + 8, encodeCompressedDescriptor(TINY_LAYOUT.compressed, compressed.length, 16));
  view.setBigUint64(TINY_LAYOUT.l2Table + 16, ZERO_BIT);
  image.set(tinyGuestPattern(0), TINY_LAYOUT.dataCluster);
  image.set(compressed, TINY_LAYOUT.compressed);
  return image;
}
