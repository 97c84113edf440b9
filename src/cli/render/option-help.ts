/** `-o help`: the options a new image takes, laid out as qemu-img lists them. */

import type { CreateOption } from '../../ops/create.js';

/** Width of the `name=<value>` column (longer ones run on, one space before the dash). */
const NAME_COLUMN = 22;

/** The list under qemu-img's heading: `create` and `convert` say "Supported qcow2 options:", `amend` "Amend options for 'qcow2':". */
export function renderOptionHelp(format: string, options: readonly CreateOption[], command: 'create' | 'amend' = 'create'): string {
  const lines = options.map(({ name, value, help }) => `  ${`${name}=<${value}>`.padEnd(NAME_COLUMN)} - ${help}`);
  const heading = command === 'amend' ? `Amend options for '${format}':` : `Supported ${format} options:`;
  return [heading, ...lines, ''].join('\n');
}
