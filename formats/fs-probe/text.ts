/** Helpers for the text blkid shows: UUIDs in its layouts, labels without padding. */

const latin1 = new TextDecoder('latin1');
const utf8 = new TextDecoder('utf-8');

/** Lower-case hex of `bytes`. */
export function hex(bytes: Uint8Array): string {
  return [...bytes].map((byte) => byte.toString(16).padStart(2, '0')).join('');
}

/** A 16-byte UUID as blkid prints it for ext*, XFS, Btrfs: 8-4-4-4-12 lower-case. */
export function uuidText(bytes: Uint8Array): string {
  const text = hex(bytes.subarray(0, 16));
  return `${text.slice(0, 8)}-${text.slice(8, 12)}-${text.slice(12, 16)}-${text.slice(16, 20)}-${text.slice(20)}`;
}

/** True when every byte is zero: blkid shows no UUID then. */
export function isZero(bytes: Uint8Array): boolean {
  return bytes.every((byte) => byte === 0);
}

/** A NUL-terminated UTF-8 label; undefined when empty. */
export function cLabel(bytes: Uint8Array): string | undefined {
  const end = bytes.indexOf(0);
  const text = utf8.decode(end < 0 ? bytes : bytes.subarray(0, end));
  return text === '' ? undefined : text;
}

/** A space-padded label (FAT, ISO 9660) with trailing spaces and NULs removed; undefined when empty. */
export function paddedLabel(bytes: Uint8Array): string | undefined {
  const text = latin1.decode(bytes).replace(/[\s\0]+$/, '');
  return text === '' ? undefined : text;
}

/** ASCII text of a byte range, for signature checks. */
export function asciiAt(bytes: Uint8Array, offset: number, length: number): string {
  if (offset < 0 || length > bytes.length - offset) return '';
  return latin1.decode(bytes.subarray(offset, offset + length));
}
