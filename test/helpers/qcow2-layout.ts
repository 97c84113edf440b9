/** Random qcow2 layouts for model tests: the create options and sizes a scenario runs on. */

import fc from 'fast-check';

/** One image layout, with v3-only options off on v2 images as qemu requires. */
export interface Qcow2Layout {
  clusterBits: number;
  compat: '0.10' | '1.1';
  refcountBits: number;
  extendedL2: boolean;
  lazy: boolean;
  size: number;
  /** A backing file's size, or none. */
  backingSize: number | undefined;
}

/** Bounds for the layouts drawn. */
export interface LayoutBounds {
  /** Smallest refcount_order (0 = 1-bit refcounts). */
  minRefcountOrder: number;
  maxSectors: number;
  maxBackingSectors: number;
}

/** Layouts over cluster sizes 512 B..64 KiB, both versions, every refcount width allowed. */
export function qcow2Layout(bounds: LayoutBounds): fc.Arbitrary<Qcow2Layout> {
  return fc
    .record({
      clusterBits: fc.integer({ min: 9, max: 16 }),
      compat: fc.constantFrom('0.10' as const, '1.1' as const),
      refcountOrder: fc.integer({ min: bounds.minRefcountOrder, max: 6 }),
      extendedL2: fc.boolean(),
      lazy: fc.boolean(),
      sectors: fc.integer({ min: 1, max: bounds.maxSectors }),
      backingSectors: fc.option(fc.integer({ min: 1, max: bounds.maxBackingSectors }), { nil: undefined }),
    })
    .map((r) => {
      const v3 = r.compat === '1.1';
      return {
        clusterBits: r.clusterBits,
        compat: r.compat,
        refcountBits: v3 ? 2 ** r.refcountOrder : 16,
        // Extended L2 needs v3 and clusters of at least 16 KiB.
        extendedL2: v3 && r.extendedL2 && r.clusterBits >= 14,
        lazy: v3 && r.lazy,
        size: r.sectors * 512,
        backingSize: r.backingSectors === undefined ? undefined : r.backingSectors * 512,
      };
    });
}
