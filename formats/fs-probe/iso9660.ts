/** ISO 9660: the volume descriptor set from sector 16, and its Joliet supplement. */

import { asciiAt, paddedLabel } from './text.js';
import { le, type FilesystemInfo } from './types.js';

const ISO_DESCRIPTORS = 32768;
const ISO_SECTOR = 2048;
/** Volume descriptors looked at (blkid's ISO_VD_MAX). */
const ISO_MAX_DESCRIPTORS = 16;
const ISO_PRIMARY = 1;
const ISO_SUPPLEMENTARY = 2;
const ISO_SET_END = 255;
/** The escape sequences of a Joliet supplementary descriptor (UCS-2 levels 1-3). */
const JOLIET_ESCAPES = ['%/@', '%/C', '%/E'];

/** The primary and Joliet descriptors among the first of the set, as blkid looks for them. */
function isoDescriptors(head: Uint8Array): { primary?: Uint8Array; joliet?: Uint8Array } {
  const found: { primary?: Uint8Array; joliet?: Uint8Array } = {};
  for (let index = 0; index < ISO_MAX_DESCRIPTORS; index++) {
    const at = ISO_DESCRIPTORS + index * ISO_SECTOR;
    if (at + ISO_SECTOR > head.length || head[at] === ISO_SET_END) break;
    const descriptor = head.subarray(at, at + ISO_SECTOR);
    if (head[at] === ISO_PRIMARY) found.primary ??= descriptor;
    if (head[at] === ISO_SUPPLEMENTARY && JOLIET_ESCAPES.includes(asciiAt(descriptor, 88, 3))) found.joliet ??= descriptor;
  }
  return found;
}

/**
 * ISO 9660: "CD001" at 32769; the primary descriptor gives the size, the label
 * (or a Joliet descriptor does, as blkid reads it) and the UUID, from the
 * modification date.
 */
export function probeIso9660(head: Uint8Array): FilesystemInfo | undefined {
  if (head.length < ISO_DESCRIPTORS + ISO_SECTOR || asciiAt(head, ISO_DESCRIPTORS + 1, 5) !== 'CD001') return undefined;
  const { primary, joliet } = isoDescriptors(head);
  if (!primary) return undefined;
  const view = le(primary);
  const info: FilesystemInfo = { type: 'iso9660', size: view.getUint32(80, true) * view.getUint16(128, true) };
  const ascii = primary.subarray(40, 72);
  const label = joliet ? utf16beText(mergedJoliet(joliet.subarray(40, 72), ascii) ?? joliet.subarray(40, 72)) : paddedLabel(ascii);
  if (label !== undefined) info.label = label;
  const uuid = isoDateUuid(primary.subarray(830, 846)) ?? isoDateUuid(primary.subarray(813, 829));
  if (uuid !== undefined) info.uuid = uuid;
  return info;
}

/**
 * blkid's reconstruction of a label from Joliet's (UTF-16BE, 16 characters)
 * and the primary one (ASCII, 32, '_' for what ASCII cannot hold): where the
 * two agree, Joliet's characters (or ASCII's where Joliet has '_'), then the
 * rest of the ASCII one. Undefined where they disagree (Joliet's alone is used).
 */
function mergedJoliet(utf16: Uint8Array, ascii: Uint8Array): Uint8Array | undefined {
  const out: number[] = [];
  let u = 0;
  let a = 0;
  for (; u + 1 < utf16.length && a < ascii.length; u += 2, a++) {
    const high = utf16[u]!;
    if (high >= 0xd8 && high <= 0xdb && u + 3 < utf16.length && utf16[u + 2]! >= 0xdc && utf16[u + 2]! <= 0xdf) {
      out.push(utf16[u]!, utf16[u + 1]!);
      u += 2;
    }
    const [hi, lo, char] = [utf16[u]!, utf16[u + 1]!, ascii[a]!];
    if (char === 0x5f) out.push(hi, lo);
    else if (hi === 0 && lo === 0x5f) out.push(0, char);
    else if (hi === 0 && asciiUpper(char) === asciiUpper(lo)) out.push(0, isAsciiUpper(char) ? lo : char);
    else return undefined;
  }
  for (; a < ascii.length; a++) out.push(0, ascii[a]!);
  return Uint8Array.from(out);
}

function isAsciiUpper(byte: number): boolean {
  return byte >= 0x41 && byte <= 0x5a;
}

function asciiUpper(byte: number): number {
  return byte >= 0x61 && byte <= 0x7a ? byte - 0x20 : byte;
}

/** UTF-16BE text up to its first NUL; undefined when empty. */
function utf16beText(bytes: Uint8Array): string | undefined {
  const units: number[] = [];
  for (let at = 0; at + 1 < bytes.length; at += 2) units.push((bytes[at]! << 8) | bytes[at + 1]!);
  const end = units.indexOf(0);
  const text = String.fromCharCode(...(end < 0 ? units : units.slice(0, end)));
  return text === '' ? undefined : text;
}

/** blkid's ISO UUID: the 16 date digits as YYYY-MM-DD-HH-MM-SS-CC; none when the date is unset. */
function isoDateUuid(digits: Uint8Array): string | undefined {
  const text = asciiAt(digits, 0, 16);
  if (!/^[0-9]{16}$/.test(text) || /^0+$/.test(text)) return undefined;
  return [text.slice(0, 4), text.slice(4, 6), text.slice(6, 8), text.slice(8, 10), text.slice(10, 12), text.slice(12, 14), text.slice(14, 16)].join('-');
}
