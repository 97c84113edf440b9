/**
 * JSON laid out as util-linux tools print it (libsmartcols: sfdisk --json,
 * lsblk --json): three spaces a level, and the objects of a list joined as
 * `},{`, so platter's document reads line for line like sfdisk's.
 */

const STEP = 3;

/** `value` in libsmartcols' layout, `indent` spaces in. */
export function smartcolsJson(value: unknown, indent = 0): string {
  const inner = ' '.repeat(indent + STEP);
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return `[\n${inner}${value.map((item) => smartcolsJson(item, indent + STEP)).join(',')}\n${' '.repeat(indent)}]`;
  }
  if (typeof value === 'object' && value !== null) {
    const members = Object.entries(value).filter(([, item]) => item !== undefined);
    if (members.length === 0) return '{}';
    return `{\n${members.map(([key, item]) => `${inner}${JSON.stringify(key)}: ${smartcolsJson(item, indent + STEP)}`).join(',\n')}\n${' '.repeat(indent)}}`;
  }
  return JSON.stringify(value);
}
