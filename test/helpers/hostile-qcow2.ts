/**
 * A small, valid qcow2 image built in memory, with every structure the hostile
 * corpus pokes: header extensions, L1 and L2 tables, a refcount table and block,
 * normal, zero and compressed clusters, and one internal snapshot.
 * The layout is fixed, so a case can poke a known byte offset.
 */

import { deflateRawSync } from 'node:zlib';

/** Where everything sits, in clusters. */
export const LAYOUT = {
  header: 0,
  l1: 1,
  refcountTable: 2,
  refcountBlock: 3,
  l2: 4,
  data: 5,
  compressed: 6,
  data2: 7,
  snapshotTable: 8,
  snapshotL1: 9,
  clusters: 10,
} as const;

/** Build choices for the base image. */
export interface BaseImageOptions {
  clusterBits?: number;
  version?: 2 | 3;
  /** 0 deflate, 1 zstd. */
  compressionType?: 0 | 1;
  extendedL2?: boolean;
  /** Backing file name written after the extensions. */
  backingFile?: string;
  backingFormat?: string;
  /** External data file name (sets the data-file incompatible bit). */
  dataFile?: string;
  /** Leave out the snapshot (nb_snapshots 0). */
  noSnapshot?: boolean;
  /** Leave out data and L2 (an empty image). */
  empty?: boolean;
  virtualSize?: number;
}

/** Byte pattern of the first data cluster. */
export const DATA_BYTE = 0xa5;
/** Byte pattern of the second data cluster. */
export const DATA2_BYTE = 0x5a;
/** Byte the compressed cluster repeats (one zstd RLE block holds it). */
export const COMPRESSED_BYTE = 0x77;

/** A zstd frame of one RLE block: `size` copies of `byte`, content size declared as `declaredSize`. */
export function zstdRleFrame(byte: number, size: number, declaredSize = size): Uint8Array {
  const header = (size << 3) | (1 << 1) | 1;
  return Uint8Array.from([
    0x28, 0xb5, 0x2f, 0xfd, 0x80, 0x58,
    declaredSize & 0xff, (declaredSize >>> 8) & 0xff, (declaredSize >>> 16) & 0xff, (declaredSize >>> 24) & 0xff,
    header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff, byte,
  ]);
}

/** A zstd frame with no content size whose RLE blocks expand to `blocks` × 128 KiB (a "zip bomb"). */
export function zstdRleBomb(blocks: number): Uint8Array {
  const out = [0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x58];
  for (let i = 0; i < blocks; i++) {
    const header = ((128 * 1024) << 3) | (1 << 1) | (i === blocks - 1 ? 1 : 0);
    out.push(header & 0xff, (header >> 8) & 0xff, (header >> 16) & 0xff, 0x00);
  }
  return Uint8Array.from(out);
}

/** Writes a big-endian u64 given as a bigint or number. */
export function putU64(bytes: Uint8Array, offset: number, value: bigint | number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setBigUint64(offset, BigInt(value), false);
}

/** Writes a big-endian u32. */
export function putU32(bytes: Uint8Array, offset: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint32(offset, value >>> 0, false);
}

/** Writes a big-endian u16. */
export function putU16(bytes: Uint8Array, offset: number, value: number): void {
  new DataView(bytes.buffer, bytes.byteOffset).setUint16(offset, value, false);
}

/** The compressed descriptor for a stream of `length` bytes at `hostOffset`. */
export function compressedEntry(hostOffset: number, length: number, clusterBits: number): bigint {
  const offsetBits = BigInt(62 - (clusterBits - 8));
  const sectors = Math.ceil(((hostOffset % 512) + length) / 512);
  return (1n << 62n) | (BigInt(sectors - 1) << offsetBits) | BigInt(hostOffset);
}

/** Builds the base image. Offsets of every structure follow LAYOUT × cluster size. */
export function buildQcow2(options: BaseImageOptions = {}): Uint8Array {
  const clusterBits = options.clusterBits ?? 12;
  const cluster = 2 ** clusterBits;
  const version = options.version ?? 3;
  const extendedL2 = options.extendedL2 ?? false;
  const entryBytes = extendedL2 ? 16 : 8;
  const l2Span = (cluster / entryBytes) * cluster;
  const virtualSize = options.virtualSize ?? 2 * l2Span;
  const l1Size = Math.ceil(virtualSize / l2Span);
  const image = new Uint8Array(LAYOUT.clusters * cluster);
  const at = (index: number) => index * cluster;
  writeHeader(image, { ...options, clusterBits, version, extendedL2, virtualSize, l1Size, cluster });
  // Refcount table → one block; every cluster of the file has refcount 1 (16-bit refcounts).
  putU64(image, at(LAYOUT.refcountTable), at(LAYOUT.refcountBlock));
  for (let index = 0; index < LAYOUT.clusters; index++) putU16(image, at(LAYOUT.refcountBlock) + index * 2, 1);
  const shared = !options.empty && !options.noSnapshot;
  // With the snapshot, the L2 table and its clusters are referenced twice: refcount 2, no COPIED flags.
  if (shared) for (let index = LAYOUT.l2; index <= LAYOUT.data2; index++) putU16(image, at(LAYOUT.refcountBlock) + index * 2, 2);
  if (!options.empty) {
    writeMapping(image, { clusterBits, cluster, entryBytes, extendedL2, version, copied: !shared, compressionType: options.compressionType ?? 0 });
  }
  if (!options.noSnapshot) writeSnapshot(image, cluster, l1Size, virtualSize, options.empty === true);
  return image;
}

