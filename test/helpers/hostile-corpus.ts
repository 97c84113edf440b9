/**
 * The malformed-image corpus: each case pokes bytes of a small valid image
 * (test/helpers/hostile-qcow2.ts) the way qemu-iotests 060 and 080 do, or cuts
 * it short, or builds a hostile backing chain, and says what platter must answer.
 */

import { execFileSync } from 'node:child_process';
import { symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import type { ErrorCode } from '../../src/core/errors.js';
import {
  LAYOUT,
  buildQcow2,
  compressedEntry,
  putU16,
  putU32,
  putU64,
  zstdRleBomb,
  zstdRleFrame,
  type BaseImageOptions,
} from './hostile-qcow2.js';

/** What the runner reports for one case (see hostile-runner.mjs). */
export interface RunnerResult {
  name: string;
  ok: boolean;
  code?: ErrorCode;
  message?: string;
  foreign?: string;
  ms: number;
  /** CPU time (user + system) of the case. */
  cpuMs: number;
  unchanged: boolean;
  warnings?: string[];
  formats?: string[];
  extents?: Array<{ start: number; length: number; kind: string; depth: number; hostOffset?: number }>;
}

/** The expected answer: a specific error, or success with an optional check of the safe answer. */
export type Expectation = { code: ErrorCode; message: RegExp } | { ok: true; check?: (result: RunnerResult) => void };

/** One malformed input. */
export interface HostileCase {
  name: string;
  /** Writes the image (and any file it names) into `dir`; returns the path to open. */
  make(dir: string): string;
  options?: { format?: string; noBacking?: boolean };
  /** What opening, block status and reading every extent and snapshot answers. */
  expect: Expectation;
  /**
   * What `platter info --backing-chain` answers: the same error, success (it
   * reads no L2 table), a description of an image nothing else opens (an
   * encrypted one), or an error of its own.
   */
  info: 'same' | 'ok' | 'describes' | { code: ErrorCode; message: RegExp };
  /** Runs in a child of its own: a large case, whose peak memory must not mix with others'. */
  alone?: boolean;
}

const C = 4096; // cluster size of the base image
const at = (cluster: number) => cluster * C;
const L2 = at(LAYOUT.l2);
const EXT = 112; // first header extension (the feature table)

/** A case whose image is the base image with `mutate` applied. */
function poked(mutate: (image: Uint8Array) => void, base: BaseImageOptions = {}): HostileCase['make'] {
  return (dir) => {
    const image = buildQcow2(base);
    mutate(image);
    const path = join(dir, 'image.qcow2');
    writeFileSync(path, image);
    return path;
  };
}

const corrupt = (message: RegExp): Expectation => ({ code: 'ECORRUPT', message });
const limit = (message: RegExp): Expectation => ({ code: 'ELIMIT', message });
const unsupported = (message: RegExp): Expectation => ({ code: 'EUNSUPPORTED', message });

function headerCases(): HostileCase[] {
  const c = (name: string, mutate: (image: Uint8Array) => void, expect: Expectation, base?: BaseImageOptions): HostileCase => ({
    name: `header: ${name}`,
    make: poked(mutate, base),
    expect,
    info: 'same',
  });
  return [
    { ...c('bad magic, format forced', (i) => putU32(i, 0, 0), { code: 'EFORMAT', message: /not a qcow2 image \(bad magic\)/ }), options: { format: 'qcow2' } },
    c('bad magic, probed as raw', (i) => putU32(i, 0, 0), { ok: true, check: (r) => expectFormats(r, ['raw']) }),
    // qemu's total_sectors: a size in part sectors loses the part (the data cluster's bytes past it were read before).
    c('size not a multiple of 512', (i) => putU64(i, 24, 65528n), {
      ok: true,
      check: (r) => {
        const end = (r.extents ?? []).reduce((last, extent) => Math.max(last, extent.start + extent.length), 0);
        if (end !== 65024) throw new Error(`expected a disk of 65024 bytes, got ${end}`);
      },
    }),
    // qcow2's magic with version 1 is the older qcow format (qemu's probe says so too).
    c('version 1', (i) => putU32(i, 4, 1), unsupported(/qcow images are not supported/)),
    c('version 4', (i) => putU32(i, 4, 4), unsupported(/unsupported qcow2 version 4$/)),
    c('cluster_bits 8', (i) => putU32(i, 20, 8), corrupt(/cluster_bits 8 is outside 9\.\.21 \(at byte 20\)/)),
    c('cluster_bits 22', (i) => putU32(i, 20, 22), corrupt(/cluster_bits 22 is outside 9\.\.21/)),
    c('cluster_bits 2^32-1', (i) => putU32(i, 20, 0xffffffff), corrupt(/cluster_bits 4294967295 is outside/)),
    c('huge header_length', (i) => putU32(i, 100, 0xffffffff), corrupt(/header exceeds the cluster size \(header_length 4294967295\)/)),
    c('header_length below 104', (i) => putU32(i, 100, 100), corrupt(/header too short \(header_length 100\)/)),
    c('misaligned header_length', (i) => putU32(i, 100, 113), corrupt(/header_length 113 is not a multiple of 8/)),
    c('huge unknown header extension', (i) => (putU32(i, EXT, 0x12345678), putU32(i, EXT + 4, 0xffffffff)), corrupt(/header extension 0x12345678 too large \(4294967295 bytes\)/)),
    c('extension header cut by the backing name', (i) => (putU64(i, 8, EXT + 4), putU32(i, 16, 4)), corrupt(/header extension header truncated \(at byte 112\)/)),
    c('backing format name too long', () => {}, corrupt(/backing format name too long \(21 bytes\)/), { backingFormat: 'qcow2-but-much-longer', backingFile: 'base.qcow2' }),
    c('data file name too long', () => {}, limit(/external data file name too long \(1100 bytes\)/), { dataFile: 'd'.repeat(1100) }),
    c('data-file-raw without a data file', (i) => putU64(i, 88, 2n), corrupt(/data-file-raw is set without an external data file/)),
    c('unknown incompatible bit', (i) => putU64(i, 72, 1n << 5n), unsupported(/unsupported qcow2 feature\(s\): unknown incompatible feature bit 5/)),
    c('named unknown incompatible bit', (i) => putU64(i, 72, 1n << 9n), unsupported(/unsupported qcow2 feature\(s\): hostile test feature/)),
    c('unknown compression type', (i) => (i[104] = 2), unsupported(/unknown compression type 2/)),
    c('zstd without its feature bit', (i) => (i[104] = 1), corrupt(/compression type feature bit missing/)),
    c('deflate with the compression feature bit', (i) => putU64(i, 72, 1n << 3n), corrupt(/compression type feature bit set with deflate/)),
    c('refcount_order 7', (i) => putU32(i, 96, 7), corrupt(/refcount_order 7 is larger than 6/)),
    // info describes an encrypted image (without reading its data), as qemu-img info does; nothing else opens it.
    { ...c('AES encryption', (i) => putU32(i, 32, 1), unsupported(/encrypted images are not supported/)), info: 'describes' },
    {
      ...c('LUKS encryption', (i) => putU32(i, 32, 2), unsupported(/encrypted images are not supported/)),
      info: corrupt(/a LUKS-encrypted image without its encryption header extension/) as { code: ErrorCode; message: RegExp },
    },
    c('unknown encryption method', (i) => putU32(i, 32, 7), unsupported(/unsupported encryption method 7/)),
    c('extended L2 with 4 KiB clusters', (i) => putU64(i, 72, 1n << 4n), corrupt(/extended L2 entries need clusters of at least 16 KiB/)),
    c('virtual size above 2^53', (i) => putU64(i, 24, 0xffffffffffffffffn), corrupt(/virtual size is too large \(18446744073709551615\) \(at byte 24\)/)),
    c('virtual size 2^52 with a 2-entry L1', (i) => putU64(i, 24, 2n ** 52n), corrupt(/L1 table is too small \(2 entries for 4503599627370496 bytes\)/)),
    c('L1 table too small', (i) => putU32(i, 36, 1), corrupt(/L1 table is too small \(1 entries/)),
    c('L1 table too large', (i) => putU32(i, 36, 0x10000000), limit(/active L1 table too large \(268435456 entries\)/)),
    c('misaligned L1 table', (i) => putU64(i, 40, at(1) + 1), corrupt(/L1 table offset 4097 is not cluster-aligned \(at byte 40\)/)),
    c('L1 table past the end of the file', (i) => putU64(i, 40, 2 ** 28), corrupt(/L1 table at 268435456 \(16 bytes\) lies past the end of the file/)),
    c('L1 table offset above 2^53', (i) => putU64(i, 40, 1n << 60n), corrupt(/l1_table_offset is too large/)),
    c('no refcount table', (i) => putU32(i, 56, 0), corrupt(/does not contain a reference count table/)),
    c('huge refcount table', (i) => putU32(i, 56, 0xffffffff), limit(/reference count table too large \(4294967295 clusters\)/)),
    c('misaligned refcount table', (i) => putU64(i, 48, at(2) + 8), corrupt(/reference count table offset 8200 is not cluster-aligned/)),
    c('refcount table past the end of the file', (i) => putU64(i, 48, 2 ** 40), corrupt(/reference count table at 1099511627776 .* lies past the end/)),
    c('2^32-1 snapshots', (i) => putU32(i, 60, 0xffffffff), limit(/too many snapshots \(4294967295\)/)),
    // A snapshot table that runs past the end of the file reads as zeros there, as in qemu: it opens.
    { ...c('65536 snapshots past the end of the file', (i) => putU32(i, 60, 65536), { ok: true }), info: 'ok' },
    c('misaligned snapshot table', (i) => putU64(i, 64, at(8) + 1), corrupt(/snapshot table offset 32769 is not cluster-aligned/)),
    { ...c('snapshot table past the end of the file', (i) => putU64(i, 64, 2 ** 30), { ok: true }), info: 'ok' },
    c('backing file offset past cluster 0', (i) => (putU64(i, 8, C + 8), putU32(i, 16, 4)), corrupt(/invalid backing file offset 4104/)),
    c('invalid backing file size', (i) => (putU64(i, 8, 1024), putU32(i, 16, 0xffffffff)), corrupt(/backing file name too long \(4294967295 bytes\)/)),
    c('bitmaps extension of the wrong length', (i) => (putU32(i, EXT, 0x23852875), putU32(i, EXT + 4, 16)), corrupt(/bitmaps extension has 16 bytes, expected 24/)),
    c('2^32-1 bitmaps', (i) => bitmapsExtension(i, 0xffffffff, 4096, at(9)), limit(/too many bitmaps \(4294967295\)/)),
    c('huge bitmap directory', (i) => bitmapsExtension(i, 1, 2 ** 40, at(9)), limit(/bitmap directory too large \(1099511627776 bytes\)/)),
    c('bitmap directory past the end of the file', (i) => bitmapsExtension(i, 1, 4096, 2 ** 30), corrupt(/bitmap directory lies past the end of the file/)),
    // The exact values qemu-iotests 080 pokes.
    c('080: header_length 0x7fffffff', (i) => putU32(i, 100, 0x7fffffff), corrupt(/header exceeds the cluster size \(header_length 2147483647\)/)),
    c('080: backing offset 2^64-1 with a huge extension', (i) => (putU64(i, 8, 0xffffffffffffffffn), putU32(i, EXT, 0x12345678), putU32(i, EXT + 4, 0x7fffffff)), corrupt(/backing_file_offset is too large/)),
    c('080: extension running into the backing name', (i) => (putU64(i, 8, EXT + 4), putU32(i, EXT, 0x12345678), putU32(i, EXT + 4, 0x7fffffff)), corrupt(/header extension header truncated/)),
    c('080: huge extension, no backing name', (i) => (putU32(i, EXT, 0x12345678), putU32(i, EXT + 4, 0x7fffffff)), corrupt(/header extension 0x12345678 too large \(2147483647 bytes\)/)),
    c('080: refcount_table_clusters 0x20001', (i) => putU32(i, 56, 0x20001), limit(/reference count table too large \(131073 clusters\)/)),
    c('080: refcount table offset 0x1234567890abcdef', (i) => putU64(i, 48, 0x1234567890abcdefn), corrupt(/refcount_table_offset is too large/)),
    c('080: refcount table offset 0xffffffffffff0000', (i) => (putU64(i, 48, 0xffffffffffff0000n), putU32(i, 56, 0x7f)), corrupt(/refcount_table_offset is too large/)),
    c('080: 0x7fffffff snapshots', (i) => putU32(i, 60, 0x7fffffff), limit(/too many snapshots \(2147483647\)/)),
    c('080: 0xffff snapshots at 0xffffffffffff0000', (i) => (putU64(i, 64, 0xffffffffffff0000n), putU32(i, 60, 0xffff)), corrupt(/snapshots_offset is too large/)),
    c('080: no snapshots at offset 0x1234567890abcdef', (i) => (putU64(i, 64, 0x1234567890abcdefn), putU32(i, 60, 0)), corrupt(/snapshots_offset is too large/)),
    { ...c('080: 65536 snapshots at 16 MiB', (i) => (putU64(i, 64, 0x1000000), putU32(i, 60, 0x10000)), { ok: true }), info: 'ok' },
    c('080: l1_size 2^32-1', (i) => putU32(i, 36, 0xffffffff), limit(/active L1 table too large \(4294967295 entries\)/)),
    c('080: l1_size 0x7fffffff', (i) => putU32(i, 36, 0x7fffffff), limit(/active L1 table too large \(2147483647 entries\)/)),
    c('080: L1 at 0x7fffffffffff0000', (i) => (putU64(i, 40, 0x7fffffffffff0000n), putU32(i, 36, 0xffff)), corrupt(/l1_table_offset is too large/)),
    c('080: L1 at 0x1234567890abcdef', (i) => (putU64(i, 40, 0x1234567890abcdefn), putU32(i, 36, 1)), corrupt(/l1_table_offset is too large/)),
    c('encryption header pointer of the wrong length', (i) => (putU32(i, EXT, 0x0537be77), putU32(i, EXT + 4, 8)), corrupt(/encryption header pointer has 8 bytes, expected 16/)),
  ];
}

/** Replaces the feature table with a bitmaps extension and sets the bitmaps autoclear bit. */
function bitmapsExtension(image: Uint8Array, count: number, directorySize: number, directoryOffset: number): void {
  image.fill(0, EXT, EXT + 8 + 96 + 8);
  putU32(image, EXT, 0x23852875);
  putU32(image, EXT + 4, 24);
  putU32(image, EXT + 8, count);
  putU64(image, EXT + 16, directorySize);
  putU64(image, EXT + 24, directoryOffset);
  putU64(image, 88, 1n);
}

function expectFormats(result: RunnerResult, formats: string[]): void {
  if (JSON.stringify(result.formats) !== JSON.stringify(formats)) {
    throw new Error(`expected formats ${formats.join(',')}, got ${result.formats?.join(',')}`);
  }
}

/** Checks the first extent's kind and host offset: the safe answer for a pointer into metadata. */
function firstExtent(kind: string, hostOffset?: number): (result: RunnerResult) => void {
  return (result) => {
    const first = result.extents?.[0];
    if (first?.kind !== kind || first.hostOffset !== hostOffset) {
      throw new Error(`expected a first extent ${kind} at host ${hostOffset}, got ${JSON.stringify(first)}`);
    }
  };
}

const SNAPSHOT = at(LAYOUT.snapshotTable);

function tableCases(): HostileCase[] {
  const c = (name: string, mutate: (image: Uint8Array) => void, expect: Expectation, info: 'same' | 'ok', base?: BaseImageOptions): HostileCase => ({
    name,
    make: poked(mutate, base),
    expect,
    info,
  });
  const l2Entry = (index: number, value: bigint | number) => (i: Uint8Array) => putU64(i, L2 + index * 8, value);
  const stream = (bytes: Uint8Array, length = bytes.length) => (i: Uint8Array) => {
    i.fill(0, at(LAYOUT.compressed), at(LAYOUT.compressed + 1));
    i.set(bytes.subarray(0, C), at(LAYOUT.compressed));
    putU64(i, L2 + 8, compressedEntry(at(LAYOUT.compressed), Math.min(length, C), 12));
  };
  const zstd: BaseImageOptions = { compressionType: 1 };
  return [
    c('snapshot: too much extra data', (i) => putU32(i, SNAPSHOT + 36, 0xffffffff), corrupt(/too much extra data in snapshot table entry 0 \(4294967295 bytes\) \(at byte 32804\)/), 'same'),
    // Opened, as qemu opens it (check reports it); reading the snapshot is refused.
    c('snapshot: L1 table too large', (i) => putU32(i, SNAPSHOT + 8, 0x10000000), corrupt(/snapshot L1 table too large \(268435456 entries\)/), 'ok'),
    // The id and name read as zeros past the end of the file, as in qemu.
    c('snapshot: id and name past the end of the file', (i) => (putU16(i, SNAPSHOT + 12, 0xffff), putU16(i, SNAPSHOT + 14, 0xffff)), { ok: true }, 'ok'),
    c('snapshot: misaligned L1 table', (i) => putU64(i, SNAPSHOT, at(9) + 1), corrupt(/snapshot L1 table offset 36865 is not cluster-aligned/), 'ok'),
    c('snapshot: L1 table past the end of the file', (i) => putU64(i, SNAPSHOT, 2 ** 40), corrupt(/snapshot L1 table at 1099511627776 .* lies past the end/), 'ok'),
    c('snapshot: L1 offset above 2^53', (i) => putU64(i, SNAPSHOT, 1n << 62n), corrupt(/snapshot L1 table offset is too large/), 'same'),
    c('L1: misaligned L2 table', (i) => putU64(i, at(1), L2 + 512), corrupt(/L2 table offset 16896 is not cluster-aligned \(L1 index 0\)/), 'ok', { noSnapshot: true }),
    c('L1: L2 table past the end of the file', (i) => putU64(i, at(1), 2 ** 32), corrupt(/L2 table at 4294967296 lies past the end of the file/), 'ok', { noSnapshot: true }),
    c('L1: L2 offset above 2^53', (i) => putU64(i, at(1), 0x00fffffffffff000n), corrupt(/table entry points beyond 2\^53 bytes \(at byte 4096\)/), 'ok', { noSnapshot: true }),
    c('L1: L2 table is the refcount table', (i) => putU64(i, at(1), at(LAYOUT.refcountTable)), { ok: true, check: firstExtent('data', at(LAYOUT.refcountBlock)) }, 'ok', { noSnapshot: true }),
    c('L1: L2 table is the L1 table', (i) => putU64(i, at(1), at(LAYOUT.l1)), { ok: true, check: firstExtent('data', at(LAYOUT.l1)) }, 'ok', { noSnapshot: true }),
    c('L2: misaligned host offset', l2Entry(0, at(LAYOUT.data) + 512), corrupt(/cluster offset 20992 is not cluster-aligned \(L2 table at 16384, index 0\)/), 'ok'),
    c('L2: host offset above 2^53', l2Entry(0, 0x00fffffffffff000n), corrupt(/table entry points beyond 2\^53 bytes \(at byte 16384\)/), 'ok'),
    c('080: L2 entry 0xbfffffffffff0000', l2Entry(0, 0xbfffffffffff0000n), corrupt(/table entry points beyond 2\^53 bytes \(at byte 16384\)/), 'ok'),
    c('080: L2 entry 0x800000ffffff0000 reads zeros past the end', l2Entry(0, 0x800000ffffff0000n), { ok: true, check: firstExtent('data', 0xffffff0000) }, 'ok'),
    c('L2: host offset past the end of the file reads zeros', l2Entry(0, 2 ** 40), { ok: true, check: firstExtent('data', 2 ** 40) }, 'ok'),
    c('L2: entry pointing into the header', l2Entry(0, 1n << 63n), { ok: true, check: firstExtent('unallocated') }, 'ok'),
    c('L2: entry pointing into the refcount table', l2Entry(0, at(LAYOUT.refcountTable)), { ok: true, check: firstExtent('data', at(LAYOUT.refcountTable)) }, 'ok'),
    // Readers never need refcounts: these images read fine, and platter check must report, not crash.
    c('refcount: block past the end of the file', (i) => putU64(i, at(LAYOUT.refcountTable), 2 ** 40), { ok: true }, 'ok'),
    c('refcount: misaligned block', (i) => putU64(i, at(LAYOUT.refcountTable), at(LAYOUT.refcountBlock) + 8), { ok: true }, 'ok'),
    c('refcount: block offset above 2^53', (i) => putU64(i, at(LAYOUT.refcountTable), 0xfffffffffffffe00n), { ok: true }, 'ok'),
    c('refcount: block is the L1 table', (i) => putU64(i, at(LAYOUT.refcountTable), at(LAYOUT.l1)), { ok: true }, 'ok'),
    c('compressed: descriptor past the end of the file', l2Entry(1, compressedEntry(2 ** 40, 512, 12)), corrupt(/compressed cluster at 1099511627776 lies past the end of the file/), 'ok'),
    c('compressed: descriptor above 2^53', l2Entry(1, (1n << 62n) | (1n << 57n)), corrupt(/compressed cluster descriptor points beyond 2\^53 bytes/), 'ok'),
    c('compressed: garbage deflate stream', stream(new Uint8Array(512).fill(0xff)), corrupt(/cannot decompress the cluster at 24576: invalid deflate stream/), 'ok'),
    c('compressed: deflate stream one cluster short', stream(deflateRawSync(new Uint8Array(100))), corrupt(/compressed cluster at 24576 decodes to 100 bytes, not 4096/), 'ok'),
    c('compressed: deflate stream inflating to 4 MiB is cut at one cluster', stream(deflateRawSync(new Uint8Array(4 << 20)), C), { ok: true }, 'ok'),
    c('compressed: zstd RLE bomb', stream(zstdRleBomb(1000)), corrupt(/zstd frame cannot hold exactly 4096 bytes/), 'ok', zstd),
    c('compressed: zstd frame declaring 1 GiB', stream(zstdRleFrame(0x77, C, 2 ** 30)), corrupt(/zstd frame holds 1073741824 bytes, expected 4096/), 'ok', zstd),
    c('compressed: zstd frame with a bad magic', stream(new Uint8Array(64).fill(0x11)), corrupt(/not a zstd frame \(bad magic\)/), 'ok', zstd),
    c('compressed: zstd frame cut short', stream(zstdRleFrame(0x77, C).subarray(0, 10)), corrupt(/zstd frame is truncated/), 'ok', zstd),
    c('extended L2: subcluster both allocated and zero', (i) => putU64(i, at(LAYOUT.l2) * 4 + 8, 0x00000001_00000001n), corrupt(/subcluster both allocated and zero/), 'ok', { extendedL2: true, clusterBits: 14 }),
    c('extended L2: subclusters allocated without a host cluster', (i) => (putU64(i, at(LAYOUT.l2) * 4, 0n), putU64(i, at(LAYOUT.l2) * 4 + 8, 1n)), corrupt(/subclusters allocated without a host cluster/), 'ok', { extendedL2: true, clusterBits: 14 }),
  ];
}

/** Cuts the base image at `length` bytes. */
function cut(length: number, base: BaseImageOptions = {}): HostileCase['make'] {
  return (dir) => {
    const path = poked(() => {}, base)(dir);
    truncateSync(path, length);
    return path;
  };
}

/** What the reader must say for a base image cut at `length` (regions follow LAYOUT). */
function truncatedExpectation(length: number): { expect: Expectation; info: 'same' | 'ok' } {
  const same = (expect: Expectation) => ({ expect, info: 'same' as const });
  // No whole version field: version 0 (qemu reads past the end as zeros), so raw, as qemu's probe takes it.
  if (length < 8) return same({ ok: true, check: (r) => expectFormats(r, ['raw']) });
  // The magic and a version: qcow2 to qemu's probe, refused as too short (qemu-img: 'qcow2 header too short').
  if (length < 72) return same(corrupt(new RegExp(`qcow2 header truncated: ${length} of 72 bytes`)));
  if (length < 104) return same(corrupt(new RegExp(`qcow2 v3 header truncated: ${length} of 104 bytes`)));
  if (length < at(LAYOUT.l1) + 16) return same(corrupt(/L1 table at 4096 \(16 bytes\) lies past the end of the file/));
  if (length < at(LAYOUT.refcountBlock)) return same(corrupt(/reference count table at 8192 \(4096 bytes\) lies past the end/));
  // From here the image opens: the snapshot table reads as zeros past the end, as in qemu.
  const opened = (expect: Expectation) => ({ expect, info: 'ok' as const });
  if (length < L2 + C) return opened(corrupt(/L2 table at 16384 lies past the end of the file/));
  if (length <= at(LAYOUT.compressed)) return opened(corrupt(/compressed cluster at 24576 lies past the end of the file/));
  // (No cut point falls inside the compressed stream; data clusters read zeros past the end.)
  // The snapshot's L1 offset (0x9000, big-endian) reads as 0 until its byte 6 is in the file.
  if (length <= SNAPSHOT + 6) return opened({ ok: true });
  return opened(corrupt(/snapshot L1 table at 36864 \(16 bytes\) lies past the end/));
}

function truncationCases(): HostileCase[] {
  const points = [0, 3, 4, 7, 8, 24, 71, 72, 96, 103, 104, 111, 112, 120, 216, 223, 224, 1000, 4095, 4096, 4111, 4112, 8192, 12287, 12288, 20480, 32767, 32768, 32807, 32808, 32836, 32837, 36864, 36879];
  const cases: HostileCase[] = points.map((length) => ({ name: `truncated at ${length}`, make: cut(length), ...truncatedExpectation(length) }));
  // Without a snapshot table, cuts inside the mapping reach the L2 table and the clusters.
  const noSnapshot: BaseImageOptions = { noSnapshot: true };
  cases.push(
    { name: 'truncated at the L2 table', make: cut(L2, noSnapshot), expect: corrupt(/L2 table at 16384 lies past the end of the file/), info: 'ok' },
    { name: 'truncated inside the L2 table', make: cut(L2 + 100, noSnapshot), expect: corrupt(/L2 table at 16384 lies past the end of the file/), info: 'ok' },
    { name: 'truncated at the compressed cluster', make: cut(at(LAYOUT.compressed), noSnapshot), expect: corrupt(/compressed cluster at 24576 lies past the end of the file/), info: 'ok' },
    { name: 'truncated inside the compressed stream', make: cut(at(LAYOUT.compressed) + 4, noSnapshot), expect: corrupt(/compressed cluster at 24576 decodes to \d+ bytes, not 4096|cannot decompress the cluster at 24576/), info: 'ok' },
    { name: 'truncated inside a data cluster reads zeros past the end', make: cut(at(LAYOUT.data2) + 100, noSnapshot), expect: { ok: true, check: firstExtent('data', at(LAYOUT.data)) }, info: 'ok' },
  );
  return cases;
}

/** A chain of images, each naming the next as its backing file; returns the top. */
function chainCase(dir: string, names: string[], backingOf: (index: number) => string | undefined): string {
  names.forEach((name, index) => {
    const backing = backingOf(index);
    const options: BaseImageOptions = { clusterBits: 9, empty: true, noSnapshot: true, virtualSize: 64 * 1024 };
    if (backing !== undefined) Object.assign(options, { backingFile: backing, backingFormat: 'qcow2' });
    writeFileSync(join(dir, name), buildQcow2(options));
  });
  return join(dir, names[0]!);
}

function chainCases(): HostileCase[] {
  const deep = Array.from({ length: 1000 }, (_, index) => `layer${index}.qcow2`);
  return [
    {
      name: 'backing: an image that is its own backing file',
      make: (dir) => chainCase(dir, ['self.qcow2'], () => 'self.qcow2'),
      expect: limit(/backing chain has a cycle: .*self\.qcow2 -> .*self\.qcow2/),
      info: 'same',
    },
    {
      name: 'backing: a cycle of two images',
      make: (dir) => chainCase(dir, ['a.qcow2', 'b.qcow2'], (index) => (index === 0 ? 'b.qcow2' : 'a.qcow2')),
      expect: limit(/backing chain has a cycle: .*a\.qcow2 -> .*b\.qcow2 -> .*a\.qcow2/),
      info: 'same',
    },
    {
      name: 'backing: a cycle through a symlink',
      make: (dir) => {
        symlinkSync('top.qcow2', join(dir, 'alias.qcow2'));
        return chainCase(dir, ['top.qcow2'], () => 'alias.qcow2');
      },
      expect: limit(/backing chain has a cycle/),
      info: 'same',
    },
    {
      name: 'backing: a chain 1000 deep',
      make: (dir) => chainCase(dir, deep, (index) => deep[index + 1]),
      expect: limit(/backing chain is deeper than 64 images/),
      info: 'same',
    },
    {
      name: 'backing: a FIFO as backing file (would block an open)',
      make: (dir) => {
        execFileSync('mkfifo', [join(dir, 'pipe')]);
        return chainCase(dir, ['top.qcow2'], () => 'pipe');
      },
      expect: unsupported(/refusing file name 'pipe': it is not a regular file or block device/),
      info: 'same',
    },
    {
      name: 'backing: a character device as backing file',
      make: (dir) => chainCase(dir, ['top.qcow2'], () => '/dev/zero'),
      expect: unsupported(/refusing file name '\/dev\/zero': it is not a regular file or block device/),
      info: 'same',
    },
    {
      name: 'backing: a missing backing file',
      make: (dir) => chainCase(dir, ['top.qcow2'], () => 'missing.qcow2'),
      expect: { code: 'ENOTFOUND', message: /could not open backing file '.*missing\.qcow2'/ },
      info: 'same',
    },
    {
      name: 'data file: compressed cluster in an image with a data file',
      make: (dir) => {
        writeFileSync(join(dir, 'data.raw'), new Uint8Array(C * 8));
        // Cluster 0 left unallocated: its data lies elsewhere than at guest offset 0, which a data file refuses first.
        const poke = (i: Uint8Array) => (putU64(i, L2, 0n), putU64(i, L2 + 8, compressedEntry(at(LAYOUT.compressed), 512, 12)));
        return poked(poke, { dataFile: 'data.raw', noSnapshot: true })(dir);
      },
      expect: corrupt(/compressed cluster in an image with an external data file/),
      info: 'ok',
    },
    {
      name: 'data file: flag set but no name',
      make: poked((i) => putU64(i, 72, 1n << 2n), { noSnapshot: true }),
      expect: corrupt(/needs an external data file but does not name one/),
      info: 'same',
    },
  ];
}

/** A 32 MiB L1 table of zeros (8 TiB disk): block status must not walk it entry by entry slowly. */
function hugeL1Case(): HostileCase {
  return {
    name: 'L1: a 32 MiB table of empty entries',
    alone: true,
    make: (dir) => {
      const entries = (32 * 1024 * 1024) / 8;
      const base = buildQcow2({ noSnapshot: true, empty: true });
      putU32(base, 36, entries);
      putU64(base, 24, entries * (C / 8) * C);
      putU64(base, 40, base.length);
      const path = join(dir, 'image.qcow2');
      writeFileSync(path, base);
      truncateSync(path, base.length + entries * 8);
      return path;
    },
    expect: { ok: true, check: firstExtent('unallocated') },
    info: 'same',
  };
}

/** The most snapshots qemu allows, each an empty 40-byte entry: accepted, in bounded time and memory. */
function manySnapshotsCase(): HostileCase {
  return {
    name: 'snapshot: 65536 entries (the most qemu allows)',
    alone: true,
    make: (dir) => {
      const base = buildQcow2({ noSnapshot: true });
      const count = 65536;
      const image = new Uint8Array(base.length + count * 40);
      image.set(base);
      putU32(image, 60, count);
      putU64(image, 64, base.length);
      const path = join(dir, 'image.qcow2');
      writeFileSync(path, image);
      return path;
    },
    expect: { ok: true, check: firstExtent('data', at(LAYOUT.data)) },
    info: 'same',
  };
}

/** The most bitmaps qemu allows, each a 32-byte directory entry: accepted. */
function manyBitmapsCase(): HostileCase {
  return {
    name: 'bitmaps: 65535 directory entries (the most qemu allows)',
    alone: true,
    make: (dir) => {
      const base = buildQcow2({ noSnapshot: true });
      const count = 65535;
      const image = new Uint8Array(base.length + count * 32);
      image.set(base);
      const clusterSize = 2 ** new DataView(base.buffer, base.byteOffset).getUint32(20);
      for (let index = 0; index < count; index++) {
        const entry = base.length + index * 32;
        // Each an entry qemu accepts: a dirty-tracking bitmap in use (its table, never read, may be of any size).
        putU32(image, entry + 4, clusterSize); // bitmap_table_offset: cluster 1
        putU32(image, entry + 8, 1); // bitmap_table_size
        putU32(image, entry + 12, 1); // flags: in use
        image[entry + 16] = 1; // type: dirty tracking
        image[entry + 17] = 16; // granularity_bits
        putU16(image, entry + 18, 1); // name_size
        image[entry + 24] = 0x62; // 'b'
      }
      bitmapsExtension(image, count, count * 32, base.length);
      const path = join(dir, 'image.qcow2');
      writeFileSync(path, image);
      return path;
    },
    expect: { ok: true },
    info: 'same',
  };
}

/**
 * 2 MiB clusters and 32 distinct L2 tables in a sparse file: the L2 cache must
 * stay within its 32 MiB bound however many tables a walk touches.
 */
function bigClusterCase(): HostileCase {
  return {
    name: 'L2: 32 tables of 2 MiB clusters (twice what the L2 cache holds)',
    alone: true,
    make: (dir) => {
      const clusterBits = 21;
      const cluster = 2 ** clusterBits;
      const tables = 32;
      const base = buildQcow2({ clusterBits, noSnapshot: true, empty: true, virtualSize: tables * (cluster / 8) * cluster });
      const head = base.subarray(0, 2 * cluster); // header and L1 (the rest of the base image is not needed)
      const firstTable = LAYOUT.clusters;
      for (let index = 0; index < tables; index++) putU64(head, cluster + index * 8, (1n << 63n) | BigInt((firstTable + index) * cluster));
      const path = join(dir, 'image.qcow2');
      writeFileSync(path, base);
      // Sparse: the L2 tables read as zeros (all unallocated) and take no disk space.
      truncateSync(path, (firstTable + tables) * cluster);
      writeFileSync(path, head, { flag: 'r+' });
      return path;
    },
    expect: { ok: true, check: firstExtent('unallocated') },
    info: 'same',
  };
}

/** Every case of the qcow2 corpus. */
export function qcow2Corpus(): HostileCase[] {
  return [...headerCases(), ...tableCases(), ...truncationCases(), ...chainCases(), hugeL1Case(), manySnapshotsCase(), manyBitmapsCase(), bigClusterCase()];
}
