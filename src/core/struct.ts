/**
 * A tiny struct codec: each on-disk struct is declared once, in spec order with
 * byte offsets, and the same declaration decodes and encodes it.
 *
 *   const Entry = defineStruct('MBR entry', 16, {
 *     status: [0, u8], type: [4, u8], lbaStart: [8, u32le], sectors: [12, u32le],
 *   });
 */

import { OutOfRangeError } from './errors.js';

/** One field type, used for both directions. */
export interface FieldType<T> {
  readonly size: number;
  get(view: DataView, at: number): T;
  put(view: DataView, at: number, value: T): void;
}

export const u8: FieldType<number> = {
  size: 1,
  get: (v, at) => v.getUint8(at),
  put: (v, at, x) => v.setUint8(at, x),
};
export const u16be: FieldType<number> = {
  size: 2,
  get: (v, at) => v.getUint16(at, false),
  put: (v, at, x) => v.setUint16(at, x, false),
};
export const u16le: FieldType<number> = {
  size: 2,
  get: (v, at) => v.getUint16(at, true),
  put: (v, at, x) => v.setUint16(at, x, true),
};
export const u32be: FieldType<number> = {
  size: 4,
  get: (v, at) => v.getUint32(at, false),
  put: (v, at, x) => v.setUint32(at, x >>> 0, false),
};
export const u32le: FieldType<number> = {
  size: 4,
  get: (v, at) => v.getUint32(at, true),
  put: (v, at, x) => v.setUint32(at, x >>> 0, true),
};
/** u64 decode to bigint: convert to a number once, through `u64ToNumber`. */
export const u64be: FieldType<bigint> = {
  size: 8,
  get: (v, at) => v.getBigUint64(at, false),
  put: (v, at, x) => v.setBigUint64(at, BigInt.asUintN(64, x), false),
};
export const u64le: FieldType<bigint> = {
  size: 8,
  get: (v, at) => v.getBigUint64(at, true),
  put: (v, at, x) => v.setBigUint64(at, BigInt.asUintN(64, x), true),
};

/** Raw bytes, copied out on decode; shorter input is zero-padded on encode. */
export function bytes(size: number): FieldType<Uint8Array> {
  return {
    size,
    get: (v, at) => new Uint8Array(v.buffer.slice(v.byteOffset + at, v.byteOffset + at + size)),
    put: (v, at, x) => {
      const target = new Uint8Array(v.buffer, v.byteOffset + at, size);
      target.fill(0);
      target.set(x.subarray(0, size));
    },
  };
}

const latin1 = new TextDecoder('latin1');

/** A fixed-width ASCII/Latin-1 string; decode keeps trailing NULs, `trimNul` removes them. */
export function ascii(size: number): FieldType<string> {
  return {
    size,
    get: (v, at) => latin1.decode(new Uint8Array(v.buffer, v.byteOffset + at, size)),
    put: (v, at, x) => {
      for (let i = 0; i < size; i++) v.setUint8(at + i, i < x.length ? x.charCodeAt(i) & 0xff : 0);
    },
  };
}

/** A fixed-width UTF-16LE string of `units` code units, NUL-padded (GPT partition names). */
export function utf16le(units: number): FieldType<string> {
  return {
    size: units * 2,
    get: (v, at) => {
      let text = '';
      for (let i = 0; i < units; i++) {
        const unit = v.getUint16(at + i * 2, true);
        if (unit === 0) break;
        text += String.fromCharCode(unit);
      }
      return text;
    },
    put: (v, at, x) => {
      for (let i = 0; i < units; i++) v.setUint16(at + i * 2, i < x.length ? x.charCodeAt(i) : 0, true);
    },
  };
}

/**
 * A GUID in the mixed-endian layout used by GPT and UEFI: the first three fields
 * little-endian, the last eight bytes as stored. Text is upper-case with dashes.
 */
