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
  { name: 'partitions', describe: 'List or write the partition table (MBR or GPT) of an image', load: () => import('./commands/partitions.js') },
  {
    name: 'mount-offset',
    describe: 'Show the byte offset and size limit of partitions and LVM volumes, for mount -o loop',
    load: () => import('./commands/mount-offset.js'),
  },
  {
    name: 'serve',
    describe: 'Export an image or one of its partitions over NBD',
    load: () => import('./commands/serve.js'),
  },
];
