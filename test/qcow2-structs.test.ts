import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  HEADER_V2_BYTES,
  HeaderV2,
  HeaderV3Fields,
  decodeHeader,
  encodeHeader,
  parseHeader,
  type Qcow2Header,
} from '../formats/qcow2/header.js';
import {
  BitmapsExtension,
  EXT_BACKING_FORMAT,
  EXT_FEATURE_TABLE,
  ExtensionHeader,
  FeatureNameEntry,
  encodeExtensions,
  parseExtensions,
} from '../formats/qcow2/extensions.js';
import { SnapshotHeader } from '../formats/qcow2/snapshots.js';
import {
  clusterType,
  compressedDescriptor,
  encodeCompressedDescriptor,
  l1EntryL2Offset,
  subclusterType,
} from '../formats/qcow2/entries.js';

describe('qcow2 struct sizes', () => {
  it('has a 72-byte v2 header and v3 fields through byte 112', () => {
    expect(HeaderV2.size).toBe(72);
    expect(HEADER_V2_BYTES + HeaderV3Fields.size).toBe(112);
  });
  it('has 8-byte extension headers, 48-byte feature names, 24-byte bitmaps extension', () => {
    expect(ExtensionHeader.size).toBe(8);
    expect(FeatureNameEntry.size).toBe(48);
    expect(BitmapsExtension.size).toBe(24);
  });
  it('has a 40-byte snapshot entry fixed part', () => {
    expect(SnapshotHeader.size).toBe(40);
  });
});

const headerArb = fc
  .record({
    version: fc.constantFrom(2 as const, 3 as const),
    clusterBits: fc.integer({ min: 9, max: 21 }),
    size: fc.integer({ min: 0, max: 2 ** 40 }),
    backingFileOffset: fc.integer({ min: 0, max: 2 ** 40 }),
    backingFileSize: fc.integer({ min: 0, max: 1023 }),
    cryptMethod: fc.integer({ min: 0, max: 2 }),
    l1Size: fc.nat(),
    l1TableOffset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    refcountTableOffset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    refcountTableClusters: fc.nat(),
    nbSnapshots: fc.nat(),
    snapshotsOffset: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }),
    incompatibleFeatures: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    compatibleFeatures: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    autoclearFeatures: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    refcountOrder: fc.integer({ min: 0, max: 6 }),
    headerLength: fc.constantFrom(104, 112, 120),
    compressionType: fc.integer({ min: 0, max: 255 }),
    extra: fc.uint8Array({ minLength: 8, maxLength: 8 }),
  })
  .map(({ extra, ...fields }): Qcow2Header => {
    if (fields.version === 2) {
      return {
        ...fields,
        incompatibleFeatures: 0n,
        compatibleFeatures: 0n,
        autoclearFeatures: 0n,
        refcountOrder: 4,
        headerLength: 72,
        compressionType: 0,
        unknownHeaderBytes: new Uint8Array(0),
      };
    }
    return {
      ...fields,
      compressionType: fields.headerLength > 104 ? fields.compressionType : 0,
      unknownHeaderBytes: fields.headerLength > 112 ? extra : new Uint8Array(0),
    };
  });

describe('qcow2 header codec', () => {
  it('round-trips every header through encode and decode', () => {
    fc.assert(
      fc.property(headerArb, (header) => {
        const encoded = encodeHeader(header);
        expect(encoded.length).toBe(header.headerLength);
        expect(decodeHeader(encoded)).toEqual(header);
      }),
    );
  });

  it('refuses a bad magic and a bad cluster size', () => {
    expect(() => parseHeader(new Uint8Array(112))).toThrow(/bad magic/);
    const header = decodeHeader(encodeHeader(sampleHeader()));
    header.clusterBits = 22;
    expect(() => parseHeader(encodeHeader(header))).toThrow(expect.objectContaining({ code: 'ECORRUPT' }));
  });

  it('accepts a valid v3 header', () => {
    expect(parseHeader(encodeHeader(sampleHeader()), 4 * 65536).size).toBe(1 << 20);
  });
});