export const guid: FieldType<string> = {
  size: 16,
  get: (v, at) => {
    const hex = (n: number, width: number) => n.toString(16).padStart(width, '0');
    const tail: string[] = [];
    for (let i = 8; i < 16; i++) tail.push(hex(v.getUint8(at + i), 2));
    return [
      hex(v.getUint32(at, true), 8),
      hex(v.getUint16(at + 4, true), 4),
      hex(v.getUint16(at + 6, true), 4),
      tail.slice(0, 2).join(''),
      tail.slice(2).join(''),
    ]
      .join('-')
      .toUpperCase();
  },
  put: (v, at, x) => {
    const clean = x.replace(/-/g, '');
    if (!/^[0-9a-fA-F]{32}$/.test(clean)) throw new OutOfRangeError(`not a GUID: ${x}`);
    v.setUint32(at, parseInt(clean.slice(0, 8), 16), true);
    v.setUint16(at + 4, parseInt(clean.slice(8, 12), 16), true);
    v.setUint16(at + 6, parseInt(clean.slice(12, 16), 16), true);
    for (let i = 0; i < 8; i++) v.setUint8(at + 8 + i, parseInt(clean.slice(16 + i * 2, 18 + i * 2), 16));
  },
};

/** Removes trailing NUL characters from a fixed-width string field. */
export function trimNul(text: string): string {
  const end = text.indexOf('\0');
  return end < 0 ? text : text.slice(0, end);
}

type FieldSpec = readonly [offset: number, type: FieldType<unknown>];
type FieldValue<S> = S extends readonly [number, FieldType<infer T>] ? T : never;

/** The decoded form of a struct: one property per declared field. */
export type Decoded<F extends Record<string, FieldSpec>> = { [K in keyof F]: FieldValue<F[K]> };

/** A declared struct: its size and both directions. */
export interface Struct<F extends Record<string, FieldSpec>> {
  readonly name: string;
  readonly size: number;
  readonly fields: F;
  /** Decodes from `source` at byte `at`; throws OutOfRangeError when the struct does not fit. */
  decode(source: Uint8Array, at?: number): Decoded<F>;
  /** Encodes into `target` at byte `at`, leaving bytes no field covers untouched. */
  encodeInto(target: Uint8Array, value: Decoded<F>, at?: number): void;
  /** Encodes into a new zero-filled array of exactly `size` bytes. */
  encode(value: Decoded<F>): Uint8Array;
}

/**
 * Declares a struct of `size` bytes. Fields are checked at definition time to lie
 * inside the struct and not overlap, so a typo in an offset fails at import.
 */
export function defineStruct<F extends Record<string, FieldSpec>>(name: string, size: number, fields: F): Struct<F> {
  const entries = Object.entries(fields) as [keyof F & string, FieldSpec][];
  const sorted = [...entries].sort((a, b) => a[1][0] - b[1][0]);
  let end = 0;
  for (const [field, [offset, type]] of sorted) {
    if (offset < end) throw new Error(`${name}.${field} overlaps the field before it`);
    end = offset + type.size;
    if (end > size) throw new Error(`${name}.${field} ends past the struct's ${size} bytes`);
  }
  const fit = (source: Uint8Array, at: number) => {
    if (at < 0 || at > source.length || size > source.length - at) {
      throw new OutOfRangeError(`${name} (${size} bytes) does not fit at offset ${at} of ${source.length} bytes`);
    }
  };
  return {
    name,
    size,
    fields,
    decode(source, at = 0) {
      fit(source, at);
      const view = new DataView(source.buffer, source.byteOffset + at, size);
      const out: Record<string, unknown> = {};
      for (const [field, [offset, type]] of entries) out[field] = type.get(view, offset);
      return out as Decoded<F>;
    },
    encodeInto(target, value, at = 0) {
      fit(target, at);
      const view = new DataView(target.buffer, target.byteOffset + at, size);
      for (const [field, [offset, type]] of entries) type.put(view, offset, value[field]);
    },
    encode(value) {
      const out = new Uint8Array(size);
      this.encodeInto(out, value);
      return out;
    },
  };
}
