/** The command table. Each command's code is loaded only when that command runs. */

import type { CliCommand } from './command.js';

/** A command known by name and description before its code is loaded. */
export interface CommandEntry {
  name: string;
  describe: string;
  load(): Promise<{ default: CliCommand }>;
}

export const COMMANDS: CommandEntry[] = [
  { name: 'amend', describe: "Change an image's format options in place", load: () => import('./commands/amend.js') },
  { name: 'check', describe: 'Check an image for consistency, and optionally repair it', load: () => import('./commands/check.js') },
  { name: 'create', describe: 'Create a new, empty image', load: () => import('./commands/create.js') },
  { name: 'measure', describe: 'Show how large a new image would be', load: () => import('./commands/measure.js') },
  { name: 'resize', describe: "Change an image's virtual size", load: () => import('./commands/resize.js') },
  { name: 'info', describe: "Show an image's format, sizes and backing file", load: () => import('./commands/info.js') },
];
