/** Column tables and sizes as util-linux prints them (sfdisk -l). */

/** One column: its header and alignment. */
export interface Column {
  header: string;
  right?: boolean;
  /** libsmartcols' absolute width hint (fdisk gives Device 10, numbers 5). */
  minWidth?: number;
}

/**
 * libsmartcols' rule: the widest cell, at least the header; the width hint only
 * widens a column whose cells are already as wide as its header.
 */
function columnWidth(column: Column, cells: string[]): number {
  const widest = Math.max(0, ...cells.map((cell) => cell.length));
  if (widest < column.header.length) return column.header.length;
  const hint = column.minWidth ?? 0;
  return widest < hint && column.header.length < hint ? hint : widest;
}

/** Lays out rows under headers, one space apart, the last column unpadded. */
export function renderColumns(columns: Column[], rows: string[][]): string[] {
  const widths = columns.map((column, index) => columnWidth(column, rows.map((row) => row[index] ?? '')));
  const line = (cells: string[]) =>
    cells
      .map((cell, index) => {
        const width = widths[index]!;
        if (columns[index]!.right) return cell.padStart(width);
        return index === cells.length - 1 ? cell : cell.padEnd(width);
      })
      .join(' ')
      .trimEnd();
  return [line(columns.map((column) => column.header)), ...rows.map(line)];
}

/**
 * util-linux's size_to_human_string: binary units with one decimal (`88.1M`),
 * or with `long` a space, three-letter units and up to two decimals (`195.31 MiB`).
 * The fraction is taken in thousandths, rounded half up, and a trailing zero dropped.
 */
export function humanSize(bytes: number, long = false): string {
  const letters = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
  let exp = 0;
  while (exp < 60 && bytes >= 2 ** (exp + 10)) exp += 10;
  const unit = letters[exp / 10]!;
  const suffix = long ? (exp === 0 ? ' B' : ` ${unit}iB`) : unit;
  let whole = Math.floor(bytes / 2 ** exp);
  const remainder = BigInt(bytes) - BigInt(whole) * 2n ** BigInt(exp);
  let fraction = 0;
  if (remainder > 0n) {
    const thousandths = Number((remainder * 1000n) / 2n ** BigInt(exp));
    fraction = long ? Math.floor((thousandths + 5) / 10) : Math.floor((thousandths + 50) / 100) * 10;
    if (fraction === 100) {
      whole++;
      fraction = 0;
    }
  }
  if (fraction === 0) return `${whole}${suffix}`;
  const digits = String(fraction).padStart(2, '0');
  return `${whole}.${digits.endsWith('0') ? digits.slice(0, 1) : digits}${suffix}`;
}
