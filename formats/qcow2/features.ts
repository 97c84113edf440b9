/**
 * qcow2 feature bits (qcow2.rst, header bytes 72..95) and the check that
 * refuses incompatible features platter does not know.
 */

import { UnsupportedFeatureError } from '../../src/core/errors.js';
import type { Qcow2Header } from './header.js';

/** Incompatible feature bits (an implementation must refuse bits it does not know). */
export const INCOMPAT_DIRTY = 1n << 0n;
export const INCOMPAT_CORRUPT = 1n << 1n;
export const INCOMPAT_DATA_FILE = 1n << 2n;
export const INCOMPAT_COMPRESSION = 1n << 3n;
export const INCOMPAT_EXTENDED_L2 = 1n << 4n;
/** Every incompatible bit platter understands. */
export const INCOMPAT_KNOWN =
  INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTENDED_L2;

/** Compatible feature bits (safe to ignore). */
export const COMPAT_LAZY_REFCOUNTS = 1n << 0n;

/** Autoclear feature bits (a writer that does not know one clears it). */
export const AUTOCLEAR_BITMAPS = 1n << 0n;
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n;
/** Every autoclear bit platter understands. */
export const AUTOCLEAR_KNOWN = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW;

/** A named feature bit from the feature-name table extension. */
export interface FeatureName {
  /** 0 incompatible, 1 compatible, 2 autoclear. */
  type: number;
  bit: number;
  name: string;
}

/** Refuses unknown incompatible bits, naming them from the feature table when it has them. */
export function checkIncompatibleFeatures(header: Qcow2Header, featureNames: readonly FeatureName[] = []): void {
  const unknown = header.incompatibleFeatures & ~INCOMPAT_KNOWN;
  if (unknown === 0n) return;
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if ((unknown & (1n << BigInt(bit))) === 0n) continue;
    const named = featureNames.find((f) => f.type === 0 && f.bit === bit);
    names.push(named ? named.name : `unknown incompatible feature bit ${bit}`);
  }
  throw new UnsupportedFeatureError(`unsupported qcow2 feature(s): ${names.join(', ')}`, {
    incompatibleFeatures: `0x${unknown.toString(16)}`,
  });
}
