/** Column tables and sizes as util-linux prints them (sfdisk -l). */

/** One column: its header and alignment. */
export interface Column {
  header: string;
  right?: boolean;
}

/** Lays out rows under headers, one space apart, the last column unpadded. */
export function renderColumns(columns: Column[], rows: string[][]): string[] {
  const widths = columns.map((column, index) => Math.max(column.header.length, ...rows.map((row) => (row[index] ?? '').length)));
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
 * or with `long` a space, three-letter units and up to two decimals (`97.66 MiB`).
 */
export function humanSize(bytes: number, long = false): string {
  const letters = ['B', 'K', 'M', 'G', 'T', 'P', 'E'];
  let exp = 0;
  while (exp < 60 && bytes >= 2 ** (exp + 10)) exp += 10;
  const unit = letters[exp / 10]!;
  const suffix = long ? (exp === 0 ? ' B' : ` ${unit}iB`) : unit;
  let whole = Math.floor(bytes / 2 ** exp);
  const remainder = exp === 0 ? 0 : bytes - whole * 2 ** exp;
  let fraction = 0;
  let digits = 1;
  if (remainder > 0) {
    const thousandths = Math.floor(remainder / 2 ** (exp - 10));
    if (long) {
      fraction = Math.floor((thousandths + 5) / 10);
      digits = 2;
      if (fraction === 100) {
        whole++;
        fraction = 0;
      } else if (fraction % 10 === 0) {
        fraction /= 10;
        digits = 1;
      }
    } else {
      fraction = Math.floor((thousandths + 50) / 100);
      if (fraction === 10) {
        whole++;
        fraction = 0;
      }
    }
  }
  return fraction === 0 ? `${whole}${suffix}` : `${whole}.${String(fraction).padStart(digits, '0')}${suffix}`;
}
