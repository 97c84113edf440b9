/** The command table. Each command's code is loaded only when that command runs. */

import type { CliCommand } from './command.js';

/** A command known by name and description before its code is loaded. */
export interface CommandEntry {
  name: string;
  describe: string;
  load(): Promise<{ default: CliCommand }>;
  /** Copies data in many short requests: V8 optimises patiently (see jit.ts). */
  copiesData?: true;
}

export const COMMANDS: CommandEntry[] = [
  { name: 'amend', describe: "Change an image's format options in place", load: () => import('./commands/amend.js') },
  {
    name: 'bitmap',
    describe: 'Add, remove, clear, enable, disable or merge persistent dirty bitmaps of a qcow2 image',
    load: () => import('./commands/bitmap.js'),
  },
  { name: 'check', describe: 'Check an image for consistency, and optionally repair it', load: () => import('./commands/check.js') },
  { name: 'create', describe: 'Create a new, empty image', load: () => import('./commands/create.js') },
  { name: 'measure', describe: 'Show how large a new image would be', load: () => import('./commands/measure.js') },
  { name: 'resize', describe: "Change an image's virtual size", load: () => import('./commands/resize.js') },
  {
    name: 'snapshot',
    describe: 'List, create, apply or delete internal snapshots of a qcow2 image',
    load: () => import('./commands/snapshot.js'),
  },
  { name: 'info', describe: "Show an image's format, sizes and backing file", load: () => import('./commands/info.js') },
  { name: 'rebase', describe: 'Change the backing file of an image', load: () => import('./commands/rebase.js'), copiesData: true },
  { name: 'commit', describe: 'Write the data of an image into its backing file', load: () => import('./commands/commit.js'), copiesData: true },
  { name: 'convert', describe: 'Convert an image to raw or qcow2, sparsely', load: () => import('./commands/convert.js'), copiesData: true },
  { name: 'map', describe: "Show an image's allocation map, like qemu-img map", load: () => import('./commands/map.js') },
  { name: 'compare', describe: 'Compare the guest contents of two images', load: () => import('./commands/compare.js'), copiesData: true },
  { name: 'dd', describe: 'Copy a range of an image, like qemu-img dd', load: () => import('./commands/dd.js'), copiesData: true },
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

/** The command `argv` names (its first word that is not an option), if it is one. */
export function invokedEntry(argv: readonly string[]): CommandEntry | undefined {
  const name = argv.find((arg) => !arg.startsWith('-'));
  return COMMANDS.find((entry) => entry.name === name);
}