describe('qcow2 header extensions', () => {
  it('round-trips known and unknown records in order', () => {
    const name = new Uint8Array(48);
    name.set([0, 3]);
    name.set(new TextEncoder().encode('compression type'), 2);
    const records = [
      { type: EXT_BACKING_FORMAT, data: new TextEncoder().encode('raw') },
      { type: 0x12345678, data: new Uint8Array([1, 2, 3, 4, 5]) },
      { type: EXT_FEATURE_TABLE, data: name },
    ];
    const cluster0 = new Uint8Array(65536);
    cluster0.set(encodeExtensions(records), 112);
    const parsed = parseExtensions(cluster0, { ...sampleHeader(), headerLength: 112 });
    expect(parsed.backingFormat).toBe('raw');
    expect(parsed.featureNames).toEqual([{ type: 0, bit: 3, name: 'compression type' }]);
    expect(parsed.unknown).toEqual([{ type: 0x12345678, data: new Uint8Array([1, 2, 3, 4, 5]) }]);
    expect(parsed.all.map((r) => r.type)).toEqual(records.map((r) => r.type));
  });

  it('refuses a record longer than the extension area', () => {
    const cluster0 = new Uint8Array(512);
    ExtensionHeader.encodeInto(cluster0, { type: 0x1, length: 1000 }, 112);
    expect(() => parseExtensions(cluster0, { ...sampleHeader(), clusterBits: 9 })).toThrow(/too large/);
  });
});

describe('qcow2 entries', () => {
  const table = (...entries: bigint[]) => {
    const view = new DataView(new ArrayBuffer(entries.length * 8));
    entries.forEach((e, i) => view.setBigUint64(i * 8, e));
    return view;
  };
  it('classifies standard L2 entries', () => {
    const l2 = table(0n, 1n, 0x50000n | 1n, 0x50000n | (1n << 63n), 1n << 62n);
    expect([0, 1, 2, 3, 4].map((i) => clusterType(l2, i, false, false))).toEqual([
      'unallocated', 'zero-plain', 'zero-alloc', 'normal', 'compressed',
    ]);
    expect(clusterType(table(1n << 63n), 0, false, true)).toBe('normal');
  });
  it('reads L1 offsets and refuses offsets past 2^53', () => {
    expect(l1EntryL2Offset(table((1n << 63n) | 0x30000n), 0)).toBe(0x30000);
    expect(() => l1EntryL2Offset(table(0x00f0000000000000n), 0)).toThrow(/2\^53/);
  });
  it('classifies subclusters of extended entries', () => {
    const view = new DataView(new ArrayBuffer(16));
    view.setBigUint64(0, 0x70000n);
    view.setBigUint64(8, (0b10n << 32n) | 0b01n);
    expect([0, 1, 2].map((s) => subclusterType(view, 0, s, false))).toEqual(['normal', 'zero-alloc', 'unallocated-alloc']);
  });
  it('round-trips compressed descriptors', () => {
    fc.assert(
      fc.property(fc.integer({ min: 9, max: 21 }), fc.integer({ min: 0, max: 2 ** 40 }), fc.integer({ min: 1, max: 512 }), (bits, offset, len) => {
        const length = Math.min(len, 2 ** bits);
        const view = table(encodeCompressedDescriptor(offset, length, bits));
        const d = compressedDescriptor(view, 0, bits, false);
        expect(d.hostOffset).toBe(offset);
        expect(d.length).toBeGreaterThanOrEqual(length);
        expect(d.length - length).toBeLessThan(512);
      }),
    );
  });
});

function sampleHeader(): Qcow2Header {
  return {
    version: 3,
    backingFileOffset: 0,
    backingFileSize: 0,
    clusterBits: 16,
    size: 1 << 20,
    cryptMethod: 0,
    l1Size: 1,
    l1TableOffset: 3 * 65536,
    refcountTableOffset: 65536,
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
}
