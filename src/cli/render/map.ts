/** qemu-img map's two outputs: its JSON text (streamed) and its human table. */

import { UnsupportedFeatureError } from '../../core/errors.js';
import type { MapEntry } from '../../ops/map.js';

/** One entry in qemu-img's JSON spelling (keys in its order, `offset` only when known). */
export function mapEntryJson(entry: MapEntry): string {
  const offset = entry.offset === undefined ? '' : `, "offset": ${entry.offset}`;
  return (
    `{ "start": ${entry.start}, "length": ${entry.length}, "depth": ${entry.depth},` +
    ` "present": ${entry.present}, "zero": ${entry.zero}, "data": ${entry.data}${offset}}`
  );
}

/** The human table's heading. */
export const MAP_HUMAN_HEADER = 'Offset          Length          Mapped to       File\n';

/** C's `%#-16x`: hex with 0x (bare 0 for zero), left-justified in 16 columns. */
function hexColumn(value: number): string {
  return (value === 0 ? '0' : `0x${value.toString(16)}`).padEnd(16);
}

/**
 * One entry as a table line: only runs holding data are listed. A data run with
 * no host offset (compressed, encrypted, external) cannot be shown, as in qemu-img.
 */
export function mapEntryHuman(entry: MapEntry): string {
  if (!entry.data || entry.zero) return '';
  if (entry.offset === undefined) {
    throw new UnsupportedFeatureError('File contains external, encrypted or compressed clusters.');
  }
  return `${hexColumn(entry.start)}${hexColumn(entry.length)}${hexColumn(entry.offset)}${entry.filename ?? ''}\n`;
}
