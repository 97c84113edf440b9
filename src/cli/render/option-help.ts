/** `-o help`: the options a new image takes, laid out as qemu-img lists them. */

import type { CreateOption } from '../../ops/create.js';

/** Width of the `name=<value>` column (longer ones run on, one space before the dash). */
const NAME_COLUMN = 22;

export function renderOptionHelp(format: string, options: readonly CreateOption[]): string {
  const lines = options.map(({ name, value, help }) => `  ${`${name}=<${value}>`.padEnd(NAME_COLUMN)} - ${help}`);
  return [`Supported ${format} options:`, ...lines, ''].join('\n');
}
