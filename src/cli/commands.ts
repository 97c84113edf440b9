/** The command table. Each command's code is loaded only when that command runs. */

import type { CliCommand } from './command.js';

/** A command known by name and description before its code is loaded. */
export interface CommandEntry {
  name: string;
  describe: string;
  load(): Promise<{ default: CliCommand }>;
}

export const COMMANDS: CommandEntry[] = [
  { name: 'info', describe: "Show an image's format, sizes and backing file", load: () => import('./commands/info.js') },
  {
    name: 'serve',
    describe: 'Export an image or one of its partitions over NBD',
    load: () => import('./commands/serve.js'),
  },
];