interface HeaderParams extends BaseImageOptions {
  clusterBits: number;
  version: 2 | 3;
  extendedL2: boolean;
  virtualSize: number;
  l1Size: number;
  cluster: number;
}

function writeHeader(image: Uint8Array, p: HeaderParams): void {
  putU32(image, 0, 0x514649fb);
  putU32(image, 4, p.version);
  putU32(image, 20, p.clusterBits);
  putU64(image, 24, p.virtualSize);
  putU32(image, 36, p.l1Size);
  putU64(image, 40, LAYOUT.l1 * p.cluster);
  putU64(image, 48, LAYOUT.refcountTable * p.cluster);
  putU32(image, 56, 1);
  putU32(image, 60, p.noSnapshot ? 0 : 1);
  putU64(image, 64, p.noSnapshot ? 0 : LAYOUT.snapshotTable * p.cluster);
  let extensionsAt = 72;
  if (p.version === 3) {
    let incompatible = 0n;
    if (p.dataFile !== undefined) incompatible |= 1n << 2n;
    if (p.compressionType === 1) incompatible |= 1n << 3n;
    if (p.extendedL2) incompatible |= 1n << 4n;
    putU64(image, 72, incompatible);
    putU32(image, 96, 4);
    putU32(image, 100, 112);
    image[104] = p.compressionType ?? 0;
    extensionsAt = 112;
  }
  const records: Array<[number, Uint8Array]> = [];
  const text = new TextEncoder();
  if (p.backingFormat !== undefined) records.push([0xe2792aca, text.encode(p.backingFormat)]);
  if (p.dataFile !== undefined) records.push([0x44415441, text.encode(p.dataFile)]);
  if (p.version === 3) records.push([0x6803f857, featureTable()]);
  for (const [type, data] of records) {
    putU32(image, extensionsAt, type);
    putU32(image, extensionsAt + 4, data.length);
    image.set(data, extensionsAt + 8);
    extensionsAt += 8 + Math.ceil(data.length / 8) * 8;
  }
  extensionsAt += 8; // end marker (zeros)
  if (p.backingFile !== undefined) {
    const name = text.encode(p.backingFile);
    putU64(image, 8, extensionsAt);
    putU32(image, 16, name.length);
    image.set(name, extensionsAt);
  }
}

/** The feature-name table: one named unknown incompatible bit (bit 9) so messages can name it. */
function featureTable(): Uint8Array {
  const entries = [
    [0, 0, 'dirty bit'],
    [0, 9, 'hostile test feature'],
  ] as const;
  const out = new Uint8Array(entries.length * 48);
  entries.forEach(([type, bit, name], index) => {
    out[index * 48] = type;
    out[index * 48 + 1] = bit;
    out.set(new TextEncoder().encode(name), index * 48 + 2);
  });
  return out;
}

function writeMapping(
  image: Uint8Array,
  p: { clusterBits: number; cluster: number; entryBytes: number; extendedL2: boolean; version: number; copied: boolean; compressionType: number },
): void {
  const at = (index: number) => index * p.cluster;
  const copied = p.copied ? 1n << 63n : 0n;
  putU64(image, at(LAYOUT.l1), copied | BigInt(at(LAYOUT.l2)));
  const l2 = at(LAYOUT.l2);
  const allSubclusters = 0xffffffffn;
  // Entry 0: normal data; entry 1: compressed; entry 2: zero; entry 3: normal data.
  putU64(image, l2, copied | BigInt(at(LAYOUT.data)));
  if (p.extendedL2) putU64(image, l2 + 8, allSubclusters);
  image.fill(DATA_BYTE, at(LAYOUT.data), at(LAYOUT.data + 1));
  const stream =
    p.compressionType === 1
      ? zstdRleFrame(COMPRESSED_BYTE, p.cluster)
      : new Uint8Array(deflateRawSync(new Uint8Array(p.cluster).fill(COMPRESSED_BYTE)));
  const streamAt = at(LAYOUT.compressed);
  image.set(stream.subarray(0, p.cluster), streamAt);
  putU64(image, l2 + p.entryBytes, compressedEntry(streamAt, Math.min(stream.length, p.cluster), p.clusterBits));
  if (p.extendedL2) putU64(image, l2 + 2 * p.entryBytes + 8, allSubclusters << 32n);
  else if (p.version === 3) putU64(image, l2 + 2 * p.entryBytes, 1n); // version 2 has no zero flag
  putU64(image, l2 + 3 * p.entryBytes, copied | BigInt(at(LAYOUT.data2)));
  if (p.extendedL2) putU64(image, l2 + 3 * p.entryBytes + 8, allSubclusters);
  image.fill(DATA2_BYTE, at(LAYOUT.data2), at(LAYOUT.data2 + 1));
}

/** One snapshot entry (40 bytes, 24 bytes extra data, id "1", name "snap") with its own L1 copy. */
function writeSnapshot(image: Uint8Array, cluster: number, l1Size: number, virtualSize: number, empty: boolean): void {
  const entry = LAYOUT.snapshotTable * cluster;
  putU64(image, entry, LAYOUT.snapshotL1 * cluster);
  putU32(image, entry + 8, l1Size);
  putU16(image, entry + 12, 1);
  putU16(image, entry + 14, 4);
  putU32(image, entry + 16, 1_700_000_000);
  putU32(image, entry + 36, 24);
  putU64(image, entry + 48, virtualSize);
  putU64(image, entry + 56, 0xffffffffffffffffn);
  image.set(new TextEncoder().encode('1snap'), entry + 64);
  if (!empty) putU64(image, LAYOUT.snapshotL1 * cluster, BigInt(LAYOUT.l2 * cluster));
}
